import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { type ContractSchemaName, contractLoad } from '../src/mqtt/contract.ts';
import { DESIRED_FILE } from '../src/mqtt/desired-store.ts';
import type { DecodeStatus } from '../src/native/addon.ts';
import type { ExtensionDefinition } from '../src/supervisor/extension.ts';
import { assertEveryMessageValid } from './helpers/contract-check.ts';
import { FleetClient, mosquittoStart, type Received, sleep, tlsFiles } from './helpers/mosquitto.ts';
import { deviceStart } from './helpers/mqtt-device.ts';

const contract = contractLoad();

/**
 * Every message the device published that this client saw validates against the AsyncAPI
 * schemas (replies against their command's result schema), and each kind named in `expect` was
 * among them.
 */
function assertAllValid(
  t: ExecutionContext,
  fleet: FleetClient,
  expect: readonly ContractSchemaName[] = ['State', 'Status'],
): void {
  assertEveryMessageValid(t, fleet.received, { expect });
}

async function fleetFor(t: ExecutionContext, url: string, options = {}): Promise<FleetClient> {
  const fleet = await FleetClient.connect(t, url, options);
  await fleet.subscribe('multihead/#');
  return fleet;
}

/** A reply address of the fleet's (`<prefix>/replies/<requester>/<token>`). */
const replyAddress = (token: string = randomUUID()): string => `multihead/replies/fleet/${token}`;

/** Sends a v5 request with Response Topic and Correlation Data; resolves to the reply. */
async function requestV5(
  fleet: FleetClient,
  topic: string,
  payload: string | Buffer,
): Promise<{ reply: Received; correlation: string; replyTopic: string }> {
  const correlation = randomUUID();
  const address = replyAddress();
  await fleet.publish(topic, payload, {
    properties: { responseTopic: address, correlationData: Buffer.from(correlation) },
  });
  // The device answers on the address plus its id.
  const reply = await fleet.next((m) => m.topic.startsWith(`${address}/`), 5000, `reply under ${address}`);
  return { reply, correlation, replyTopic: reply.topic };
}

const online = (m: Received, root = 'multihead/dev-1') =>
  m.topic === `${root}/state` && (m.json as { state?: string })?.state === 'online';

test('birth is retained with a session counter, status is retained, a clean stop leaves offline retained', async (t) => {
  const broker = await mosquittoStart(t);
  const device = await deviceStart(t, { url: broker.url });
  const fleet = await fleetFor(t, broker.url);
  const birth = await fleet.next((m) => online(m), 5000, 'birth');
  t.is((birth.json as { session: number }).session, 1);
  const status = await fleet.next((m) => m.topic === 'multihead/dev-1/status');
  t.like(status.json, { device: { id: 'dev-1' }, supervisor: 'running', config: { version: null } });
  await device.stop();

  // A late subscriber sees what is retained: the offline state with the same session.
  const late = await fleetFor(t, broker.url);
  const state = await late.next((m) => m.topic === 'multihead/dev-1/state');
  t.true(state.retain);
  t.like(state.json, { state: 'offline', session: 1, reason: 'stopped' });
  const retainedStatus = await late.next((m) => m.topic === 'multihead/dev-1/status');
  t.true(retainedStatus.retain);
  assertAllValid(t, fleet);
});

test('the session counter grows across restarts and is saved atomically in the data directory', async (t) => {
  const broker = await mosquittoStart(t);
  const fleet = await fleetFor(t, broker.url);
  const first = await deviceStart(t, { url: broker.url });
  await fleet.next((m) => online(m) && (m.json as { session: number }).session === 1, 5000, 'session 1');
  await first.stop();
  const second = await deviceStart(t, { url: broker.url, dataDir: first.dataDir });
  await fleet.next((m) => online(m) && (m.json as { session: number }).session === 2, 5000, 'session 2');
  t.deepEqual(JSON.parse(readFileSync(join(second.dataDir, 'mqtt-session.json'), 'utf8')), { session: 2 });
  await second.stop();
});

