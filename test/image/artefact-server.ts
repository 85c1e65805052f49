// The update artefacts' web server for test/image --ota: what a fleet's plain HTTP server or CDN
// is to a box. Static files with Range (the box resumes cut downloads), a log of what was asked
// for, and a hold: a file stops flowing after some bytes until released, so that a power cut
// is sure to land in the middle of a download.
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export interface ArtefactRequest {
  readonly path: string;
  readonly range?: string;
  /** Bytes of the body sent so far (grows while the response streams). */
  sent: number;
}

export interface ArtefactServer {
  readonly port: number;
  readonly requests: ArtefactRequest[];
  /** Files whose name ends with `suffix` stop after `afterBytes` bytes of a response, until released. */
  hold(suffix: string, afterBytes: number): void;
  release(): void;
  close(): Promise<void>;
}

export async function artefactServerStart(root: string): Promise<ArtefactServer> {
  const requests: ArtefactRequest[] = [];
  let held: { suffix: string; afterBytes: number } | undefined;
  const waiting = new Set<() => void>();
  const server = http.createServer((req, res) => {
    const urlPath = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const record: ArtefactRequest = {
      path: urlPath,
      sent: 0,
      ...(req.headers.range ? { range: req.headers.range } : {}),
    };
    requests.push(record);
    const file = path.join(root, path.normalize(urlPath));
    if (!file.startsWith(`${root}${path.sep}`) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    const size = fs.statSync(file).size;
    let start = 0;
    let end = size - 1;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range) {
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
      if (start >= size) {
        res.writeHead(416, { 'content-range': `bytes */${size}` }).end();
        return;
      }
      res.writeHead(206, {
        'content-length': end - start + 1,
        'content-range': `bytes ${start}-${end}/${size}`,
        'accept-ranges': 'bytes',
      });
    } else {
      res.writeHead(200, { 'content-length': size, 'accept-ranges': 'bytes' });
    }
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    const stream = fs.createReadStream(file, { start, end, highWaterMark: 256 * 1024 });
    const hold = held && urlPath.endsWith(held.suffix) ? held : undefined;
    stream.on('data', (chunk) => {
      record.sent += chunk.length;
      if (!res.write(chunk)) stream.pause();
      if (hold && record.sent >= hold.afterBytes && held === hold) {
        stream.pause();
        const resume = (): void => {
          waiting.delete(resume);
          stream.resume();
        };
        waiting.add(resume);
      }
    });
    res.on('drain', () => {
      if (!(hold && held === hold && record.sent >= hold.afterBytes)) stream.resume();
    });
    stream.on('end', () => res.end());
    stream.on('error', () => res.destroy());
    res.on('close', () => stream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    hold(suffix, afterBytes) {
      held = { suffix, afterBytes };
    },
    release() {
      held = undefined;
      for (const resume of [...waiting]) resume();
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
