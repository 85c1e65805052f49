import test, { type ExecutionContext } from 'ava';
import type { ExtensionDefinition } from '../src/supervisor/extension.ts';
import { assertEveryMessageValid } from './helpers/contract-check.ts';
import { type Broker, FleetClient, mosquittoStart, type Received, sleep } from './helpers/mosquitto.ts';
import { deviceStart } from './helpers/mqtt-device.ts';
import { tcpProxyStart } from './helpers/tcp-proxy.ts';

const state = (m: Received, want: 'online' | 'offline') =>
  m.topic === 'multihead/dev-1/state' && (m.json as { state?: string })?.state === want;

/** A fleet manager with a persistent session of its own, so its replies wait for it too. */
async function fleetConnect(t: ExecutionContext, broker: Broker): Promise<FleetClient> {
  const fleet = await FleetClient.connect(t, broker.url, {
    clientId: 'fleet-manager',
    clean: false,
    properties: { sessionExpiryInterval: 600 },
  });
  await fleet.subscribe('multihead/#');
  return fleet;
}

/** The fleet's reply address `name`, and the topic dev-1 answers it on. */
const address = (name: string) => `multihead/replies/fleet/${name}`;
const answered = (name: string) => `${address(name)}/dev-1`;
const EXPECT = ['State', 'CommandReply'] as const;

/** A device behind a proxy that the test can cut, on a broker that keeps sessions on disk. */
async function rig(t: ExecutionContext, before: ExtensionDefinition[] = []) {
  const broker = await mosquittoStart(t, { persistence: true });
  const proxy = await tcpProxyStart(t, broker.port);
  const device = await deviceStart(t, { url: proxy.url, before });
  const fleet = await fleetConnect(t, broker);
  await fleet.next((m) => state(m, 'online'), 5000, 'birth');
  return { broker, proxy, device, fleet };
}

async function repliesOn(fleet: FleetClient, topic: string, settleMs = 700): Promise<Received[]> {
  await fleet.next((m) => m.topic === topic, 8000, `a reply on ${topic}`);
  await sleep(settleMs);
  return fleet.on(topic);
}

test('a QoS 1 command sent while the device is offline arrives after it reconnects and is answered once', async (t) => {
  const { proxy, fleet } = await rig(t);
  proxy.cut();
  // The broker saw the connection drop without a DISCONNECT: the last will says offline.
  await fleet.next((m) => state(m, 'offline'), 5000, 'the last will');
  await fleet.publish('multihead/dev-1/cmd/ping', JSON.stringify({ id: 'while-away' }), {
    properties: { responseTopic: address('away'), correlationData: Buffer.from('k1') },
  });
  await sleep(500);
  t.is(fleet.on(answered('away')).length, 0, 'nothing answers while the device is away');
  proxy.restore();
  const replies = await repliesOn(fleet, answered('away'));
  t.is(replies.length, 1, 'exactly one reply');
  t.like(replies[0]?.json, { id: 'while-away', ok: true, result: { pong: true } });
  t.is(replies[0]?.packet.properties?.correlationData?.toString(), 'k1');
  // Answered on the new connection (the session counter counts connection attempts), after its birth.
  const reply = replies[0] as Received;
  const session = (reply.json as { result: { session: number } }).result.session;
  t.true(session > 1);
  const births = fleet.received.filter((m) => state(m, 'online'));
  const birth = births.at(-1) as Received;
  t.is((birth.json as { session: number }).session, session);
  t.true(fleet.received.indexOf(birth) < fleet.received.indexOf(reply));
  assertEveryMessageValid(t, fleet.received, { expect: EXPECT });
});