test('broker restart: the device comes back by itself with a new session and republishes what is retained', async (t) => {
  const broker = await mosquittoStart(t);
  const fleet = await fleetFor(t, broker.url);
  await deviceStart(t, { url: broker.url });
  await fleet.next((m) => online(m), 5000, 'birth');
  // The broker forgets everything (no persistence): the device must resync state and status.
  await broker.stop();
  await broker.start();
  const fleet2 = await fleetFor(t, broker.url);
  const rebirth = await fleet2.next((m) => online(m), 5000, 'birth after the broker came back');
  // Each connection attempt takes the next number (its will carries it), so attempts refused while the
  // broker was down are skipped: the number only has to grow.
  t.true((rebirth.json as { session: number }).session >= 2, JSON.stringify(rebirth.json));
  await fleet2.next((m) => m.topic === 'multihead/dev-1/status', 5000, 'status republished');
  assertAllValid(t, fleet2);
});

test('broker down at start: the supervisor runs anyway and connects once the broker is up', async (t) => {
  const broker = await mosquittoStart(t, { stopped: true });
  const device = await deviceStart(t, { url: broker.url });
  t.is(device.controller.state, 'running');
  await sleep(300);
  await broker.start();
  const fleet = await fleetFor(t, broker.url);
  await fleet.next((m) => online(m), 5000, 'birth after the broker started');
  t.true(device.lines.some((l) => l.includes('broker refused the connection (not running?)')));
});

test('v5 request/response: the reply goes to the Response Topic with the Correlation Data', async (t) => {
  const broker = await mosquittoStart(t);
  await deviceStart(t, { url: broker.url });
  const fleet = await fleetFor(t, broker.url);
  await fleet.next((m) => online(m));
  const { reply, correlation } = await requestV5(fleet, 'multihead/dev-1/cmd/ping', '{}');
  t.is(reply.packet.properties?.correlationData?.toString(), correlation);
  t.like(reply.json, {
    device: 'dev-1',
    command: 'ping',
    ok: true,
    result: { pong: true, device: 'dev-1', session: 1 },
  });
  // mosquitto_pub -n sends an empty payload: a request without arguments.
  const empty = await requestV5(fleet, 'multihead/dev-1/cmd/ping', '');
  t.like(empty.reply.json, { ok: true });
  assertAllValid(t, fleet);
});

test('v3.1.1 clients put replyTo and id in the payload', async (t) => {
  const broker = await mosquittoStart(t);
  await deviceStart(t, { url: broker.url });
  const v3 = await FleetClient.connect(t, broker.url, { protocolVersion: 4 });
  await v3.subscribe('multihead/replies/#', 'multihead/dev-1/state');
  await v3.next((m) => online(m));
  await v3.publish('multihead/dev-1/cmd/ping', JSON.stringify({ id: 'req-17', replyTo: replyAddress('v3') }));
  const reply = await v3.next((m) => m.topic === `${replyAddress('v3')}/dev-1`);
  t.like(reply.json, { id: 'req-17', device: 'dev-1', command: 'ping', ok: true });
  t.true(contract.validateReply(reply.json).ok);
});

test('group and all addressing: only members of the group answer; everyone answers all', async (t) => {
  const broker = await mosquittoStart(t);
  await deviceStart(t, { url: broker.url, id: 'lobby-1', groups: ['lobby', 'floor-1'] });
  await deviceStart(t, { url: broker.url, id: 'cafe-1', groups: ['cafe'] });
  const fleet = await fleetFor(t, broker.url);
  await fleet.next((m) => online(m, 'multihead/lobby-1'));
  await fleet.next((m) => online(m, 'multihead/cafe-1'));

  const group = replyAddress('group');
  const all = replyAddress('all');
  const devicesUnder = (address: string) =>
    fleet.received
      .filter((m) => m.topic.startsWith(`${address}/`))
      .map((m) => (m.json as { device: string }).device)
      .sort();
  await fleet.publish('multihead/group/lobby/cmd/ping', JSON.stringify({ id: 'g', replyTo: group }));
  await fleet.next((m) => m.topic === `${group}/lobby-1`);
  await fleet.publish('multihead/all/cmd/ping', JSON.stringify({ id: 'a', replyTo: all }));
  // One reply topic per device: the address plus the device id.
  await fleet.next((m) => m.topic === `${all}/lobby-1` && (m.json as { device: string }).device === 'lobby-1');
  await fleet.next((m) => m.topic === `${all}/cafe-1` && (m.json as { device: string }).device === 'cafe-1');
  await sleep(300);
  t.deepEqual(devicesUnder(group), ['lobby-1']);
  t.deepEqual(devicesUnder(all), ['cafe-1', 'lobby-1']);
  assertAllValid(t, fleet, ['State', 'CommandReply']);
});

