import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import type { DecodeManager as DecodeManagerType } from '../native/index.d.ts';
import { loadAddon } from '../src/native/addon.ts';
import { counterClip, testsrcClip, tsClip } from './helpers/clips.ts';
import { until } from './helpers/supervisor.ts';

// Network sources: what the decoder does with servers that cannot seek, stall, or give no
// picture. Every server here is a real node http server on 127.0.0.1.

const addon = loadAddon();
const dir = mkdtempSync(join(tmpdir(), 'multihead-decode-net-'));
// Retried: a decoder thread may still be saving a keyframe index beside a clip (ENOTEMPTY seen under load).
test.after.always(() => rmSync(dir, { recursive: true, force: true, maxRetries: 10 }));

/** FFmpeg's rw_timeout for network sources (native/src/decode/io.rs RW_TIMEOUT), in ms. */
const RW_TIMEOUT_MS = 5000;

// An MP4 as ffmpeg writes it without `-movflags +faststart`: the index (moov) after the data,
// and larger than FFmpeg's I/O buffer (about 200 KB), so going back to the data needs a seek.
const moovAtEnd = testsrcClip(dir, 'moov-at-end.mp4', { size: '320x240', seconds: 2 });
const ts = readFileSync(tsClip(dir, 'stream.ts'));
// 4 s: half of it is more than FFmpeg's probe wants, so the stall comes while decoding.
const longTs = readFileSync(testsrcClip(dir, 'long.ts', { seconds: 4, format: 'mpegts' }));
const counter = counterClip(dir);

function manager(t: { teardown: (f: () => void) => void }, options = {}): DecodeManagerType {
  const m = new addon.DecodeManager(options);
  t.teardown(() => m.close());
  return m;
}

interface Served {
  readonly url: string;
  /** Paths asked for, in order. */
  readonly requests: string[];
  readonly sockets: Set<Socket>;
}

