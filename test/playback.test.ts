import { once } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { virtualScreens } from '../src/display/screens.ts';
import { loadAddon } from '../src/native/addon.ts';
import { Previews } from '../src/playback/previews.ts';
import { screenshotCommand } from '../src/playback/screenshot.ts';
import { CommandRegistry } from '../src/supervisor/commands.ts';
import { counterClip } from './helpers/clips.ts';

const addon = loadAddon();
const dir = mkdtempSync(join(tmpdir(), 'multihead-playback-'));
// Retried: a decoder thread may still be saving a keyframe index beside a clip (ENOTEMPTY seen under load).
test.after.always(() => rmSync(dir, { recursive: true, force: true, maxRetries: 10 }));
const clip = counterClip(dir, 'counter.mp4', '128x72', '4*N');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const silent = { warn() {}, info() {}, error() {}, debug() {} } as never;

function playing(t: { teardown: (f: () => void) => void }) {
  const decode = new addon.DecodeManager({});
  const display = new addon.VirtualDisplay([
    { name: 'Virtual-1', width: 128, height: 72, refresh: 60 },
    { name: 'Virtual-2', width: 128, height: 72, refresh: 60 },
  ]);
  t.teardown(() => {
    display.close();
    decode.close();
  });
  const screens = virtualScreens(display, [
    { name: 'Virtual-1', width: 128, height: 72, refresh: 60 },
    { name: 'Virtual-2', width: 128, height: 72, refresh: 60 },
  ]);
  decode.acquire('wall', { source: clip });
  screens.play(decode, 'wall', [{ output: 'Virtual-1' }, { output: 'Virtual-2' }]);
  return screens;
}

/** JPEG dimensions from its SOF0 marker. */
function jpegSize(jpeg: Buffer): { width: number; height: number } {
  for (let i = 2; i < jpeg.length - 8; ) {
    const marker = jpeg.readUInt16BE(i);
    const length = jpeg.readUInt16BE(i + 2);
    if (marker === 0xffc0 || marker === 0xffc2)
      return { height: jpeg.readUInt16BE(i + 5), width: jpeg.readUInt16BE(i + 7) };
    i += 2 + length;
  }
  return { width: 0, height: 0 };
}

test('previews: a JPEG of each output, scaled to the configured width, reported as it is taken', async (t) => {
  const screens = playing(t);
  await sleep(300);
  const seen: string[] = [];
  const previews = new Previews({
    screens,
    logger: silent,
    intervalMs: 0,
    width: 64,
    onPreview: (output) => seen.push(output),
  });
  t.teardown(() => previews.stop());
  await previews.takeAll();
  t.deepEqual(seen, ['Virtual-1', 'Virtual-2']);
  const p = previews.latest('Virtual-2');
  t.truthy(p);
  if (!p) return;
  t.deepEqual([p.jpeg[0], p.jpeg[1]], [0xff, 0xd8], 'a JPEG');
  t.deepEqual(jpegSize(p.jpeg), { width: 64, height: 36 });
  t.deepEqual({ width: p.width, height: p.height }, { width: 64, height: 36 });
});

test('screenshot: one full-size JPEG per output as base64; bad arguments are named', async (t) => {
  const screens = playing(t);
  await sleep(300);
  const commands = new CommandRegistry();
  commands.register(screenshotCommand({ screens: () => screens }));
  const origin = { transport: 'internal' } as const;
  const reply = await commands.invoke('screenshot', {}, origin);
  t.true(reply.ok, JSON.stringify(reply));
  const shots = (reply as { result: { shots: Array<{ output: string; jpegBase64: string; width: number }> } }).result
    .shots;
  t.deepEqual(
    shots.map((s) => s.output),
    ['Virtual-1', 'Virtual-2'],
  );
  t.deepEqual(jpegSize(Buffer.from(shots[0]?.jpegBase64 ?? '', 'base64')), { width: 128, height: 72 });
  t.like(await commands.invoke('screenshot', { outputs: ['HDMI-A-9'] }, origin), {
    ok: false,
    error: { code: 'ERR_BAD_ARGUMENT', message: 'no output "HDMI-A-9"; outputs: Virtual-1, Virtual-2' },
  });
  t.like(await commands.invoke('screenshot', { quality: 0 }, origin), {
    ok: false,
    error: { code: 'ERR_BAD_ARGUMENT' },
  });
  t.like(await commands.invoke('screenshot', { uploadUrl: 'ftp://x/y' }, origin), {
    ok: false,
    error: {
      code: 'ERR_BAD_ARGUMENT',
      message: '"uploadUrl" must be an http:// or https:// URL: it "ftp:" is not allowed; allowed: http://, https://',
    },
  });
  for (const uploadUrl of ['file:///etc/x.jpg', 'http:///x.jpg', 'HTTP://host/x.jpg', 'http://host/a b.jpg']) {
    t.like(await commands.invoke('screenshot', { uploadUrl }, origin), {
      ok: false,
      error: { code: 'ERR_BAD_ARGUMENT' },
    });
  }
});