test('bad requests each get exactly one coded error reply', async (t) => {
  const broker = await mosquittoStart(t);
  await deviceStart(t, { url: broker.url });
  const fleet = await fleetFor(t, broker.url);
  await fleet.next((m) => online(m));
  const cases: Array<[string, string | Buffer, string, RegExp]> = [
    ['ping', '{"id": ', 'ERR_BAD_JSON', /not JSON/],
    ['ping', Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), 'ERR_BAD_ENCODING', /UTF-8/],
    ['ping', '[1, 2]', 'ERR_INVALID_REQUEST', /JSON object/],
    ['ping', '{"args": {}, "colour": "red"}', 'ERR_INVALID_REQUEST', /unknown field "colour"/],
    ['ping', '{"args": {"x": 1}}', 'ERR_INVALID_ARGS', /unknown field "x"/],
    ['logs.get', '{"args": {"limit": "ten"}}', 'ERR_INVALID_ARGS', /\/args\/limit must be integer/],
    ['logs.get', '{"args": {"level": "chatty"}}', 'ERR_INVALID_ARGS', /must be one of trace/],
    ['frobnicate', '{}', 'ERR_UNKNOWN_COMMAND', /no command "frobnicate"/],
    ['play', '{"args": {"source": "/media/a.mp4"}}', 'ERR_NOT_AVAILABLE', /play is part of the contract/],
    ['identify', '{}', 'ERR_NOT_AVAILABLE', /nothing on this device offers it/],
    ['ping', `{"args": ${'['.repeat(40)}${']'.repeat(40)}}`, 'ERR_TOO_DEEP', /deeper than 32/],
    // Over the payload limit but within the packet limit (300 KiB), so the broker still delivers it.
    ['ping', Buffer.alloc(270 * 1024, 0x20), 'ERR_PAYLOAD_TOO_LARGE', /limit is 262144/],
  ];
  for (const [command, payload, code, message] of cases) {
    const { reply, replyTopic } = await requestV5(fleet, `multihead/dev-1/cmd/${command}`, payload);
    const body = reply.json as { ok: boolean; error: { code: string; message: string } };
    t.false(body.ok, command);
    t.is(body.error.code, code, `${command}: ${body.error.message}`);
    t.regex(body.error.message, message);
    await sleep(50);
    t.is(fleet.on(replyTopic).length, 1, `exactly one reply for ${code}`);
  }
  assertAllValid(t, fleet);
});

test('a request without any reply address is reported on events', async (t) => {
  const broker = await mosquittoStart(t);
  await deviceStart(t, { url: broker.url });
  const fleet = await fleetFor(t, broker.url);
  await fleet.next((m) => online(m));
  await fleet.publish('multihead/dev-1/cmd/ping', 'not json');
  const event = await fleet.next(
    (m) => m.topic === 'multihead/dev-1/events' && (m.json as { type: string }).type === 'command.unanswered',
  );
  t.like(event.json, { severity: 'warn', details: { command: 'ping', code: 'ERR_BAD_JSON' } });
  assertAllValid(t, fleet, ['State', 'Event']);
});

test('a reply address outside <prefix>/replies/<requester>/<token> is never used and the request never runs', async (t) => {
  const broker = await mosquittoStart(t);
  const device = await deviceStart(t, { url: broker.url });
  const fleet = await fleetFor(t, broker.url);
  await fleet.subscribe('elsewhere/#');
  await fleet.next((m) => online(m));
  const addresses = [
    'multihead/dev-1/config/desired',
    'multihead/other/cmd/restart',
    'multihead/replies/fleet',
    'multihead/replies/fleet/a/b',
    'multihead/replies//x',
    'elsewhere/replies/fleet/x',
  ];
  const unanswered = () =>
    fleet.on('multihead/dev-1/events').filter((e) => (e.json as { type: string }).type === 'command.unanswered');
  const nthUnanswered = (n: number, what: string) => fleet.next(() => unanswered().length >= n, 5000, what);
  for (const [i, address] of addresses.entries()) {
    await fleet.publish('multihead/dev-1/cmd/restart', '{}', { properties: { responseTopic: address } });
    await nthUnanswered(i + 1, `command.unanswered for ${address}`);
    t.like(unanswered()[i]?.json, { details: { command: 'restart', code: 'ERR_REPLY_TOPIC_NOT_ALLOWED' } });
  }
  // 3.1.1 replyTo: the same rule.
  await fleet.publish('multihead/dev-1/cmd/restart', JSON.stringify({ replyTo: 'multihead/dev-1/config/desired' }));
  await nthUnanswered(addresses.length + 1, 'command.unanswered for replyTo');
  await requestV5(fleet, 'multihead/dev-1/cmd/ping', '{}');
  t.is(device.restarts.length, 0, 'no restart ran');
  for (const address of addresses) t.is(fleet.on(address).length, 0, `nothing published on ${address}`);
  t.false(fleet.received.some((m) => m.topic.startsWith('elsewhere/')));
  t.false(fleet.received.some((m) => m.topic === 'multihead/dev-1/config/desired'));
  assertAllValid(t, fleet, ['State', 'Event', 'CommandReply']);
});

