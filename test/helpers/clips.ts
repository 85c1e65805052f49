import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

/** Makes `name` in `dir` with Debian's ffmpeg from the given input/codec arguments. */
export function clipMake(dir: string, name: string, args: string[]): string {
  const path = join(dir, name);
  execFileSync('ffmpeg', ['-v', 'error', '-y', ...args, path]);
  return path;
}

/**
 * A lossless H.264 clip of flat grey frames whose luma is `lum` of the frame number N (4 x N
 * by default; 30 frames at 30 fps), so a decoded frame tells which frame it is.
 */
export function counterClip(dir: string, name = 'counter.mp4', size = '64x64', lum = '4*N'): string {
  return clipMake(dir, name, [
    '-f',
    'lavfi',
    '-i',
    `color=c=black:size=${size}:rate=30:duration=1,geq=lum='${lum}':cb=128:cr=128`,
    '-c:v',
    'libx264',
    '-preset',
    'ultrafast',
    '-qp',
    '0',
    '-pix_fmt',
    'yuv420p',
  ]);
}

/** Mean of the first `pixels` bytes: the luma of a flat NV12 frame. */
export function lumaMean(data: Uint8Array, pixels: number): number {
  let sum = 0;
  for (let i = 0; i < pixels; i++) sum += data[i] ?? 0;
  return sum / pixels;
}

/**
 * An H.264 clip of FFmpeg's testsrc2 pattern: MPEG-TS (no seeking needed to open it: what an HLS
 * segment or a plain HTTP stream is) or MP4, which ffmpeg writes with its index (moov) after the
 * media data unless told +faststart.
 */
export function testsrcClip(
  dir: string,
  name: string,
  {
    size = '64x64',
    seconds = 1,
    gop,
    format,
  }: { size?: string; seconds?: number; gop?: number; format?: 'mpegts' } = {},
): string {
  return clipMake(dir, name, [
    '-f',
    'lavfi',
    '-i',
    `testsrc2=size=${size}:rate=30:duration=${seconds}`,
    '-c:v',
    'libx264',
    '-preset',
    'ultrafast',
    ...(gop === undefined ? [] : ['-g', String(gop)]),
    '-pix_fmt',
    'yuv420p',
    ...(format === undefined ? [] : ['-f', format]),
  ]);
}

/** An MPEG-TS clip of one second. */
export function tsClip(dir: string, name = 'clip.ts', size = '64x64'): string {
  return testsrcClip(dir, name, { size, format: 'mpegts' });
}

/** An HLS playlist of one segment, `segment` as written (a URL or a path). */
export function hlsPlaylist(segment: string): string {
  return `#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:1.0,\n${segment}\n#EXT-X-ENDLIST\n`;
}

export interface FilesServer {
  readonly url: (path: string) => string;
  /** Paths asked for, in order. */
  readonly requests: string[];
}

/** A plain HTTP server of fixed files on 127.0.0.1, closed when the test ends. */
export async function filesServe(
  t: { teardown: (f: () => void) => void },
  files: Record<string, Buffer | string>,
): Promise<FilesServer> {
  const requests: string[] = [];
  const server = createServer((request, response) => {
    const path = new URL(request.url ?? '/', 'http://x').pathname;
    requests.push(path);
    const body = files[path];
    if (body === undefined) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { 'content-length': Buffer.byteLength(body) }).end(body);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const { port } = server.address() as AddressInfo;
  return { url: (path) => `http://127.0.0.1:${port}${path}`, requests };
}
