import { existsSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import type { DecodeManager as DecodeManagerType } from '../native/index.d.ts';
import { loadAddon } from '../src/native/addon.ts';
import { clipMake, counterClip, filesServe, hlsPlaylist, lumaMean, tsClip } from './helpers/clips.ts';
import { dialCounter } from './helpers/dial-counter.ts';

const addon = loadAddon();
const dir = mkdtempSync(join(tmpdir(), 'multihead-decode-'));
// Retried: a decoder thread may still be saving a keyframe index beside a clip (ENOTEMPTY seen under load).
test.after.always(() => rmSync(dir, { recursive: true, force: true, maxRetries: 10 }));

const clip = (name: string, args: string[]): string => clipMake(dir, name, args);
const counter = counterClip(dir);
const hevc = clip('hevc.mkv', [
  '-f',
  'lavfi',
  '-i',
  'testsrc2=size=128x72:rate=25:duration=1',
  '-c:v',
  'libx265',
  '-x265-params',
  'log-level=error',
  '-pix_fmt',
  'yuv420p',
]);
const audioOnly = clip('tone.m4a', ['-f', 'lavfi', '-i', 'sine=duration=0.5', '-c:a', 'aac']);
const notMedia = join(dir, 'notes.mp4');
writeFileSync(notMedia, 'this is not a video\n');

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function manager(t: { teardown: (f: () => void) => void }, options = {}): DecodeManagerType {
  const m = new addon.DecodeManager(options);
  t.teardown(() => m.close());
  return m;
}

test('two outputs on the same source share one decoder', (t) => {
  const m = manager(t);
  const a = m.acquire('HDMI-A-1', { source: counter });
  const b = m.acquire('HDMI-A-2', { source: counter });
  t.true(a.created);
  t.false(b.created);
  t.is(a.decoder, b.decoder);
  const status = m.status();
  t.is(status.decoders.length, 1);
  t.like(status.decoders[0], {
    source: counter,
    consumers: ['HDMI-A-1', 'HDMI-A-2'],
    codec: 'h264',
    width: 64,
    height: 64,
    frameRate: 30,
    hw: false,
  });
});

test('different start offsets or hw modes get their own decoders; per-output settings do not', (t) => {
  const m = manager(t);
  m.acquire('A', { source: counter });
  m.acquire('B', { source: counter, startSeconds: 0.5 });
  m.acquire('C', { source: counter, hw: 'software' });
  m.acquire('D', { source: counter, startSeconds: 0 });
  const decoders = m.status().decoders;
  t.is(decoders.length, 3);
  t.deepEqual(
    decoders.map((d) => [d.startSeconds, d.hwMode, d.consumers]),
    [
      [0, 'auto', ['A', 'D']],
      [0.5, 'auto', ['B']],
      [0, 'software', ['C']],
    ],
  );
});

test('the last consumer out stops the decoder; asking again for the same keeps it running', (t) => {
  const m = manager(t);
  const first = m.acquire('A', { source: counter });
  m.acquire('B', { source: counter });
  const again = m.acquire('A', { source: counter });
  t.deepEqual(
    again,
    { decoder: first.decoder, created: false, forcedShared: false },
    'a reload with the same source changes nothing',
  );
  m.release('A');
  t.deepEqual(m.status().decoders[0]?.consumers, ['B']);
  m.release('B');
  t.deepEqual(m.status().decoders, []);
  const e = t.throws(() => m.release('B'));
  t.regex(e?.message ?? '', /^ERR_DECODE_UNKNOWN_CONSUMER: consumer B holds no decoder/);
});

test('switching an output to another source leaves the old decoder to its other consumers', (t) => {
  const m = manager(t);
  m.acquire('A', { source: counter });
  m.acquire('B', { source: counter });
  m.acquire('A', { source: hevc });
  t.deepEqual(
    m.status().decoders.map((d) => [d.codec, d.consumers]),
    [
      ['h264', ['B']],
      ['hevc', ['A']],
    ],
  );
});

test('max_decoders is a clear error that names what runs, and nothing stops', (t) => {
  const m = manager(t, { maxDecoders: 1 });
  m.acquire('A', { source: counter });
  const e = t.throws(() => m.acquire('B', { source: hevc }));
  t.regex(e?.message ?? '', /^ERR_DECODE_LIMIT: max_decoders \(1\) reached; running: .*counter\.mp4 \(A\)/);
  t.is(m.status().decoders.length, 1);
  // A consumer moving to another source frees its own slot first.
  t.notThrows(() => m.acquire('A', { source: hevc }));
  t.is(m.status().decoders[0]?.codec, 'hevc');
});

test('at max_decoders with sharing off, an output joins the running decoder of its source (forced sharing)', (t) => {
  const m = manager(t, { maxDecoders: 1, sharedDecode: false });
  const a = m.acquire('A', { source: counter });
  t.like(a, { created: true, forcedShared: false });
  // The seed: reaching the limit forces sharing instead of refusing a source that runs.
  const b = m.acquire('B', { source: counter });
  t.deepEqual(b, { decoder: a.decoder, created: false, forcedShared: true });
  const [d] = m.status().decoders;
  t.like(d, { consumers: ['A', 'B'], forcedShared: true });
  t.is(m.status().decoders.length, 1);
  // A source no running decoder has is still refused, naming what runs.
  const e = t.throws(() => m.acquire('C', { source: hevc }));
  t.regex(e?.message ?? '', /^ERR_DECODE_LIMIT: max_decoders \(1\) reached; running: .*counter\.mp4 \(A, B\)/);
  // Room again: the forced output stays put until it asks for something else.
  m.setMaxDecoders(2);
  t.like(m.acquire('C', { source: hevc }), { created: true, forcedShared: false });
  t.like(m.status().decoders[0], { consumers: ['A', 'B'], forcedShared: true });
});

test('sharing can be turned off and on at run time', (t) => {
  const m = manager(t);
  m.acquire('A', { source: counter });
  m.acquire('B', { source: counter });
  m.setSharedDecode(false);
  t.is(m.status().decoders.length, 2);
  t.false(m.status().sharedDecode);
  m.setSharedDecode(true);
  t.deepEqual(
    m.status().decoders.map((d) => d.consumers),
    [['A', 'B']],
  );
});

test('bad sources and requests are refused with the reason and the source named', (t) => {
  const m = manager(t);
  const missing = t.throws(() => m.acquire('A', { source: join(dir, 'missing.mp4') }));
  t.regex(missing?.message ?? '', /^ERR_DECODE_OPEN: .*missing\.mp4: cannot open: No such file or directory/);
  const garbage = t.throws(() => m.acquire('A', { source: notMedia }));
  t.regex(garbage?.message ?? '', /^ERR_DECODE_OPEN: .*notes\.mp4: cannot open: /);
  const audio = t.throws(() => m.acquire('A', { source: audioOnly }));
  t.regex(audio?.message ?? '', /^ERR_DECODE_NO_VIDEO: .*tone\.m4a: no video stream/);
  const stream = t.throws(() => m.acquire('A', { source: counter, stream: 7 }));
  t.regex(stream?.message ?? '', /^ERR_DECODE_NO_VIDEO: .*stream 7 is not a video stream/);
  const hw = t.throws(() => m.acquire('A', { source: counter, hw: 'gpu' }));
  t.regex(hw?.message ?? '', /^ERR_DECODE_BAD_REQUEST: hw "gpu" is not "auto", "software" or "dmabuf"/);
  const start = t.throws(() => m.acquire('A', { source: counter, startSeconds: -1 }));
  t.regex(start?.message ?? '', /^ERR_DECODE_BAD_REQUEST: startSeconds -1 must be a number >= 0/);
  const empty = t.throws(() => m.acquire('', { source: counter }));
  t.regex(empty?.message ?? '', /^ERR_DECODE_BAD_REQUEST: consumer name is empty/);
  t.deepEqual(m.status().decoders, [], 'no decoder left behind by a failed open');
});

test.serial('decoding runs at the stream rate, loops on, and the newest frame is the one due', async (t) => {
  const m = manager(t);
  m.acquire('A', { source: counter });
  await sleep(1600);
  const [d] = m.status().decoders;
  t.truthy(d);
  if (!d) return;
  t.true(d.loops >= 1, `looped (${d.loops})`);
  // Paced by timestamps, not as fast as the CPU goes: 1.6 s of a 30 fps clip.
  t.true(d.frames >= 35 && d.frames <= 60, `frames ${d.frames}`);
  t.true(d.fps > 20 && d.fps < 40, `fps ${d.fps}`);
  t.is(d.bytesCopiedPerFrame, 64 * 64 * 1.5, 'the software path copies each frame once, into NV12');
  const frame = m.snapshot('A');
  t.truthy(frame);
  if (!frame) return;
  t.is(frame.data.length, 64 * 64 * 1.5);
  // The frame number is in the luma; the timeline runs on across loops.
  const index = (frame.sequence - 1) % 30;
  const luma = lumaMean(frame.data, 64 * 64);
  t.true(Math.abs(luma - 4 * index) <= 2, `frame ${index}: luma ${luma}`);
  t.true(Math.abs(frame.ptsUs - ((frame.sequence - 1) * 1e6) / 30) < 2000, `pts ${frame.ptsUs}`);
  t.deepEqual([...frame.data.subarray(64 * 64, 64 * 64 + 4)], [128, 128, 128, 128], 'neutral chroma, interleaved');
});

test('HEVC decodes too', async (t) => {
  const m = manager(t);
  m.acquire('A', { source: hevc });
  await sleep(300);
  const [d] = m.status().decoders;
  t.like(d, { codec: 'hevc', width: 128, height: 72, frameRate: 25 });
  t.true((d?.frames ?? 0) > 0);
});

test('a start offset shows the frame at that time, not the keyframe before it', async (t) => {
  const m = manager(t);
  m.acquire('A', { source: counter, startSeconds: 0.5 });
  await sleep(100);
  const frame = m.snapshot('A');
  t.truthy(frame);
  if (!frame) return;
  // The first frame shown is frame 15 (luma 60); frames 0-14 were decoded as references only.
  // The timeline starts at 0 with that frame and runs on across loops, which restart at frame
  // 15, so the pts tells which frame is on show however long the machine took to get here.
  const shown = 15 + (Math.round((frame.ptsUs * 30) / 1e6) % 15);
  const luma = lumaMean(frame.data, 64 * 64);
  t.true(Math.abs(luma - 4 * shown) <= 2, `frame ${shown}: luma ${luma}`);
});

test('the keyframe index is built on the first pass, saved beside the file, and trusted only while the file is unchanged', async (t) => {
  const media = clipMake(mkdtempSync(join(dir, 'idx-')), 'gop.mp4', [
    '-f',
    'lavfi',
    '-i',
    'testsrc2=size=64x64:rate=30:duration=1',
    '-c:v',
    'libx264',
    '-preset',
    'ultrafast',
    '-g',
    '10',
    '-pix_fmt',
    'yuv420p',
  ]);
  const run = async (waitMs: number) => {
    const m = new addon.DecodeManager({});
    m.acquire('A', { source: media });
    const before = m.status().decoders[0];
    await sleep(waitMs);
    const after = m.status().decoders[0];
    m.close();
    return { before: before?.index, after: after?.index, keyframes: after?.indexKeyframes };
  };
  t.deepEqual(await run(1300), { before: 'none', after: 'built', keyframes: 3 });
  t.true(existsSync(`${media}.idx`));
  t.deepEqual(await run(100), { before: 'loaded', after: 'loaded', keyframes: 3 });
  // The file changed (a new download, say): the old index no longer counts.
  utimesSync(media, new Date(), new Date(Date.now() + 5000));
  t.deepEqual(await run(1300), { before: 'none', after: 'built', keyframes: 3 });
  // A damaged index is ignored and rebuilt, never trusted.
  writeFileSync(`${media}.idx`, 'garbage');
  t.deepEqual(await run(1300), { before: 'none', after: 'built', keyframes: 3 });
  t.true(readFileSync(`${media}.idx`).subarray(0, 8).toString() === 'MHKFIDX1');
});

test('a still image (PNG) plays as a picture that stays up', async (t) => {
  const png = clip('still.png', ['-f', 'lavfi', '-i', 'color=c=white:size=48x32', '-frames:v', '1']);
  const m = manager(t);
  m.acquire('A', { source: png });
  await sleep(300);
  const [d] = m.status().decoders;
  t.like(d, { codec: 'png', width: 48, height: 32, frames: 1, loops: 0 });
  const frame = m.snapshot('A');
  t.truthy(frame);
  t.true(lumaMean(frame?.data ?? new Uint8Array(), 48 * 32) > 230, 'white');
});

test('acquireAsync opens a slow source off the JavaScript thread and reports its failure', async (t) => {
  // A server that accepts and never answers: FFmpeg's HTTP open waits on it.
  const sockets: Socket[] = [];
  const server = createServer((socket) => {
    sockets.push(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const { port } = server.address() as AddressInfo;
  const m = manager(t);
  let ticks = 0;
  const ticker = setInterval(() => ticks++, 20);
  const started = Date.now();
  const pending = m.acquireAsync('A', { source: `http://127.0.0.1:${port}/stalled.mp4` });
  await sleep(600);
  // Hang up: the open fails, and says so.
  for (const socket of sockets) socket.destroy();
  const e = await t.throwsAsync(pending);
  clearInterval(ticker);
  t.regex(e?.message ?? '', /^ERR_DECODE_OPEN: http:\/\/127\.0\.0\.1:\d+\/stalled\.mp4: cannot open: /);
  t.true(ticks >= 20, `the event loop kept running while the source opened (${ticks} ticks)`);
  t.true(Date.now() - started < 10_000);
  t.deepEqual(m.status().decoders, []);
  // And a good source resolves like acquire().
  t.like(await m.acquireAsync('B', { source: counter }), { created: true });
  t.like(await m.acquireAsync('C', { source: counter }), { created: false });
  t.deepEqual(m.status().decoders[0]?.consumers, ['B', 'C']);
});

// The addon's own source check (native/src/decode/policy.rs): what holds even if the
// supervisor's check (src/playback/source-policy.ts) were skipped.

test('the addon refuses FFmpeg protocols and lavfi graphs that read or write files, and opens none of them', async (t) => {
  const m = manager(t);
  const written = join(mkdtempSync(join(dir, 'psnr-')), 'stats.log');
  const { port, dialled } = await dialCounter(t);
  for (const source of [
    `lavfi:movie=${counter}`,
    `lavfi:testsrc2=size=64x64[a];testsrc2=size=64x64[b];[a][b]psnr=stats_file=${written}`,
    `lavfi:testsrc2=size=64x64,split[a][b];[a][b]psnr=stats_file=${written}`,
    `lavfi:color=size=64x64,drawtext=textfile=${notMedia}`,
    `file:${counter}`,
    `concat:${counter}|${counter}`,
    `subfile,,start,0,end,0,,:${counter}`,
    'pipe:0',
    `tcp://127.0.0.1:${port}`,
    `${dir}/../${dir.split('/').pop()}/counter.mp4`,
  ]) {
    const e = t.throws(() => m.acquire('A', { source }), undefined, source);
    t.regex(e?.message ?? '', /^ERR_SOURCE_NOT_ALLOWED: .*not allowed: .*allowed/, source);
  }
  t.false(existsSync(written), 'psnr wrote no stats file');
  t.is(dialled(), 0, 'nothing dialled out');
  t.deepEqual(m.status().decoders, []);
});

test('a local HLS playlist is not followed: a file source is a plain container, never a list of other files', (t) => {
  const m = manager(t);
  const playlist = join(mkdtempSync(join(dir, 'hls-local-')), 'list.m3u8');
  writeFileSync(playlist, hlsPlaylist(tsClip(dir, 'local-seg.ts')));
  const e = t.throws(() => m.acquire('A', { source: playlist }));
  t.regex(e?.message ?? '', /^ERR_DECODE_OPEN: .*list\.m3u8: cannot open: /);
  const concat = join(dir, 'list.ffconcat');
  writeFileSync(concat, `ffconcat version 1.0\nfile ${counter}\n`);
  t.regex(t.throws(() => m.acquire('A', { source: concat }))?.message ?? '', /^ERR_DECODE_OPEN: /);
  t.deepEqual(m.status().decoders, []);
});

test('HLS over HTTP plays its http segments; a segment or list that switches to file or concat is not opened', async (t) => {
  const segment = readFileSync(tsClip(dir, 'hls-seg.ts'));
  const server = await filesServe(t, {
    '/seg.ts': segment,
    '/good.m3u8': hlsPlaylist('seg.ts'),
    '/file.m3u8': hlsPlaylist(`file:${tsClip(dir, 'file-seg.ts')}`),
    '/list.ffconcat': 'ffconcat version 1.0\nfile seg.ts\n',
  });
  const m = manager(t);
  await m.acquireAsync('A', { source: server.url('/good.m3u8'), hw: 'software' });
  await sleep(300);
  t.like(m.status().decoders[0], { codec: 'h264', width: 64, height: 64 });
  t.true((m.status().decoders[0]?.frames ?? 0) > 0, 'HLS plays');
  for (const path of ['/file.m3u8', '/list.ffconcat']) {
    const e = await t.throwsAsync(m.acquireAsync('B', { source: server.url(path), hw: 'software' }));
    t.regex(e?.message ?? '', /^ERR_DECODE_OPEN: /, path);
  }
  t.true(server.requests.includes('/list.ffconcat'), 'the concat list was fetched, then refused as a format');
  t.is(server.requests.filter((p) => p === '/seg.ts').length >= 1, true);
  t.deepEqual(
    m.status().decoders.map((d) => d.consumers),
    [['A']],
  );
});

test('holdAtEnd: a prerolled item keeps its last frame at the end of the file and counts the end once, instead of starting over', async (t) => {
  const m = manager(t);
  const display = new addon.VirtualDisplay([{ name: 'V', width: 64, height: 64 }]);
  t.teardown(() => display.close());
  await m.acquireAsync('item', { source: counter, fresh: true, preroll: true, holdAtEnd: true });
  display.play(m, 'item', ['V']);
  const status = () => m.status().decoders.find((d) => d.consumers.includes('item'));
  const deadline = Date.now() + 20_000;
  while ((status()?.loops ?? 0) < 1) {
    if (Date.now() > deadline) throw new Error(`no end counted: ${JSON.stringify(status())}`);
    await sleep(10);
  }
  // The clip has 30 frames. A looping decoder would go on to frame 31 within 33 ms; give it
  // ten times that, then look at what was decoded and what the output shows.
  await sleep(400);
  const d = status();
  t.is(d?.frames, 30, 'no frame decoded after the last');
  t.is(d?.loops, 1, 'the end counted once');
  t.is(display.stats()[0]?.sequence, 30, 'the output shows the last frame');
  const records = display.playRecords();
  t.deepEqual(
    records.map((r) => [r.pass, r.end]),
    [[0, 'open']],
    'one pass, still on show: no first frame shown again',
  );

  // Only for a decoder of its own, prerolled.
  t.throws(() => m.acquire('other', { source: counter, holdAtEnd: true }), {
    message: /holdAtEnd needs fresh and preroll/,
  });
});