test('config.get masks secrets, logs.get filters by level, restart acts through its injected runner, reboot writes its request file', async (t) => {
  const broker = await mosquittoStart(t, { auth: { username: 'dev-1', password: 's3cret-pass' } });
  const device = await deviceStart(t, {
    url: broker.url,
    file: { mqtt: { username: 'dev-1', password: 's3cret-pass' } },
  });
  const fleet = await fleetFor(t, broker.url, { username: 'dev-1', password: 's3cret-pass' });
  await fleet.next((m) => online(m));

  const config = await requestV5(fleet, 'multihead/dev-1/cmd/config.get', '{}');
  t.like(config.reply.json, {
    ok: true,
    result: { version: null, config: { mqtt: { password: '[redacted]', username: 'dev-1' } } },
  });

  const logs = await requestV5(fleet, 'multihead/dev-1/cmd/logs.get', '{"args": {"limit": 3, "level": "info"}}');
  const lines = (logs.reply.json as { result: { lines: Array<{ level: string }> } }).result.lines;
  t.true(lines.length > 0 && lines.length <= 3);
  t.true(lines.every((l) => ['info', 'warn', 'error', 'fatal'].includes(l.level)));

  t.like((await requestV5(fleet, 'multihead/dev-1/cmd/restart', '{}')).reply.json, {
    ok: true,
    result: { restarting: true },
  });
  const requestFile = join(device.runDir, 'reboot-request');
  t.false(existsSync(requestFile));
  t.like((await requestV5(fleet, 'multihead/dev-1/cmd/reboot', '{}')).reply.json, {
    ok: true,
    result: { rebooting: true },
  });
  // On the box multihead-reboot.path (root) reboots when this file appears: it must be there,
  // complete, by the time the reply says rebooting.
  t.like(JSON.parse(readFileSync(requestFile, 'utf8')), { transport: 'mqtt', from: 'multihead/dev-1/cmd/reboot' });
  await sleep(100);
  t.is(device.restarts.length, 1);

  // The password reached the broker (we are connected with auth) but no log line and no message.
  t.false(device.lines.some((l) => l.includes('s3cret-pass')));
  t.false(fleet.received.some((m) => m.text.includes('s3cret-pass')));
  assertAllValid(t, fleet);
});

test('wrong broker credentials: no birth, one clear log line, and the supervisor keeps running', async (t) => {
  const broker = await mosquittoStart(t, { auth: { username: 'dev-1', password: 'right' } });
  const device = await deviceStart(t, {
    url: broker.url,
    file: { mqtt: { username: 'dev-1', password: 'wrong-one' } },
  });
  const fleet = await fleetFor(t, broker.url, { username: 'dev-1', password: 'right' });
  await sleep(800);
  t.is(fleet.on('multihead/dev-1/state').length, 0);
  t.is(device.controller.state, 'running');
  const refusals = device.lines.filter((l) => l.includes('Not authorized') || l.includes('rejected the credentials'));
  t.is(refusals.length, 1, 'the same failure is logged once, not on every retry');
  t.false(device.lines.some((l) => l.includes('wrong-one')));
});

test('TLS with a configured CA and a client certificate', async (t) => {
  const tls = tlsFiles(t);
  const broker = await mosquittoStart(t, { tls });
  await deviceStart(t, {
    url: broker.url,
    file: { mqtt: { ca: tls.ca, cert: tls.clientCert, key: tls.clientKey } },
  });
  const fleet = await fleetFor(t, broker.url, { ca: readFileSync(tls.ca) });
  await fleet.next((m) => online(m), 5000, 'birth over TLS');
  const { reply } = await requestV5(fleet, 'multihead/dev-1/cmd/ping', '{}');
  t.like(reply.json, { ok: true });
});

