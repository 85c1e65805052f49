import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { contractLoad } from '../src/mqtt/contract.ts';
import { configLoadWithDesired, DESIRED_FILE, desiredWrite } from '../src/mqtt/desired-store.ts';
import { payloadDecode } from '../src/mqtt/payload.ts';
import { RateLimiter } from '../src/mqtt/rate-limit.ts';
import { SESSION_FILE, sessionNext } from '../src/mqtt/session-counter.ts';
import { TelemetrySampler } from '../src/mqtt/telemetry.ts';
import { deviceTopics, topicParse } from '../src/mqtt/topics.ts';
import { StatusTracker } from '../src/status/status.ts';
import { EventBus } from '../src/supervisor/bus.ts';
import { scratchDir, writeJson } from './helpers/tmp.ts';

const contract = contractLoad();

test('contract: the command table comes from the AsyncAPI document', (t) => {
  t.deepEqual([...contract.commands].sort(), [
    'config.get',
    'decode.maxDecoders',
    'decode.shared',
    'decode.status',
    'identify',
    'logs.get',
    'next',
    'ping',
    'play',
    'playlist.set',
    'reboot',
    'restart',
    'screenshot',
    'stop',
  ]);
  t.is(contract.validateCommand('nope', {}), undefined);
  t.deepEqual(contract.validateCommand('decode.shared', { args: { on: true } }), { ok: true });
  t.deepEqual(contract.validateCommand('decode.shared', { args: { on: 'yes' } }), {
    ok: false,
    problems: [{ path: '/args/on', message: 'must be boolean' }],
  });
});

test('payload: limits, encoding, JSON and depth are checked before anything else', (t) => {
  t.deepEqual(payloadDecode(Buffer.alloc(0), 10), { ok: true, value: {} });
  t.like(payloadDecode(Buffer.alloc(11, 0x20), 10), { ok: false, code: 'ERR_PAYLOAD_TOO_LARGE' });
  t.like(payloadDecode(Buffer.from([0xc3, 0x28]), 10), { ok: false, code: 'ERR_BAD_ENCODING' });
  t.like(payloadDecode(Buffer.from('{'), 10), { ok: false, code: 'ERR_BAD_JSON' });
  t.like(payloadDecode(Buffer.from(`${'['.repeat(33)}${']'.repeat(33)}`), 1000), { ok: false, code: 'ERR_TOO_DEEP' });
  t.deepEqual(payloadDecode(Buffer.from(`${'['.repeat(32)}${']'.repeat(32)}`), 1000).ok, true);
  // Deep enough to break a recursive checker: still one coded answer.
  const deep = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
  t.like(payloadDecode(Buffer.from(deep), 1_000_000), { ok: false });
});

test('topics: what the device subscribes to and how an incoming topic is read', (t) => {
  const topics = deviceTopics('fleet/eu', 'kiosk-1', ['lobby']);
  t.is(topics.state, 'fleet/eu/kiosk-1/state');
  t.deepEqual(topics.subscriptions, [
    'fleet/eu/kiosk-1/cmd/+',
    'fleet/eu/kiosk-1/config/desired',
    'fleet/eu/all/cmd/+',
    'fleet/eu/group/lobby/cmd/+',
  ]);
  const parse = (topic: string) => topicParse(topic, 'fleet/eu', 'kiosk-1', ['lobby']);
  t.deepEqual(parse('fleet/eu/kiosk-1/cmd/logs.get'), { kind: 'command', command: 'logs.get', scope: 'device' });
  t.deepEqual(parse('fleet/eu/all/cmd/ping'), { kind: 'command', command: 'ping', scope: 'all' });
  t.deepEqual(parse('fleet/eu/group/lobby/cmd/ping'), { kind: 'command', command: 'ping', scope: { group: 'lobby' } });
  // A group left since (a persistent session may still deliver it) is ignored.
  t.deepEqual(parse('fleet/eu/group/cafe/cmd/ping'), { kind: 'other' });
  t.deepEqual(parse('fleet/eu/kiosk-1/config/desired'), { kind: 'desired' });
  t.deepEqual(parse('fleet/eu/kiosk-2/cmd/ping'), { kind: 'other' });
  t.deepEqual(parse('other/kiosk-1/cmd/ping'), { kind: 'other' });
});

test('session counter: counts up, survives a corrupt file, leaves no temporary files', (t) => {
  const dir = scratchDir(t);
  t.is(sessionNext(dir), 1);
  t.is(sessionNext(dir), 2);
  t.deepEqual(JSON.parse(readFileSync(join(dir, SESSION_FILE), 'utf8')), { session: 2 });
  t.deepEqual(readdirSync(dir), [SESSION_FILE]);
  writeFileSync(join(dir, SESSION_FILE), '{"sess');
  t.is(sessionNext(dir), 1);
  // A data directory that cannot be made (a file is in the way) is an error the caller reports.
  t.throws(() => sessionNext(join(dir, SESSION_FILE, 'sub')), { code: 'ENOTDIR' });
});

test('rate limiter: a burst, then the steady rate', (t) => {
  let now = 0;
  const limiter = new RateLimiter({ burst: 2, perSecond: 1, now: () => now });
  t.true(limiter.take('a'));
  t.true(limiter.take('a'));
  t.false(limiter.take('a'));
  t.true(limiter.take('b'), 'buckets are per key');
  now = 1000;
  t.true(limiter.take('a'));
  t.false(limiter.take('a'));
});