test('a request whose MQTT v5 Message Expiry ran out while the device was away never runs', async (t) => {
  const { proxy, device, fleet } = await rig(t);
  proxy.cut();
  await fleet.next((m) => state(m, 'offline'), 5000, 'the last will');
  await fleet.publish('multihead/dev-1/cmd/restart', JSON.stringify({ id: 'stale' }), {
    properties: { responseTopic: address('stale'), messageExpiryInterval: 1 },
  });
  await fleet.publish('multihead/dev-1/cmd/ping', JSON.stringify({ id: 'fresh' }), {
    properties: { responseTopic: address('fresh'), messageExpiryInterval: 600 },
  });
  // Time passing is the point here: the restart's 1 s expiry must run out while the device is away.
  await sleep(2200);
  proxy.restore();
  // The queue is delivered in order: once the later ping is answered, the restart would have been too.
  const fresh = await fleet.next((m) => m.topic === answered('fresh'), 8000, 'the fresh request answered');
  t.like(fresh.json, { id: 'fresh', ok: true });
  // The reply lives no longer than its request.
  const left = fresh.packet.properties?.messageExpiryInterval;
  t.true(typeof left === 'number' && left > 0 && left <= 600, `reply expiry ${left}`);
  await sleep(300);
  t.is(fleet.on(answered('stale')).length, 0, 'the expired request got no reply');
  t.deepEqual(device.restarts, [], 'and did not run');
  assertEveryMessageValid(t, fleet.received, { expect: EXPECT });
});

test('the broker restarts while a command waits for the offline device: persistence keeps it', async (t) => {
  const { broker, proxy, fleet } = await rig(t);
  proxy.cut();
  await fleet.next((m) => state(m, 'offline'), 5000, 'the last will');
  await fleet.publish(
    'multihead/dev-1/cmd/ping',
    JSON.stringify({ id: 'across-restart', replyTo: address('restart') }),
  );
  await sleep(200);
  await broker.stop();
  await broker.start();
  const fleet2 = await fleetConnect(t, broker);
  proxy.restore();
  const replies = await repliesOn(fleet2, answered('restart'));
  t.is(replies.length, 1, 'exactly one reply');
  t.like(replies[0]?.json, { id: 'across-restart', ok: true });
  assertEveryMessageValid(t, fleet2.received, { expect: EXPECT });
});

test('the broker restarts mid-command: the reply waits on the device and reaches the requester once', async (t) => {
  let release: () => void = () => {};
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  let runs = 0;
  const slow: ExtensionDefinition = {
    name: 'slow-playback',
    create: ({ commands }) => {
      let off = (): void => {};
      return {
        name: 'slow-playback',
        start() {
          off = commands.register({
            name: 'decode.status',
            description: 'answers when the test says so',
            handler: async () => {
              runs++;
              await gate;
              return { sharedDecode: true, maxDecoders: 4, decoders: [] };
            },
          });
        },
        stop: () => off(),
      };
    },
  };
  const { broker, proxy, device, fleet } = await rig(t, [slow]);
  await fleet.publish('multihead/dev-1/cmd/decode.status', JSON.stringify({ id: 'slow-1', replyTo: address('slow') }));
  for (let i = 0; i < 100 && runs === 0; i++) await sleep(20);
  t.is(runs, 1, 'the command is running');
  // The device stays off the network until the fleet manager is back, so the requester's own
  // queued messages cannot arrive with its CONNACK, before the test client listens.
  proxy.cut();
  await broker.stop();
  await sleep(100);
  release();
  await sleep(100);
  t.is(device.controller.state, 'running');
  await broker.start();
  const fleet2 = await fleetConnect(t, broker);
  proxy.restore();
  const replies = await repliesOn(fleet2, answered('slow'));
  // One reply per delivery of the request. If the broker went down before the device's PUBACK
  // reached it, it delivers the request again after the restart (QoS 1 is at least once): the
  // device then answers that copy too, from memory, with the same reply, without running it.
  t.true(replies.length >= 1 && replies.length <= 2, `${replies.length} replies`);
  for (const r of replies) {
    t.like(r.json, { id: 'slow-1', command: 'decode.status', ok: true, result: { decoders: [] } });
    t.deepEqual(r.json, replies[0]?.json);
  }
  t.is(runs, 1, 'the command ran once');
  await fleet2.next((m) => state(m, 'online') && (m.json as { session: number }).session > 1, 5000, 'rebirth');
  assertEveryMessageValid(t, [...fleet.received, ...fleet2.received], { expect: EXPECT });
});
