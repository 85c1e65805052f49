import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { loggingCreate } from '../src/log/logger.ts';
import { CommandRouter, type ReplyPayload, type ReplyTarget } from '../src/mqtt/command-router.ts';
import { subscriptionMap } from '../src/mqtt/connection.ts';
import { CONTRACT_PATH, contractLoad } from '../src/mqtt/contract.ts';
import { configLoadWithDesired, DESIRED_FILE, desiredWrite } from '../src/mqtt/desired-store.ts';
import { payloadDecode } from '../src/mqtt/payload.ts';
import { SESSION_FILE, sessionNext } from '../src/mqtt/session-counter.ts';
import { TelemetrySampler } from '../src/mqtt/telemetry.ts';
import { deviceTopics, replyTopic, topicParse } from '../src/mqtt/topics.ts';
import { RateLimiter } from '../src/rate-limit.ts';
import { StatusTracker } from '../src/status/status.ts';
import { EventBus } from '../src/supervisor/bus.ts';
import { CommandRegistry } from '../src/supervisor/commands.ts';
import { topicKind } from './helpers/contract-check.ts';
import { scratchDir, writeJson } from './helpers/tmp.ts';

const contract = contractLoad();

test('contract: the command table comes from the AsyncAPI document', (t) => {
  t.deepEqual([...contract.commands].sort(), [
    'config.get',
    'content.status',
    'decode.maxDecoders',
    'decode.shared',
    'decode.status',
    'display.power',
    'firmware.status',
    'firmware.update',
    'identify',
    'interrupt',
    'interrupt.clear',
    'logs.get',
    'ping',
    'play',
    'playlist.next',
    'playlist.previous',
    'playlist.set',
    'proofOfPlay.get',
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
    { topic: 'fleet/eu/kiosk-1/cmd/+', commands: true },
    { topic: 'fleet/eu/kiosk-1/config/desired', commands: false },
    { topic: 'fleet/eu/all/cmd/+', commands: true },
    { topic: 'fleet/eu/group/lobby/cmd/+', commands: true },
  ]);
  // Command topics: no retained message on subscribe, and a live retained one keeps its flag.
  t.deepEqual(subscriptionMap(topics.subscriptions), {
    'fleet/eu/kiosk-1/cmd/+': { qos: 1, rh: 2, rap: true },
    'fleet/eu/kiosk-1/config/desired': { qos: 1, rh: 0, rap: false },
    'fleet/eu/all/cmd/+': { qos: 1, rh: 2, rap: true },
    'fleet/eu/group/lobby/cmd/+': { qos: 1, rh: 2, rap: true },
  });
  t.deepEqual(replyTopic('fleet/eu/replies/ops/42', 'fleet/eu', 'kiosk-1'), {
    ok: true,
    topic: 'fleet/eu/replies/ops/42/kiosk-1',
  });
  for (const bad of [
    'fleet/eu/kiosk-1/config/desired',
    'fleet/eu/replies/ops',
    'fleet/eu/replies/ops/42/x',
    'fleet/eu/replies/+/42',
    'fleet/eu/replies/ops/#',
    'fleet/eu/replies//42',
    'multihead/replies/ops/42',
    '$SYS/replies/ops/42',
    `fleet/eu/replies/ops/${'x'.repeat(300)}`,
  ]) {
    t.false(replyTopic(bad, 'fleet/eu', 'kiosk-1').ok, bad);
  }
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
    snapshotJpeg: async () => undefined,
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

/** A router with a counting `restart` and `ping`, recording replies and unanswered requests. */
function routerRig(now: () => number = Date.now) {
  const commands = new CommandRegistry();
  const ran: string[] = [];
  for (const name of ['ping', 'restart']) {
    commands.register({
      name,
      description: 'test',
      handler: () => {
        ran.push(name);
        return name === 'ping'
          ? { pong: true, device: 'kiosk-1', session: 1, uptimeS: 0 }
          : { restarting: true, inMs: 0 };
      },
    });
  }
  const replies: Array<[ReplyTarget, ReplyPayload]> = [];
  const unanswered: Array<{ command: string; code: string }> = [];
  const router = new CommandRouter({
    contract,
    commands,
    deviceId: 'kiosk-1',
    prefix: 'm',
    logger: loggingCreate({ level: 'fatal', ringSize: 10, sink: { write: () => {} } }).logger,
    reply: (target, payload) => replies.push([target, payload]),
    unanswered: (command, error) => unanswered.push({ command, code: error.code }),
    rate: { burst: 100, perSecond: 100 },
    now,
  });
  const send = (
    command: string,
    body: unknown,
    packet: Record<string, unknown> = {},
    topic = `m/kiosk-1/cmd/${command}`,
  ) => router.handle(command, topic, Buffer.from(JSON.stringify(body)), packet);
  return { router, ran, replies, unanswered, send };
}

test('router: a retained command is refused and never runs, with or without a reply address', async (t) => {
  const r = routerRig();
  await r.send('restart', {}, { retain: true, properties: { responseTopic: 'm/replies/ops/1' } });
  await r.send('restart', { replyTo: 'm/replies/ops/2' }, { retain: true });
  await r.send('restart', {}, { retain: true });
  t.deepEqual(r.ran, []);
  t.deepEqual(
    r.replies.map(([target, p]) => [target.topic, p.ok ? 'ok' : p.error.code]),
    [
      ['m/replies/ops/1/kiosk-1', 'ERR_RETAINED'],
      ['m/replies/ops/2/kiosk-1', 'ERR_RETAINED'],
    ],
  );
  t.deepEqual(r.unanswered, [{ command: 'restart', code: 'ERR_RETAINED' }]);
  for (const [, payload] of r.replies) t.true(contract.validateReply(payload).ok);
  await r.send('restart', {}, { retain: false });
  t.deepEqual(r.ran, ['restart'], 'the same request not retained runs');
});

test('router: a reply address outside <prefix>/replies/<requester>/<token> is not used and the request does not run', async (t) => {
  const r = routerRig();
  await r.send('restart', {}, { properties: { responseTopic: 'm/kiosk-1/config/desired' } });
  await r.send('restart', { replyTo: 'm/kiosk-1/config/desired' });
  t.deepEqual(r.ran, []);
  t.deepEqual(r.replies, []);
  t.deepEqual(r.unanswered, [
    { command: 'restart', code: 'ERR_REPLY_TOPIC_NOT_ALLOWED' },
    { command: 'restart', code: 'ERR_REPLY_TOPIC_NOT_ALLOWED' },
  ]);
});

test('router: a reused id is replayed only for the same request; anything else is ERR_DUPLICATE_ID', async (t) => {
  let now = 0;
  const r = routerRig(() => now);
  const props = { properties: { responseTopic: 'm/replies/ops/a' } };
  await r.send('ping', { id: 'x' }, props);
  await r.send('ping', { id: 'x' }, props);
  t.deepEqual(r.ran, ['ping'], 'the same request again is answered from memory');
  await r.send('restart', { id: 'x' }, props);
  await r.send('ping', { id: 'x', args: {} }, props);
  await r.send('ping', { id: 'x' }, props, 'm/all/cmd/ping');
  t.deepEqual(r.ran, ['ping'], 'another command, payload or topic under the same id never runs');
  t.deepEqual(
    r.replies.map(([, p]) => (p.ok ? 'ok' : p.error.code)),
    ['ok', 'ok', 'ERR_DUPLICATE_ID', 'ERR_DUPLICATE_ID', 'ERR_DUPLICATE_ID'],
  );
  t.like(r.replies[2]?.[1], { id: 'x', command: 'restart', ok: false });
  // The same id to another reply address is another request.
  await r.send('restart', { id: 'x' }, { properties: { responseTopic: 'm/replies/ops/b' } });
  t.deepEqual(r.ran, ['ping', 'restart']);
  // After the replay window the id is free again.
  now += 11 * 60_000;
  await r.send('restart', { id: 'x' }, props);
  t.deepEqual(r.ran, ['ping', 'restart', 'restart']);
});

test("router: the request's Message Expiry and Correlation Data travel with the reply target", async (t) => {
  const r = routerRig(() => 1_000_000);
  await r.send(
    'ping',
    {},
    { properties: { responseTopic: 'm/replies/ops/e', messageExpiryInterval: 30, correlationData: Buffer.from('c') } },
  );
  t.deepEqual(r.replies[0]?.[0], {
    topic: 'm/replies/ops/e/kiosk-1',
    correlationData: Buffer.from('c'),
    expiresAt: 1_030_000,
  });
});

test("contract: every reply is checked against its command's result schema", (t) => {
  const ok = (command: string, result: unknown) =>
    contract.validateReply({ device: 'd', command, ok: true, result }).ok;
  t.true(ok('ping', { pong: true, device: 'd', session: 1, uptimeS: 0 }));
  t.false(ok('ping', { pong: 'yes', device: 'd', session: 1, uptimeS: 0 }));
  t.false(ok('ping', {}));
  t.true(ok('decode.shared', { sharedDecode: true }));
  t.false(ok('decode.shared', { sharedDecode: 1 }));
  t.true(ok('restart', { restarting: true, inMs: 500 }));
  t.false(ok('restart', { rebooting: true, inMs: 500 }));
  t.false(ok('logs.get', { lines: 'all' }));
  t.true(
    contract.validateReply({ device: 'd', command: 'ping', ok: false, error: { code: 'ERR_X', message: 'm' } }).ok,
  );
  // A command outside the contract can only fail.
  t.true(
    contract.validateReply({ device: 'd', command: 'nope', ok: false, error: { code: 'ERR_X', message: 'm' } }).ok,
  );
});

test('contract: a document whose command and reply lists differ is refused', (t) => {
  const dir = scratchDir(t);
  const text = readFileSync(CONTRACT_PATH, 'utf8');
  const drifted = text.replace(/\n {6}ping:\n {8}\$ref: "#\/components\/messages\/ReplyPing"/, '');
  t.not(drifted, text);
  writeFileSync(join(dir, 'asyncapi.yaml'), drifted);
  t.throws(() => contractLoad(join(dir, 'asyncapi.yaml')), { message: /ping has no reply message/ });
});

test('contract check: reply topics are part of the contract, at exactly their depth', (t) => {
  t.deepEqual(topicKind('multihead/replies/ops/42/kiosk-1'), { kind: 'reply', device: 'kiosk-1' });
  for (const topic of [
    'multihead/replies/ops/42',
    'multihead/replies/ops/42/kiosk-1/x',
    'multihead/replies//42/kiosk-1',
    'replies/ops/42/kiosk-1',
    'multihead/kiosk-1/cmd/ping/x',
    'multihead/kiosk-1/elsewhere',
  ]) {
    t.deepEqual(topicKind(topic), { kind: 'unknown' }, topic);
  }
  t.deepEqual(topicKind('multihead/kiosk-1/jobs/j1'), { kind: 'device', schema: 'Job' });
  t.deepEqual(topicKind('multihead/all/cmd/ping'), { kind: 'fleet' });
  t.deepEqual(topicKind('multihead/kiosk-1/config/desired'), { kind: 'fleet' });
});
