import { execFileSync } from 'node:child_process';
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