test('an unreadable CA file keeps MQTT off with a clear error and never stops the supervisor', async (t) => {
  const broker = await mosquittoStart(t);
  const device = await deviceStart(t, { url: broker.url, file: { mqtt: { ca: '/nonexistent/ca.pem' } } });
  t.is(device.controller.state, 'running');
  t.true(
    device.lines.some((l) => l.includes('MQTT stays off: cannot read mqtt.ca /nonexistent/ca.pem: file not found')),
  );
});

/** A stand-in for the playback extension: offers decode.status and decode.shared as it will. */
function fakePlayback(calls: Array<[string, unknown]>): ExtensionDefinition {
  const status: DecodeStatus = {
    sharedDecode: true,
    maxDecoders: 4,
    decoders: [
      {
        id: 1,
        source: '/media/loop.mp4',
        hwMode: 'auto',
        startSeconds: 0,
        consumers: ['Virtual-1', 'Virtual-2'],
        hw: false,
        path: 'software',
        exported: 0,
        codec: 'h264',
        width: 1280,
        height: 720,
        frameRate: 30,
        fps: 29.97,
        frames: 900,
        late: 2,
        delayed: 2,
        loops: 0,
        queueDepth: 1,
        bytesCopiedPerFrame: 1382400,
        index: 'none',
        indexKeyframes: 0,
        prerolled: false,
      },
    ],
  };
  return {
    name: 'fake-playback',
    create: ({ commands, bus }) => {
      const offs: Array<() => void> = [];
      return {
        name: 'fake-playback',
        start() {
          offs.push(
            commands.register({ name: 'decode.status', description: 'test', handler: () => status }),
            commands.register({
              name: 'decode.shared',
              description: 'test',
              handler: (args) => {
                calls.push(['decode.shared', args]);
                status.sharedDecode = args.on as boolean;
                return { sharedDecode: status.sharedDecode };
              },
            }),
          );
          bus.emit('decode.status', { status });
          bus.emit('output.stats', { outputs: [{ name: 'Virtual-1', frames: 880, dropped: 3 }] });
        },
        stop() {
          for (const off of offs) off();
        },
      };
    },
  };
}

test('desired config: a valid document is saved, applied live where possible and reported with its version', async (t) => {
  const broker = await mosquittoStart(t);
  const calls: Array<[string, unknown]> = [];
  const device = await deviceStart(t, { url: broker.url, before: [fakePlayback(calls)] });
  const fleet = await fleetFor(t, broker.url);
  await fleet.next((m) => online(m));
  const desired = {
    version: 3,
    config: { decode: { shared: false }, log: { level: 'debug' }, mqtt: { telemetryIntervalS: 1 } },
  };
  await fleet.publish('multihead/dev-1/config/desired', JSON.stringify(desired), { retain: true });
  const reported = await fleet.next((m) => m.topic === 'multihead/dev-1/config/reported');
  t.like(reported.json, { version: 3, outcome: 'applied', appliedVersion: 3, errors: [] });
  const body = reported.json as { applied: string[]; restartRequired: string[] };
  t.deepEqual(body.applied.sort(), ['decode.shared', 'mqtt.telemetryIntervalS']);
  t.deepEqual(body.restartRequired, ['log.level']);
  t.deepEqual(calls, [['decode.shared', { on: false }]]);
  t.deepEqual(JSON.parse(readFileSync(join(device.dataDir, DESIRED_FILE), 'utf8')), {
    version: 3,
    config: desired.config,
  });
  // The new telemetry interval is live: a message arrives within about a second.
  const telemetry = await fleet.next((m) => m.topic === 'multihead/dev-1/telemetry', 3000, 'telemetry at 1 s');
  t.like(telemetry.json, { session: 1, decoders: { count: 1, sw: 1, hw: 0, bytesCopiedPerFrame: 1382400 } });
  t.deepEqual((telemetry.json as { temperatures: unknown }).temperatures, [
    { zone: 'thermal_zone0', type: 'cpu-thermal', celsius: 47.5 },
  ]);
  t.deepEqual((telemetry.json as { outputs: unknown }).outputs, [
    { name: 'Virtual-1', fps: 30, frames: 880, dropped: 3 },
    { name: 'Virtual-2', fps: 30, frames: null, dropped: null },
  ]);
  const config = await requestV5(fleet, 'multihead/dev-1/cmd/config.get', '{}');
  t.like(config.reply.json, { result: { version: 3, config: { decode: { shared: false }, log: { level: 'info' } } } });
  const event = await fleet.next(
    (m) => m.topic === 'multihead/dev-1/events' && (m.json as { type: string }).type === 'config.applied',
  );
  t.like(event.json, { details: { version: 3 } });
  // Status says which config version runs.
  await fleet.next(
    (m) => m.topic === 'multihead/dev-1/status' && (m.json as { config: { version: number } }).config.version === 3,
  );
  // The report is retained: a dashboard that subscribes later finds it.
  const late = await fleetFor(t, broker.url);
  const retained = await late.next((m) => m.topic === 'multihead/dev-1/config/reported');
  t.true(retained.retain);
  t.like(retained.json, { version: 3, outcome: 'applied' });
  assertAllValid(t, fleet);
});