/** A server of its own handler; every connection is destroyed when the test ends. */
async function serve(
  t: { teardown: (f: () => void) => void },
  handler: (request: IncomingMessage, response: ServerResponse) => void,
): Promise<Served> {
  const requests: Served['requests'] = [];
  const sockets = new Set<Socket>();
  const server = createServer((request, response) => {
    requests.push(request.url ?? '');
    handler(request, response);
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, requests, sockets };
}

/** The whole body with status 200 whatever Range asks: a server without Range support. */
const noRange =
  (body: Buffer) =>
  (_request: IncomingMessage, response: ServerResponse): void => {
    response.writeHead(200, { 'content-type': 'video/mp4', 'content-length': body.length }).end(body);
  };

/** Sends the headers and the first `bytes` of `body`, then nothing, never hanging up. */
const stallAfter =
  (body: Buffer, bytes: number) =>
  (_request: IncomingMessage, response: ServerResponse): void => {
    response.writeHead(200, { 'content-type': 'video/mp2t', 'content-length': body.length });
    response.write(body.subarray(0, bytes));
  };

test('a prerolled acquire resolves with its first frame decoded, not merely opened', async (t) => {
  const m = manager(t);
  const acquired = await m.acquireAsync('A', { source: counter, preroll: true });
  t.true(acquired.created);
  // At once, no waiting: the picture is there when the promise resolves.
  const frame = m.snapshot('A');
  t.truthy(frame, 'a frame is ready the moment the acquire resolves');
  t.is(frame?.sequence, 1);
  t.like(m.status().decoders[0], { prerolled: true, frames: 1 });
  // The same holds for the synchronous acquire.
  m.acquire('B', { source: counter, preroll: true, startSeconds: 0.5 });
  t.truthy(m.snapshot('B'));
});

test('an MP4 with its index at the end, from a server without Range: preroll is refused with the reason, nothing left running', async (t) => {
  const server = await serve(t, noRange(readFileSync(moovAtEnd)));
  const m = manager(t);
  const source = `${server.url}/moov-at-end.mp4`;
  const e = await t.throwsAsync(m.acquireAsync('A', { source, preroll: true, hw: 'software' }));
  t.regex(
    e?.message ?? '',
    /^ERR_DECODE_NO_PICTURE: http:\/\/127\.0\.0\.1:\d+\/moov-at-end\.mp4: no picture: .*read failed/,
  );
  t.deepEqual(m.status().decoders, [], 'the decoder was torn down and its entry is gone');
  // Without preroll it opens (that is all acquire promised then) and status names the failure.
  await m.acquireAsync('B', { source, hw: 'software' });
  const failed = await until(() => m.status().decoders.find((d) => d.failureCode), 'the failure in status', 10_000);
  t.is(failed.failureCode, 'ERR_DECODE_READ');
  t.regex(failed.failure ?? '', /moov-at-end\.mp4: read failed: /);
  t.is(failed.frames, 0);
  // Another output asking for the same source with preroll does not join the failed decoder.
  const joined = await t.throwsAsync(m.acquireAsync('C', { source, preroll: true, hw: 'software' }));
  t.regex(
    joined?.message ?? '',
    /^ERR_DECODE_NO_PICTURE: .*moov-at-end\.mp4: no picture: its running decoder stopped: /,
  );
  t.deepEqual(
    m.status().decoders.map((d) => d.consumers),
    [['B']],
  );
});

test('a source that cannot seek (HTTP without Range) loops by opening it again', async (t) => {
  const server = await serve(t, noRange(ts));
  const m = manager(t);
  // No preroll: a prerolled decoder holds its first frame until an output takes it.
  await m.acquireAsync('A', { source: `${server.url}/stream.ts`, hw: 'software' });
  const looped = await until(() => m.status().decoders.find((d) => d.loops >= 2), 'two loops of a 1 s stream', 10_000);
  t.falsy(looped.failure);
  t.falsy(looped.failureCode);
  t.true(server.requests.length >= 3, `opened again for each pass (${server.requests.length} requests)`);
  // The timeline runs on across reopens: frames keep coming at the stream's rate.
  t.true(looped.frames >= 50, `frames ${looped.frames}`);
});

test('a server that stalls mid-stream is given up within the I/O timeout, as ERR_DECODE_STALLED', async (t) => {
  const server = await serve(t, stallAfter(longTs, Math.floor(longTs.length / 2)));
  const m = manager(t);
  const opening = Date.now();
  let ticks = 0;
  const ticker = setInterval(() => ticks++, 20);
  t.teardown(() => clearInterval(ticker));
  await m.acquireAsync('A', { source: `${server.url}/stream.ts`, hw: 'software' });
  t.true(Date.now() - opening < 2000, 'opened without waiting on the stall');
  // About 60 frames arrived (2 s of 4); from about here on the thread waits for data.
  await until(() => (m.status().decoders[0]?.frames ?? 0) >= 50, 'the part that arrived to play', 5000);
  const starved = Date.now();
  const failed = await until(
    () => m.status().decoders.find((d) => d.failureCode),
    'the stall to be noticed',
    RW_TIMEOUT_MS + 8000,
  );
  const after = Date.now() - starved;
  t.is(failed.failureCode, 'ERR_DECODE_STALLED');
  t.regex(failed.failure ?? '', /stream\.ts: stalled: no data within 5 s/);
  t.true(after < RW_TIMEOUT_MS + 2000, `given up ${after} ms after the data ran out`);
  // The server never hangs up (stallAfter keeps the response open): the decoder gave up on
  // its own and closed the connection.
  await until(() => server.sockets.size === 0, 'the decoder to close its connection', 3000);
  t.true(ticks > 100, `JavaScript ran meanwhile (${ticks} ticks)`);
});

test('release does not wait for a decoder stuck reading a stalled server', async (t) => {
  const server = await serve(t, stallAfter(longTs, Math.floor(longTs.length / 2)));
  const m = manager(t);
  await m.acquireAsync('A', { source: `${server.url}/stream.ts`, hw: 'software' });
  // Wait until the part that arrived has played out: the thread now sits in a read.
  // Starved: no new frame for 200 ms (6 frame periods) means every byte that arrived was
  // decoded and the thread waits in a read.
  let last = { frames: -1, since: Date.now() };
  await until(
    () => {
      const frames = m.status().decoders[0]?.frames ?? 0;
      if (frames !== last.frames) last = { frames, since: Date.now() };
      return frames > 0 && Date.now() - last.since >= 200;
    },
    'the decoder to run out of data',
    6000,
  );
  t.falsy(m.status().decoders[0]?.failureCode, 'still waiting, not failed yet');
  const started = process.hrtime.bigint();
  m.release('A');
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  t.true(ms < 100, `release took ${ms.toFixed(1)} ms`);
  t.deepEqual(m.status().decoders, []);
  // The stopped decoder lets go of its connection without the server hanging up.
  await until(() => server.sockets.size === 0, 'the decoder to close its connection', 3000);
});

test('a source that opens but stalls before its first frame is refused by a prerolled acquire', async (t) => {
  // The first 2 KB: not even enough to probe.
  const server = await serve(t, stallAfter(ts, 2048));
  const m = manager(t);
  const started = Date.now();
  const e = await t.throwsAsync(
    m.acquireAsync('A', { source: `${server.url}/stream.ts`, hw: 'software', preroll: true }),
  );
  t.regex(e?.message ?? '', /^ERR_DECODE_(NO_PICTURE|OPEN): http:\/\/127\.0\.0\.1:\d+\/stream\.ts: /);
  // Within the I/O timeout, not the 20 s open deadline: rw_timeout ends the stalled probe.
  t.true(Date.now() - started < RW_TIMEOUT_MS + 4000, `answered in ${Date.now() - started} ms`);
  t.deepEqual(m.status().decoders, []);
});
