import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import test from 'ava';
import { assertEveryMessageValid } from './helpers/contract-check.ts';
import { FleetClient, mosquittoStart, type Received, sleep } from './helpers/mosquitto.ts';
import { deviceStart } from './helpers/mqtt-device.ts';

/**
 * The ACL template exactly as docs/mqtt.md prints it: the test uses the documented file, so a
 * template that stops working fails here rather than in a customer's broker.
 */
function aclTemplate(): string {
  const doc = readFileSync(new URL('../docs/mqtt.md', import.meta.url), 'utf8');
  const section = doc.slice(doc.indexOf('## Broker ACL'));
  const block = /```\n([\s\S]*?)```/.exec(section)?.[1];
  if (!block) throw new Error('docs/mqtt.md: no ACL code block under "## Broker ACL"');
  return block;
}

const USERS = [
  { username: 'dev-1', password: 'pw-dev-1' },
  { username: 'other-dev', password: 'pw-other' },
  { username: 'fleet', password: 'pw-fleet' },
];
const credentials = (name: string) => USERS.find((u) => u.username === name) as { username: string; password: string };

const online = (root: string) => (m: Received) =>
  m.topic === `${root}/state` && (m.json as { state?: string })?.state === 'online';

test('the documented ACL: the device works in its subtree, reads group/all commands, and reaches nothing else', async (t) => {
  const template = aclTemplate();
  t.regex(template, /pattern readwrite multihead\/%u\/#/);
  t.regex(template, /pattern write multihead\/replies\/\+\/\+\/%u\n/);
  const broker = await mosquittoStart(t, { users: USERS, acl: template });
  const fleet = await FleetClient.connect(t, broker.url, credentials('fleet'));
  await fleet.subscribe('multihead/#');

  // Two devices, each logged in as its own id (the template's %u).
  const dev = await deviceStart(t, {
    url: broker.url,
    id: 'dev-1',
    groups: ['lobby'],
    file: { mqtt: credentials('dev-1') },
  });
  const other = await deviceStart(t, {
    url: broker.url,
    id: 'other-dev',
    groups: ['cafe'],
    file: { mqtt: credentials('other-dev') },
  });
  await fleet.next(online('multihead/dev-1'), 5000, 'dev-1 birth');
  await fleet.next(online('multihead/other-dev'), 5000, 'other-dev birth');
  await fleet.next((m) => m.topic === 'multihead/dev-1/status', 5000, 'dev-1 status');
  t.false(
    dev.lines.some((l) => l.includes('refused subscription')),
    'every subscription the device makes is allowed',
  );

  // Commands and replies on the device's own topics, its group, and all.
  const ask = async (topic: string, device: string): Promise<Received> => {
    const replyTo = `multihead/replies/fleet/${randomUUID()}`;
    await fleet.publish(topic, '{}', {
      properties: { responseTopic: replyTo, correlationData: Buffer.from('c') },
    });
    return fleet.next(
      (m) => m.topic === `${replyTo}/${device}` && (m.json as { device: string }).device === device,
      5000,
      `${device} answering ${topic}`,
    );
  };
  t.like((await ask('multihead/dev-1/cmd/ping', 'dev-1')).json, { ok: true, command: 'ping' });
  t.like((await ask('multihead/group/lobby/cmd/ping', 'dev-1')).json, { ok: true });
  t.like((await ask('multihead/all/cmd/ping', 'dev-1')).json, { ok: true });
  // Desired → reported works through the ACL too.
  await fleet.publish('multihead/dev-1/config/desired', JSON.stringify({ version: 1, config: {} }), { retain: true });
  const reported = await fleet.next((m) => m.topic === 'multihead/dev-1/config/reported', 5000, 'reported');
  t.like(reported.json, { outcome: 'applied', appliedVersion: 1 });

  // Whatever the device's credentials try outside its subtree gets nowhere.
  const rogue = await FleetClient.connect(t, broker.url, { ...credentials('dev-1'), clientId: 'rogue-dev-1' });
  // mosquitto grants any subscription and applies the read rules to each message it would
  // deliver, so what proves the ACL is what arrives, not the SUBACK.
  await rogue.subscribe('multihead/#', 'multihead/other-dev/#', 'multihead/replies/#', '#');
  await fleet.publish('multihead/other-dev/cmd/ping', JSON.stringify({ replyTo: 'multihead/replies/fleet/secret' }));
  await fleet.next(
    (m) => m.topic === 'multihead/replies/fleet/secret/other-dev',
    5000,
    'other-dev answering the fleet',
  );
  await fleet.publish('multihead/all/cmd/ping', JSON.stringify({ replyTo: 'multihead/replies/fleet/all' }));
  await fleet.publish('multihead/group/lobby/cmd/ping', JSON.stringify({ replyTo: 'multihead/replies/fleet/g' }));
  await fleet.publish('multihead/dev-1/events', 'own-marker');
  await rogue.next((m) => m.text === 'own-marker', 5000, 'a message of its own subtree');
  await sleep(300);
  const readable = /^multihead\/(dev-1\/.*|all\/cmd\/[^/]+|group\/[^/]+\/cmd\/[^/]+)$/;
  t.deepEqual(
    rogue.received.map((m) => m.topic).filter((topic) => !readable.test(topic)),
    [],
    'device credentials read only the own subtree and the group/all command topics',
  );
  t.true(rogue.received.some((m) => m.topic === 'multihead/all/cmd/ping'));
  t.true(rogue.received.some((m) => m.topic === 'multihead/group/lobby/cmd/ping'));
  t.true(
    rogue.received.some((m) => m.topic === 'multihead/dev-1/state' && m.retain),
    'its own retained state',
  );

  const forbidden = [
    'multihead/other-dev/state',
    'multihead/other-dev/status',
    'multihead/other-dev/cmd/reboot',
    'multihead/other-dev/config/desired',
    'multihead/all/cmd/reboot',
    'multihead/group/cafe/cmd/reboot',
    'multihead/elsewhere',
  ];
  const replyTo = 'multihead/replies/rogue/1';
  // Replies: only those naming dev-1 itself are writable with its credentials; a reply that
  // claims to come from another device (or from no device) never reaches the requester.
  const forgedReplies = [
    'multihead/replies/fleet/t1/other-dev',
    'multihead/replies/fleet/t1',
    'multihead/replies/fleet/t1/other-dev/dev-1',
    'multihead/replies/dev-1/t1/other-dev',
  ];
  const forgedReply = JSON.stringify({ device: 'other-dev', command: 'ping', ok: true, result: { pong: true } });
  for (const topic of forgedReplies) {
    for (const qos of [0, 1] as const) await rogue.client.publishAsync(topic, forgedReply, { qos }).catch(() => {});
  }
  for (const topic of forbidden) {
    for (const qos of [0, 1] as const) {
      // mosquitto answers a denied QoS 1 publish with "not authorized" (v5) or drops it silently.
      await rogue.client
        .publishAsync(topic, JSON.stringify({ state: 'offline', session: 999, replyTo, id: 'ROGUE' }), { qos })
        .catch(() => {});
    }
  }
  // ...while a message of the device's own reaches the watcher, so the silence above means something.
  await rogue.publish('multihead/dev-1/events', 'marker');
  await fleet.next((m) => m.topic === 'multihead/dev-1/events' && m.text === 'marker', 5000, 'the marker');
  // A reply naming the device itself is writable (that is how devices answer).
  await rogue.publish('multihead/replies/fleet/from-rogue/dev-1', 'marker');
  await fleet.next((m) => m.topic === 'multihead/replies/fleet/from-rogue/dev-1', 5000, 'a reply-topic write');
  await sleep(300);
  for (const topic of forgedReplies) {
    t.is(fleet.on(topic).length, 0, `the forged reply on ${topic} never reached the fleet`);
  }
  for (const topic of forbidden) {
    t.false(
      fleet.on(topic).some((m) => m.text.includes('ROGUE')),
      `${topic} never reached the fleet`,
    );
  }
  t.false(
    fleet.received.some((m) => m.topic === replyTo),
    'no device ran a command sent with device credentials',
  );
  t.false(
    other.lines.some((l) => l.includes('rogue')),
    'other-dev never heard of the rogue requests',
  );
  const late = await FleetClient.connect(t, broker.url, credentials('fleet'));
  await late.subscribe('multihead/other-dev/state');
  const state = await late.next((m) => m.topic === 'multihead/other-dev/state');
  t.like(state.json, { state: 'online', session: 1 }, 'the retained state of other-dev was not overwritten');

  assertEveryMessageValid(
    t,
    fleet.received.filter((m) => m.text !== 'marker' && m.text !== 'own-marker'),
    { expect: ['State', 'Status', 'ReportedConfig', 'CommandReply'] },
  );
});