test('desired config: an invalid document is rejected whole with per-key errors and the last good one keeps running', async (t) => {
  const broker = await mosquittoStart(t);
  const device = await deviceStart(t, { url: broker.url });
  const fleet = await fleetFor(t, broker.url);
  await fleet.next((m) => online(m));
  await fleet.publish(
    'multihead/dev-1/config/desired',
    JSON.stringify({ version: 1, config: { mqtt: { telemetryIntervalS: 30 } } }),
    { retain: true },
  );
  await fleet.next(
    (m) => m.topic === 'multihead/dev-1/config/reported' && (m.json as { version: number }).version === 1,
  );

  const bad = {
    version: 2,
    config: { mqtt: { telemetryIntervalS: 0 }, http: { port: 'eighty' }, decode: { sharde: true } },
  };
  await fleet.publish('multihead/dev-1/config/desired', JSON.stringify(bad), { retain: true });
  const rejected = await fleet.next(
    (m) => m.topic === 'multihead/dev-1/config/reported' && (m.json as { version: number }).version === 2,
  );
  const report = rejected.json as {
    outcome: string;
    appliedVersion: number;
    errors: Array<{ key: string; code: string; message: string }>;
  };
  t.is(report.outcome, 'rejected');
  t.is(report.appliedVersion, 1);
  t.deepEqual(report.errors.map((e) => [e.key, e.code]).sort(), [
    ['decode.sharde', 'ERR_UNKNOWN_KEY'],
    ['http.port', 'ERR_CONFIG_INVALID'],
    ['mqtt.telemetryIntervalS', 'ERR_CONFIG_INVALID'],
  ]);
  t.regex(report.errors.find((e) => e.key === 'decode.sharde')?.message ?? '', /did you mean "decode.shared"/);
  t.regex(
    report.errors.find((e) => e.key === 'http.port')?.message ?? '',
    /"eighty": must be an integer from 0 to 65535/,
  );
  // The saved file and the effective config are still version 1.
  t.is(JSON.parse(readFileSync(join(device.dataDir, DESIRED_FILE), 'utf8')).version, 1);
  const config = await requestV5(fleet, 'multihead/dev-1/cmd/config.get', '{}');
  t.like(config.reply.json, {
    result: { version: 1, config: { mqtt: { telemetryIntervalS: 30 }, http: { port: 8780 } } },
  });

  // Not JSON, a wrong shape, an older version: each rejected with a code.
  for (const [payload, code] of [
    ['{"version": 4, "config": ', 'ERR_BAD_JSON'],
    ['{"version": "5", "config": {}}', 'ERR_DESIRED_INVALID'],
    ['{"version": 6, "config": {}, "extra": 1}', 'ERR_DESIRED_INVALID'],
  ] as const) {
    const count = fleet.on('multihead/dev-1/config/reported').length;
    await fleet.publish('multihead/dev-1/config/desired', payload, { retain: true });
    const next = await fleet.next(
      (m) =>
        m.topic === 'multihead/dev-1/config/reported' &&
        fleet.on('multihead/dev-1/config/reported').indexOf(m) >= count,
    );
    t.like(next.json, { outcome: 'rejected', appliedVersion: 1 });
    t.is((next.json as { errors: Array<{ code: string }> }).errors[0]?.code, code, payload);
  }
  await fleet.publish('multihead/dev-1/config/desired', JSON.stringify({ version: 7, config: {} }), { retain: true });
  await fleet.next(
    (m) => m.topic === 'multihead/dev-1/config/reported' && (m.json as { version: number }).version === 7,
  );
  await fleet.publish('multihead/dev-1/config/desired', JSON.stringify({ version: 5, config: {} }), { retain: true });
  const stale = await fleet.next(
    (m) => m.topic === 'multihead/dev-1/config/reported' && (m.json as { version: number }).version === 5,
  );
  t.like(stale.json, {
    outcome: 'rejected',
    appliedVersion: 7,
    errors: [{ key: 'version', code: 'ERR_VERSION_STALE' }],
  });
  assertAllValid(t, fleet);
});

