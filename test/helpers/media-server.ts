import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/**
 * A local HTTP media server for cache tests. Each file can be given a queue of faults, one
 * per request (then it serves normally), or a fault for every request. It records every
 * request (path, Range header, status, bytes sent) and the most requests it ever ran at once.
 */

export type Fault =
  /** Sends `after` bytes of the answer, then drops the connection. */
  | { kind: 'drop'; after: number }
  /** Answers with this status and no body. */
  | { kind: 'status'; status: number }
  /** Serves the bytes with one flipped (the checksum will not match). */
  | { kind: 'corrupt' }
  /** Sends `after` bytes, then nothing more while keeping the connection open. */
  | { kind: 'stall'; after: number }
  /** Sends `chunk` bytes every `everyMs`. */
  | { kind: 'slow'; chunk: number; everyMs: number }
  /** Ignores Range and sends the whole file with 200. */
  | { kind: 'noRange' };

export interface ServedFile {
  readonly data: Buffer;
  readonly sha256: string;
  readonly size: number;
  faults: Fault[];
  always?: Fault;
}

export interface RequestRecord {
  readonly method: string;
  readonly path: string;
  readonly range: string | undefined;
  status: number;
  bytesSent: number;
}

export interface MediaServer {
  readonly url: (path: string) => string;
  readonly add: (path: string, data: Buffer, faults?: Fault[], always?: Fault) => ServedFile;
  readonly requests: RequestRecord[];
  readonly maxConcurrent: () => number;
  /** The server goes away: listening stops and open connections are cut. */
  readonly close: () => Promise<void>;
}

export function randomMedia(size: number): { data: Buffer; sha256: string } {
  const data = randomBytes(size);
  return { data, sha256: createHash('sha256').update(data).digest('hex') };
}

export async function mediaServerStart(): Promise<MediaServer> {
  const files = new Map<string, ServedFile>();
  const requests: RequestRecord[] = [];
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let active = 0;
  let maxActive = 0;

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const record: RequestRecord = {
      method: req.method ?? 'GET',
      path,
      range: req.headers.range,
      status: 0,
      bytesSent: 0,
    };
    requests.push(record);
    active++;
    maxActive = Math.max(maxActive, active);
    res.on('close', () => active--);
    const file = files.get(path);
    if (!file) {
      record.status = 404;
      res.writeHead(404).end('not found');
      return;
    }
    // A HEAD (the firmware downloader asks each size first) sends no body: it takes no fault.
    const fault = req.method === 'HEAD' ? undefined : (file.faults.shift() ?? file.always);
    if (fault?.kind === 'status') {
      record.status = fault.status;
      res.writeHead(fault.status).end();
      return;
    }
    let body = file.data;
    if (fault?.kind === 'corrupt') {
      body = Buffer.from(file.data);
      body[body.length >> 1] = (body[body.length >> 1] ?? 0) ^ 0xff;
    }
    let start = 0;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range && fault?.kind !== 'noRange') {
      start = Number(range[1]);
      if (start >= body.length) {
        record.status = 416;
        res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
        return;
      }
      record.status = 206;
      res.writeHead(206, {
        'content-length': body.length - start,
        'content-range': `bytes ${start}-${body.length - 1}/${body.length}`,
        'accept-ranges': 'bytes',
      });
    } else {
      record.status = 200;
      res.writeHead(200, { 'content-length': body.length, 'accept-ranges': 'bytes' });
    }
    const rest = body.subarray(start);
    if (fault?.kind === 'drop' || fault?.kind === 'stall') {
      const part = rest.subarray(0, fault.after);
      res.write(part, () => {
        record.bytesSent += part.length;
        if (fault.kind === 'drop') {
          // Let the bytes reach the client before the connection is cut.
          const t = setTimeout(() => req.socket.destroy(), 50);
          timers.add(t);
        }
      });
      return;
    }
    if (fault?.kind === 'slow') {
      let at = 0;
      const tick = (): void => {
        if (res.destroyed) return;
        const part = rest.subarray(at, at + fault.chunk);
        at += part.length;
        record.bytesSent += part.length;
        if (at >= rest.length) {
          res.end(part);
          return;
        }
        res.write(part);
        const t = setTimeout(tick, fault.everyMs);
        timers.add(t);
      };
      tick();
      return;
    }
    record.bytesSent += rest.length;
    res.end(rest);
  };

  const server: Server = createServer(handle);
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: (path) => `http://127.0.0.1:${port}${path}`,
    add(path, data, faults = [], always) {
      const file: ServedFile = {
        data,
        sha256: createHash('sha256').update(data).digest('hex'),
        size: data.length,
        faults,
        ...(always ? { always } : {}),
      };
      files.set(path, file);
      return file;
    },
    requests,
    maxConcurrent: () => maxActive,
    close: async () => {
      for (const t of timers) clearTimeout(t);
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
