import test from 'ava';
import { contractLoad } from '../src/mqtt/contract.ts';
import { FleetClient, mosquittoStart, sleep } from './helpers/mosquitto.ts';
import { deviceStart } from './helpers/mqtt-device.ts';

const contract = contractLoad();

/** A small seeded PRNG (mulberry32), so a failure names a case that can be replayed. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const COMMANDS = [...contract.commands, 'frobnicate', 'ping/extra', '..', 'a'.repeat(200)];
const VALUES: unknown[] = [
  null,
  true,
  0,
  -1,
  1e308,
  Number.MAX_SAFE_INTEGER + 2,
  '',
  'x'.repeat(5000),
  '\u0000\u202e',
  [],
  [1, 'a', null],
  {},
  { $ref: '#/x' },
  { __proto__: { polluted: true } },
];

function hostile(rnd: () => number, i: number): Buffer {
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rnd() * list.length)] as T;
  switch (i % 10) {
    case 0: // random bytes, mostly invalid UTF-8
      return Buffer.from(Array.from({ length: 1 + Math.floor(rnd() * 64) }, () => Math.floor(rnd() * 256)));
    case 1: // truncated JSON
      return Buffer.from(JSON.stringify({ id: `t${i}`, args: { limit: 5 } }).slice(0, Math.floor(rnd() * 20)));
    case 2: {
      // deep nesting
      const depth = 33 + Math.floor(rnd() * 2000);
      return Buffer.from(`{"args":{"a":${'['.repeat(depth)}${']'.repeat(depth)}}}`);
    }
    case 3: // wrong types for every envelope field
      return Buffer.from(JSON.stringify({ id: pick(VALUES), replyTo: pick(VALUES), args: pick(VALUES) }));
    case 4: // unknown fields at the top and in args
      return Buffer.from(JSON.stringify({ id: `u${i}`, [`f${i}`]: pick(VALUES), args: { [`g${i}`]: pick(VALUES) } }));
    case 5: // arguments of the wrong type for real commands
      return Buffer.from(
        JSON.stringify({ args: { limit: pick(VALUES), level: pick(VALUES), on: pick(VALUES), source: pick(VALUES) } }),
      );
    case 6: // not an object at all
      return Buffer.from(JSON.stringify(pick(VALUES)));
    case 7: // replayed ids
      return Buffer.from(JSON.stringify({ id: `replay-${i % 3}` }));
    case 8: // huge (only sometimes, to keep the run short)
      return i % 100 === 8
        ? Buffer.alloc(260 * 1024, 0x61)
        : Buffer.from(JSON.stringify({ args: { x: 'y'.repeat(10_000) } }));
    default: // a valid-looking request with a random id
      return Buffer.from(JSON.stringify({ id: `v${i}`, args: {} }));
  }
}

test('1000+ generated hostile requests: no crash, exactly one schema-valid reply each', async (t) => {
  const broker = await mosquittoStart(t);
  const device = await deviceStart(t, { url: broker.url });
  const fleet = await FleetClient.connect(t, broker.url);
  const base = 'multihead/replies/fuzz/';
  await fleet.subscribe('multihead/dev-1/state', `${base}#`);
  await fleet.next((m) => m.topic === 'multihead/dev-1/state');
  const rnd = random(0x5eed);
  const total = 1200;
  const routable = new Set<number>();
  const answered = () => fleet.received.filter((m) => m.topic.startsWith(base)).length;
  // In batches: mosquitto queues at most 1000 messages per client, and a loaded test machine
  // must not turn the broker's own limit into "missing replies".
  const BATCH = 100;
  for (let i = 0; i < total; i++) {
    const command = COMMANDS[Math.floor(rnd() * COMMANDS.length)] as string;
    if (!command.includes('/')) routable.add(i);
    // restart and reboot would act (recorded by the test runners) — harmless, and still one reply.
    const topic = `multihead/dev-1/cmd/${command}`;
    await fleet.publish(topic, hostile(rnd, i), {
      properties: { responseTopic: `${base}${i}`, correlationData: Buffer.from(String(i)) },
    });
    if ((i + 1) % BATCH === 0 || i === total - 1) {
      const deadline = Date.now() + 20_000;
      while (Date.now() < deadline && answered() < routable.size) await sleep(20);
    }
  }
  await sleep(200);
  const replies = fleet.received.filter((m) => m.topic.startsWith(base));
  const perRequest = new Map<string, number>();
  for (const m of replies) perRequest.set(m.topic, (perRequest.get(m.topic) ?? 0) + 1);
  // Topics with a level beyond cmd/<name> ("ping/extra") match no subscription: the broker
  // never delivers them (documented). Every other request has exactly one reply.
  t.true(routable.size > total * 0.9);
  const unanswered = [...routable].filter((i) => perRequest.get(`${base}${i}/dev-1`) !== 1);
  t.deepEqual(unanswered, []);
  t.is(perRequest.size, routable.size, 'no reply to a request the device never received');
  let invalid = 0;
  for (const m of replies) {
    if (!contract.validateReply(m.json).ok) invalid++;
    t.is(`${base}${m.packet.properties?.correlationData?.toString()}/dev-1`, m.topic);
  }
  t.is(invalid, 0);
  const codes = new Set(replies.map((m) => (m.json as { error?: { code: string } }).error?.code).filter(Boolean));
  for (const code of [
    'ERR_BAD_ENCODING',
    'ERR_BAD_JSON',
    'ERR_TOO_DEEP',
    'ERR_INVALID_REQUEST',
    'ERR_UNKNOWN_COMMAND',
  ]) {
    t.true(codes.has(code), `saw ${code}`);
  }
  t.is(device.controller.state, 'running');
  await fleet.publish('multihead/dev-1/cmd/ping', '{}', { properties: { responseTopic: `${base}after` } });
  const after = await fleet.next((m) => m.topic === `${base}after/dev-1`);
  t.like(after.json, { ok: true });
});