test('the saved desired config is taken up at the next start without a broker message', async (t) => {
  const broker = await mosquittoStart(t);
  const fleet = await fleetFor(t, broker.url);
  const first = await deviceStart(t, { url: broker.url });
  await fleet.next((m) => online(m));
  await fleet.publish(
    'multihead/dev-1/config/desired',
    JSON.stringify({ version: 9, config: { mqtt: { telemetryIntervalS: 1 } } }),
  );
  await fleet.next(
    (m) => m.topic === 'multihead/dev-1/config/reported' && (m.json as { version: number }).version === 9,
  );
  await first.stop();
  fleet.received.length = 0;
  // Not retained above: the second start learns version 9 only from the data directory.
  await deviceStart(t, { url: broker.url, dataDir: first.dataDir });
  const reported = await fleet.next((m) => m.topic === 'multihead/dev-1/config/reported');
  t.like(reported.json, { outcome: 'applied', appliedVersion: 9 });
  await fleet.next((m) => m.topic === 'multihead/dev-1/telemetry', 3000, 'telemetry at the saved 1 s interval');
});

test('bus events reach the events topic: decoder failures and error log lines', async (t) => {
  const broker = await mosquittoStart(t);
  const device = await deviceStart(t, { url: broker.url });
  const fleet = await fleetFor(t, broker.url);
  await fleet.next((m) => online(m));
  device.controller.bus.emit('display.outputs', {
    outputs: [
      {
        connector: 'HDMI-A-1',
        crtc: 40,
        crtcIndex: 0,
        mode: { name: '1920x1080', width: 1920, height: 1080, refresh: 60, preferred: true },
        planes: [31],
      },
    ],
  });
  const changed = await fleet.next((m) => (m.json as { type?: string })?.type === 'outputs.changed');
  t.like(changed.json, { details: { outputs: ['HDMI-A-1'], added: ['HDMI-A-1'], removed: [] } });
  const status = await fleet.next(
    (m) => m.topic === 'multihead/dev-1/status' && (m.json as { outputs: unknown[] }).outputs.length === 1,
  );
  t.deepEqual((status.json as { outputs: unknown }).outputs, [
    { name: 'HDMI-A-1', mode: '1920x1080@60', source: null, decoder: null },
  ]);
  device.controller.bus.emit('decode.status', {
    status: {
      sharedDecode: true,
      maxDecoders: 4,
      decoders: [
        {
          id: 5,
          source: 'https://cdn.example/x.m3u8',
          hwMode: 'auto',
          startSeconds: 0,
          consumers: ['HDMI-A-1'],
          hw: false,
          path: 'software',
          exported: 0,
          codec: 'h264',
          width: 1920,
          height: 1080,
          frameRate: 30,
          fps: 0,
          frames: 0,
          late: 0,
          delayed: 0,
          loops: 0,
          queueDepth: 0,
          bytesCopiedPerFrame: 0,
          failure: 'HTTP 404',
          index: 'none',
          indexKeyframes: 0,
          prerolled: false,
        },
      ],
    },
  });
  const failed = await fleet.next((m) => (m.json as { type?: string })?.type === 'decoder.failed');
  t.like(failed.json, { severity: 'error', details: { decoder: 5, failure: 'HTTP 404' } });
  // An error logged anywhere in the supervisor is an event (the ring holds it redacted).
  device.logger.error(
    { component: 'display', code: 'ERR_KMS_COMMIT' },
    'cannot fetch https://kiosk:hunter2@cdn.example/a.mp4',
  );
  const error = await fleet.next((m) => (m.json as { type?: string })?.type === 'error');
  t.like(error.json, { severity: 'error', details: { component: 'display', code: 'ERR_KMS_COMMIT', level: 'error' } });
  t.false(error.text.includes('hunter2'));
  assertAllValid(t, fleet);
});