test('status tracker: outputs and what they play from bus events, including those emitted before it existed', (t) => {
  const bus = new EventBus(() => {});
  const screens = {
    kind: 'virtual' as const,
    outputs: () => [],
    play() {},
    snapshot: () => undefined,
    stats: () => [],
  };
  bus.emit('display.ready', { mode: 'virtual', reason: 'no /dev/dri/card* nodes', screens });
  const config = configLoadWithDesired({ env: {}, defaultPath: '/nonexistent.json', hostname: 'h' }).config;
  let now = 10_000;
  const tracker = new StatusTracker({
    bus,
    config,
    versions: { app: '1', addon: '2', node: 'v24' },
    startedAt: 0,
    now: () => now,
  });
  let changes = 0;
  tracker.onChange(() => changes++);
  const decoder = {
    id: 1,
    source: 'a.mp4',
    hwMode: 'auto',
    startSeconds: 0,
    consumers: ['Virtual-2', 'Virtual-1'],
    hw: false,
    path: 'software',
    exported: 0,
    codec: 'h264',
    width: 640,
    height: 360,
    frameRate: 30,
    fps: 30,
    frames: 10,
    late: 0,
    delayed: 0,
    loops: 0,
    queueDepth: 0,
    bytesCopiedPerFrame: 0,
    index: 'none',
    indexKeyframes: 0,
    prerolled: false,
  };
  bus.emit('decode.status', { status: { sharedDecode: true, maxDecoders: 4, decoders: [decoder] } });
  t.is(changes, 1);
  // Counters are telemetry: a new fps is not a status change.
  bus.emit('decode.status', {
    status: { sharedDecode: true, maxDecoders: 4, decoders: [{ ...decoder, fps: 29, frames: 99 }] },
  });
  t.is(changes, 1);
  now = 75_500;
  const doc = tracker.document();
  t.is(doc.uptimeS, 75);
  t.deepEqual(doc.display, { mode: 'virtual', reason: 'no /dev/dri/card* nodes' });
  t.deepEqual(doc.outputs, [
    { name: 'Virtual-1', source: 'a.mp4', decoder: 1 },
    { name: 'Virtual-2', source: 'a.mp4', decoder: 1 },
  ]);
  t.true(contract.validate('Status', doc).ok);
  tracker.close();
});

test('telemetry: readable thermal zones only, rates since the previous sample, valid against the contract', async (t) => {
  const dir = scratchDir(t);
  const thermal = join(dir, 'thermal');
  for (const [zone, temp, type] of [
    ['thermal_zone0', '51234\n', 'x86_pkg_temp\n'],
    ['thermal_zone1', 'garbage\n', 'acpitz\n'],
  ] as const) {
    const z = join(thermal, zone);
    mkdirSync(z, { recursive: true });
    writeFileSync(join(z, 'temp'), temp);
    writeFileSync(join(z, 'type'), type);
  }
  const sampler = new TelemetrySampler({
    thermalDir: thermal,
    procDir: '/proc',
    startedAt: Date.now() - 5000,
    session: () => 3,
    decodeStatus: async () => undefined,
    outputStats: () => [{ name: 'HDMI-A-1', frames: 10, dropped: 1 }],
  });
  const sample = await sampler.sample();
  t.deepEqual(sample.temperatures, [{ zone: 'thermal_zone0', type: 'x86_pkg_temp', celsius: 51.2 }]);
  t.deepEqual(sample.outputs, [{ name: 'HDMI-A-1', fps: null, frames: 10, dropped: 1 }]);
  t.is(sample.session, 3);
  t.true(sample.memory.totalBytes > 0 && sample.memory.availableBytes > 0);
  t.true(contract.validate('Telemetry', sample).ok);
  const none = new TelemetrySampler({
    thermalDir: join(dir, 'absent'),
    procDir: join(dir, 'absent'),
    startedAt: Date.now(),
    session: () => 1,
    decodeStatus: async () => undefined,
    outputStats: () => undefined,
  });
  const bare = await none.sample();
  t.deepEqual(bare.temperatures, []);
  t.is(bare.cpu.systemPercent, null);
});

test('configLoadWithDesired: the saved desired layer applies at boot; one that no longer validates is skipped', (t) => {
  const dir = scratchDir(t);
  const file = writeJson(dir, 'config.json', { dataDir: dir, log: { level: 'warn' } });
  desiredWrite(dir, { version: 4, config: { log: { level: 'debug' }, decode: { maxDecoders: 2 } } });
  const loaded = configLoadWithDesired({ path: file, env: {} });
  t.is(loaded.desiredVersion, 4);
  t.is(loaded.config.log.level, 'debug');
  t.is(loaded.sources.get('decode.maxDecoders'), 'MQTT desired state');

  desiredWrite(dir, { version: 5, config: { decode: { maxDecoders: 999 } } });
  const skipped = configLoadWithDesired({ path: file, env: {} });
  t.is(skipped.desiredVersion, null);
  t.is(skipped.config.log.level, 'warn');
  t.regex(skipped.desiredProblem ?? '', /decode.maxDecoders = 999/);

  writeFileSync(join(dir, DESIRED_FILE), 'not json');
  t.regex(configLoadWithDesired({ path: file, env: {} }).desiredProblem ?? '', /not JSON/);
});