test('screenshot: uploads with PUT to the given URL, and a refusing server is a clear error', async (t) => {
  const screens = playing(t);
  await sleep(300);
  const received: Array<{ url: string; type: string; bytes: number }> = [];
  let refuse = false;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({
        url: req.url ?? '',
        type: String(req.headers['content-type']),
        bytes: Buffer.concat(chunks).length,
      });
      res.statusCode = refuse ? 403 : 201;
      res.end();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  const commands = new CommandRegistry();
  commands.register(screenshotCommand({ screens: () => screens }));
  const origin = { transport: 'internal' } as const;
  const reply = await commands.invoke(
    'screenshot',
    { uploadUrl: `http://127.0.0.1:${port}/shots/{output}.jpg` },
    origin,
  );
  t.true(reply.ok, JSON.stringify(reply));
  t.deepEqual(
    received.map((r) => r.url),
    ['/shots/Virtual-1.jpg', '/shots/Virtual-2.jpg'],
  );
  t.true(received.every((r) => r.type === 'image/jpeg' && r.bytes > 100));
  refuse = true;
  t.like(
    await commands.invoke(
      'screenshot',
      { uploadUrl: `http://127.0.0.1:${port}/x.jpg`, outputs: ['Virtual-1'] },
      origin,
    ),
    {
      ok: false,
      error: { code: 'ERR_UPLOAD', message: `PUT to 127.0.0.1:${port} answered 403 Forbidden` },
    },
  );
});

test('previews: the encoder copes with the picture changing size', async (t) => {
  const frame = (w: number, h: number) => new Uint8Array((w * h * 3) / 2).fill(120);
  for (const [w, h] of [
    [1280, 720],
    [320, 180],
    [1280, 720],
  ] as const) {
    const p = await addon.jpegEncode(frame(w, h), { width: w, height: h, format: 'NV12', outWidth: 320 });
    t.deepEqual(jpegSize(p.jpeg), { width: 320, height: 180 }, `${w}x${h}`);
  }
});

test('play and stop commands: a source on one output, errors named, the demo comes back', async (t) => {
  const { playbackCreate, demoSource } = await import('../src/extensions/playback.ts');
  const DEMO_SOURCE = demoSource(128, 72);
  const { EventBus } = await import('../src/supervisor/bus.ts');
  const { configLoad } = await import('../src/config/load.ts');
  const { loggingCreate } = await import('../src/log/logger.ts');
  const dataDir = mkdtempSync(join(dir, 'data-'));
  const media = join(dataDir, 'media');
  mkdirSync(media);
  const inMedia = counterClip(media, 'counter.mp4', '128x72', '4*N');
  const config = configLoad({
    env: { MULTIHEAD_PREVIEW_INTERVAL_S: '0', MULTIHEAD_DATA_DIR: dataDir, MULTIHEAD_PLAYBACK_DEMO: '1' },
    defaultPath: '/nonexistent/config.json',
  }).config;
  const logging = loggingCreate({ level: 'info', ringSize: 100, sink: { write: () => {} } });
  const bus = new EventBus(() => {});
  const commands = new CommandRegistry();
  const extension = playbackCreate({ config, logger: logging.logger, bus, addon, commands, logRing: logging.ring });
  const display = new addon.VirtualDisplay([
    { name: 'Virtual-1', width: 128, height: 72 },
    { name: 'Virtual-2', width: 128, height: 72 },
  ]);
  const screens = virtualScreens(display, [
    { name: 'Virtual-1', width: 128, height: 72, refresh: 60 },
    { name: 'Virtual-2', width: 128, height: 72, refresh: 60 },
  ]);
  await extension.start();
  t.teardown(async () => {
    display.close();
    await extension.stop();
  });
  bus.emit('display.ready', { mode: 'virtual', reason: 'test', screens });
  const origin = { transport: 'internal' } as const;
  const status = async () =>
    (
      (await commands.invoke('decode.status', {}, origin)) as {
        result: { decoders: Array<{ source: string; consumers: string[] }> };
      }
    ).result.decoders;
  t.deepEqual(
    (await status()).map((d) => [d.source, d.consumers]),
    [[DEMO_SOURCE, ['Virtual-1', 'Virtual-2']]],
  );
  // A media name is looked up in <dataDir>/media and played from its real path.
  const played = await commands.invoke('play', { source: 'counter.mp4', outputs: ['Virtual-1'] }, origin);
  t.like(played, { ok: true, result: { outputs: ['Virtual-1'], source: inMedia } });
  await sleep(300);
  const decoders = await status();
  t.deepEqual(decoders.find((d) => d.source === DEMO_SOURCE)?.consumers, ['Virtual-2'], 'the demo let go of Virtual-1');
  t.is(decoders.find((d) => d.source === inMedia)?.consumers.length, 1);
  t.like(await commands.invoke('play', { source: inMedia, outputs: ['HDMI-A-7'] }, origin), {
    ok: false,
    error: { code: 'ERR_BAD_ARGUMENT', message: 'play: no output "HDMI-A-7"; outputs: Virtual-1, Virtual-2' },
  });
  t.like(await commands.invoke('play', { source: join(media, 'missing.mp4') }, origin), {
    ok: false,
    error: { code: 'ERR_DECODE_OPEN' },
  });
  // A file outside the media directory, and FFmpeg's other protocols, are refused before anything opens.
  for (const source of [clip, 'lavfi:testsrc2', `file:${inMedia}`, `concat:${inMedia}|${inMedia}`]) {
    const refused = await commands.invoke('play', { source }, origin);
    t.like(refused, { ok: false, error: { code: 'ERR_SOURCE_NOT_ALLOWED' } }, source);
    t.regex(refused.ok ? '' : refused.error.message, /allowed: a media file name or a path inside /, source);
  }
  t.deepEqual(
    (await status()).map((d) => d.source).sort(),
    [DEMO_SOURCE, inMedia].sort(),
    'no decoder for any refused source',
  );
  t.like(await commands.invoke('stop', {}, origin), { ok: true, result: { stopped: ['Virtual-1'] } });
  await sleep(100);
  t.deepEqual(
    (await status()).map((d) => [d.source, d.consumers]),
    [[DEMO_SOURCE, ['Virtual-2', 'Virtual-1']]],
    'the clip decoder is gone and the demo is back on Virtual-1',
  );
});