test('the rate limit answers a flood with ERR_RATE_LIMITED and a replayed id is answered without running again', async (t) => {
  const broker = await mosquittoStart(t);
  const calls: Array<[string, unknown]> = [];
  const device = await deviceStart(t, {
    url: broker.url,
    before: [fakePlayback(calls)],
    deps: { rate: { burst: 3, perSecond: 0.5 } },
  });
  const fleet = await fleetFor(t, broker.url);
  await fleet.next((m) => online(m));
  for (let i = 0; i < 6; i++) {
    await fleet.publish('multihead/dev-1/cmd/ping', JSON.stringify({ id: `p${i}`, replyTo: replyAddress('flood') }));
  }
  const flooded = `${replyAddress('flood')}/dev-1`;
  const replies = async () => {
    for (let i = 0; i < 50 && fleet.on(flooded).length < 6; i++) await sleep(20);
    return fleet.on(flooded).map((m) => m.json as { ok: boolean; error?: { code: string } });
  };
  const flood = await replies();
  t.is(flood.filter((r) => r.ok).length, 3);
  t.true(flood.filter((r) => !r.ok).every((r) => r.error?.code === 'ERR_RATE_LIMITED'));

  const request = JSON.stringify({ id: 'once', replyTo: replyAddress('replay'), args: { on: false } });
  const replayed = `${replyAddress('replay')}/dev-1`;
  await fleet.publish('multihead/dev-1/cmd/decode.shared', request);
  await fleet.publish('multihead/dev-1/cmd/decode.shared', request);
  for (let i = 0; i < 50 && fleet.on(replayed).length < 2; i++) await sleep(20);
  t.is(fleet.on(replayed).length, 2);
  t.deepEqual(fleet.on(replayed)[0]?.json, fleet.on(replayed)[1]?.json);
  t.is(calls.length, 1, 'the command ran once');

  // The same id to the same address with anything else (arguments, command) is not that request.
  await fleet.publish(
    'multihead/dev-1/cmd/decode.shared',
    JSON.stringify({ id: 'once', replyTo: replyAddress('replay'), args: { on: true } }),
  );
  await fleet.publish('multihead/dev-1/cmd/restart', JSON.stringify({ id: 'once', replyTo: replyAddress('replay') }));
  for (let i = 0; i < 50 && fleet.on(replayed).length < 4; i++) await sleep(20);
  t.deepEqual(
    fleet.on(replayed).map((m) => (m.json as { error?: { code: string } }).error?.code),
    [undefined, undefined, 'ERR_DUPLICATE_ID', 'ERR_DUPLICATE_ID'],
  );
  t.is(calls.length, 1, 'neither ran');
  t.is(device.restarts.length, 0);
});

test('a redelivered request that arrives while the first copy still runs is run once and answered twice', async (t) => {
  const broker = await mosquittoStart(t);
  let runs = 0;
  const slow: ExtensionDefinition = {
    name: 'slow',
    create: ({ commands }) => {
      let withdraw: (() => void) | undefined;
      return {
        name: 'slow',
        start() {
          withdraw = commands.register({
            name: 'decode.maxDecoders',
            description: 'test: takes its time',
            handler: async (args) => {
              runs++;
              await sleep(300);
              return { maxDecoders: args.max };
            },
          });
        },
        stop() {
          withdraw?.();
        },
      };
    },
  };
  await deviceStart(t, { url: broker.url, before: [slow] });
  const fleet = await fleetFor(t, broker.url);
  await fleet.next((m) => online(m));
  const request = JSON.stringify({ id: 'twice', replyTo: replyAddress('slow'), args: { max: 3 } });
  const slowReplies = `${replyAddress('slow')}/dev-1`;
  await fleet.publish('multihead/dev-1/cmd/decode.maxDecoders', request);
  await fleet.publish('multihead/dev-1/cmd/decode.maxDecoders', request);
  for (let i = 0; i < 100 && fleet.on(slowReplies).length < 2; i++) await sleep(20);
  t.is(fleet.on(slowReplies).length, 2, 'both copies answered');
  t.deepEqual(fleet.on(slowReplies)[0]?.json, fleet.on(slowReplies)[1]?.json);
  t.like(fleet.on(slowReplies)[0]?.json, { id: 'twice', ok: true, result: { maxDecoders: 3 } });
  t.is(runs, 1, 'run once');
});
