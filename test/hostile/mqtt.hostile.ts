// Attacks on the fleet contract (issue 11, points 1, 4, 5, 6, 7 and 14): retained commands,
// reply topics, replayed ids, late requests, oversize messages and contract drift, against the
// real supervisor process and Debian's mosquitto.
// Serial: each attack starts a whole supervisor; nine at once on a small CI machine would time out at birth.
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { assertEveryMessageValid } from '../helpers/contract-check.ts';
import { FleetClient, type Received, sleep } from '../helpers/mosquitto.ts';
import { scratchDir } from '../helpers/tmp.ts';
import { HostileBox } from './box.ts';

interface Reply {
  id?: string;
  device: string;
  command: string;
  ok: boolean;
  result?: Record<string, unknown>;
  error?: { code: string; message: string };
}

const address = (token: string = randomUUID()): string => `multihead/replies/fleet/${token}`;

/** A box whose `reboot` writes its request file into a scratch run directory, where the test can see it. */
async function boxWithRunDir(t: Parameters<typeof HostileBox.start>[0]) {
  const runDir = scratchDir(t);
  const box = await HostileBox.start(t, { env: { RUNTIME_DIRECTORY: runDir } });
  return { box, rebootRequested: () => existsSync(join(runDir, 'reboot-request')) };
}

/** Publishes `body` on `topic` with reply address `replyTo` (and any v5 properties); does not wait. */
async function send(
  box: HostileBox,
  topic: string,
  body: Record<string, unknown>,
  replyTo: string | undefined,
  options: { retain?: boolean; properties?: Record<string, unknown> } = {},
): Promise<void> {
  await box.fleet.publish(topic, JSON.stringify(body), {
    retain: options.retain ?? false,
    properties: { ...(replyTo ? { responseTopic: replyTo } : {}), ...options.properties },
  });
}

const replyOn = (box: HostileBox, replyTo: string, what: string, timeoutMs = 10_000): Promise<Received> =>
  box.fleet.next((m) => m.topic === `${replyTo}/${box.id}`, timeoutMs, what);

const repliesUnder = (box: HostileBox, replyTo: string): Received[] =>
  box.fleet.received.filter((m) => m.topic === replyTo || m.topic.startsWith(`${replyTo}/`));

const unanswered = (box: HostileBox): Array<{ details: { command: string; code: string } }> =>
  box.fleet
    .on(`multihead/${box.id}/events`)
    .map((m) => m.json as { type: string; details: { command: string; code: string } })
    .filter((e) => e.type === 'command.unanswered');

/**
 * A ping answered after everything sent before it: the box handles its requests in order, so
 * once this reply is in, any reply to an earlier request would have been too.
 */
async function drained(t: Parameters<typeof HostileBox.start>[0], box: HostileBox): Promise<void> {
  t.like((await box.request('ping')).json as Reply, { ok: true });
}

test.serial(
  '1 a retained command on the device, group and all topics is refused (ERR_RETAINED), never runs, and is not delivered again after a restart',
  async (t) => {
    const { box, rebootRequested } = await boxWithRunDir(t);
    const topics = [`multihead/${box.id}/cmd/reboot`, 'multihead/group/lobby/cmd/reboot', 'multihead/all/cmd/reboot'];
    for (const [i, topic] of topics.entries()) {
      await send(box, topic, { id: `retained-${i}` }, address(`retained-${i}`), { retain: true });
      const reply = (await replyOn(box, address(`retained-${i}`), `the refusal of ${topic}`)).json as Reply;
      t.like(reply, { id: `retained-${i}`, command: 'reboot', ok: false, error: { code: 'ERR_RETAINED' } });
    }
    t.false(rebootRequested(), 'no reboot was requested');

    // The broker still holds all three retained: a restarted box must not be handed them.
    await box.stop();
    await box.boot();
    await drained(t, box);
    for (const [i] of topics.entries()) {
      t.is(
        repliesUnder(box, address(`retained-${i}`)).length,
        1,
        `retained-${i} was answered once, before the restart`,
      );
    }
    t.false(rebootRequested(), 'no reboot after the restart either');
    const watcher = await FleetClient.connect(t, box.broker.url);
    await watcher.subscribe(...topics);
    await watcher.next((m) => m.topic === topics[2] && m.retain, 5000, 'the retained command still on the broker');
  },
);

test.serial(
  '1 a retained command without a reply address is reported as command.unanswered and never runs',
  async (t) => {
    const box = await HostileBox.start(t);
    await box.fleet.publish(`multihead/${box.id}/cmd/restart`, '', { retain: true });
    await box.fleet.next(() => unanswered(box).length > 0, 10_000, 'command.unanswered');
    t.like(unanswered(box)[0], { details: { command: 'restart', code: 'ERR_RETAINED' } });
    await drained(t, box);
    t.is(box.child?.exitCode, null, 'the box did not restart');
    t.is(box.exits, 0);
  },
);

test.serial(
  "4 a reply address outside <prefix>/replies/ (the box's own config/desired) is never published to, and the request never runs",
  async (t) => {
    const { box, rebootRequested } = await boxWithRunDir(t);
    const desired = `multihead/${box.id}/config/desired`;
    await send(box, `multihead/${box.id}/cmd/ping`, {}, desired);
    await send(box, `multihead/${box.id}/cmd/reboot`, {}, 'multihead/other-box/cmd/restart');
    await send(box, `multihead/${box.id}/cmd/reboot`, { replyTo: desired }, undefined);
    await box.fleet.next(() => unanswered(box).length >= 3, 10_000, 'three command.unanswered events');
    t.deepEqual(
      unanswered(box).map((e) => e.details.code),
      ['ERR_REPLY_TOPIC_NOT_ALLOWED', 'ERR_REPLY_TOPIC_NOT_ALLOWED', 'ERR_REPLY_TOPIC_NOT_ALLOWED'],
    );
    await drained(t, box);
    t.deepEqual(box.fleet.on(desired), [], 'nothing was published on config/desired');
    t.deepEqual(box.fleet.on('multihead/other-box/cmd/restart'), []);
    t.false(rebootRequested());
  },
);

test.serial(
  "4 through the documented ACL a stolen device credential cannot forge another device's reply",
  async (t) => {
    const doc = readFileSync(new URL('../../docs/mqtt.md', import.meta.url), 'utf8');
    const acl = /```\n([\s\S]*?)```/.exec(doc.slice(doc.indexOf('## Broker ACL')))?.[1];
    if (!acl) throw new Error('docs/mqtt.md: no ACL block under "## Broker ACL"');
    const users = [
      { username: 'kiosk-h', password: 'pw-kiosk' },
      { username: 'fleet', password: 'pw-fleet' },
    ];
    const box = await HostileBox.start(t, {
      broker: { users, acl },
      fleetAuth: { username: 'fleet', password: 'pw-fleet' },
      file: { mqtt: { username: 'kiosk-h', password: 'pw-kiosk' } },
    });
    // The box answers through the ACL.
    t.like((await box.request('ping')).json as Reply, { ok: true, device: 'kiosk-h' });

    const rogue = await FleetClient.connect(t, box.broker.url, {
      username: 'kiosk-h',
      password: 'pw-kiosk',
      clientId: 'rogue',
    });
    const forged = JSON.stringify({ id: 'x', device: 'other-box', command: 'ping', ok: true, result: { pong: true } });
    const targets = [
      'multihead/replies/fleet/t/other-box',
      'multihead/replies/fleet/t',
      'multihead/replies/fleet/t/other-box/kiosk-h',
      'multihead/replies/kiosk-h/t/other-box',
    ];
    for (const topic of targets) {
      for (const qos of [0, 1] as const) await rogue.client.publishAsync(topic, forged, { qos }).catch(() => {});
    }
    // A reply naming the credential's own device goes through: the silence above means something.
    await rogue.publish('multihead/replies/fleet/t/kiosk-h', 'marker');
    await box.fleet.next((m) => m.topic === 'multihead/replies/fleet/t/kiosk-h', 5000, 'the own-device marker');
    await drained(t, box);
    for (const topic of targets) t.deepEqual(box.fleet.on(topic), [], `${topic} never reached the fleet`);
  },
);

test.serial('5 a reused id with another command is refused (ERR_DUPLICATE_ID) and does not run', async (t) => {
  const { box, rebootRequested } = await boxWithRunDir(t);
  const replyTo = address();
  await send(box, `multihead/${box.id}/cmd/ping`, { id: 'job-1' }, replyTo);
  await box.fleet.next(() => repliesUnder(box, replyTo).length === 1, 10_000, 'the ping reply');
  await send(box, `multihead/${box.id}/cmd/reboot`, { id: 'job-1' }, replyTo);
  await box.fleet.next(() => repliesUnder(box, replyTo).length === 2, 10_000, 'the reboot reply');
  const [first, second] = repliesUnder(box, replyTo).map((m) => m.json as Reply);
  t.like(first, { command: 'ping', ok: true });
  t.like(second, { id: 'job-1', command: 'reboot', ok: false, error: { code: 'ERR_DUPLICATE_ID' } });
  // The same id with the same request again is still the replay it always was: same reply, no second run.
  await send(box, `multihead/${box.id}/cmd/ping`, { id: 'job-1' }, replyTo);
  await box.fleet.next(() => repliesUnder(box, replyTo).length === 3, 10_000, 'the replayed ping');
  t.deepEqual(repliesUnder(box, replyTo)[2]?.json, first);
  t.false(rebootRequested(), 'the reboot never ran');
});

test.serial('6 an expired request delivered late to an offline box with a persistent session never runs', async (t) => {
  const { box, rebootRequested } = await boxWithRunDir(t);
  await box.stop();
  const late = address('late');
  const fresh = address('fresh');
  await send(box, `multihead/${box.id}/cmd/reboot`, { id: 'late' }, late, { properties: { messageExpiryInterval: 1 } });
  await send(box, `multihead/${box.id}/cmd/ping`, { id: 'fresh' }, fresh, {
    properties: { messageExpiryInterval: 600 },
  });
  // Time passing is the attack: the reboot's 1 s expiry runs out while the box is away.
  await sleep(2500);
  await box.boot();
  // Queued requests arrive in order: the later ping answered means the reboot would have been by now.
  const reply = await replyOn(box, fresh, 'the ping queued while the box was away');
  t.like(reply.json as Reply, { id: 'fresh', ok: true });
  const left = reply.packet.properties?.messageExpiryInterval;
  t.true(typeof left === 'number' && left > 0 && left <= 600, `the reply expires with its request (${left})`);
  t.deepEqual(repliesUnder(box, late), []);
  t.false(rebootRequested(), 'the expired reboot never ran');
});

test.serial(
  '7 an oversize publish (over 300 KiB) is refused by the protocol: never delivered to the box, which keeps answering',
  async (t) => {
    const box = await HostileBox.start(t);
    const big = address('big');
    await box.fleet.publish(`multihead/${box.id}/cmd/ping`, Buffer.alloc(400 * 1024, 0x20), {
      properties: { responseTopic: big },
    });
    await drained(t, box);
    // Without the limit the box would have read all 400 KiB and answered ERR_PAYLOAD_TOO_LARGE.
    t.deepEqual(repliesUnder(box, big), [], 'the box never saw it');
    t.is(box.child?.exitCode, null);
    t.false(box.lines.some((l) => l.includes('ERR_PAYLOAD_TOO_LARGE')));
  },
);

test.serial(
  '14 a command the contract lacks (next) is ERR_UNKNOWN_COMMAND; content.status, which the box offers, is in the contract',
  async (t) => {
    const box = await HostileBox.start(t);
    const next = (await box.request('next')).json as Reply;
    t.like(next, { ok: false, error: { code: 'ERR_UNKNOWN_COMMAND' } });
    t.regex(next.error?.message ?? '', /content\.status/);
    const status = (await box.request('content.status')).json as Reply;
    t.like(status, { ok: true, command: 'content.status' });
  },
);

test.serial(
  "14 every reply the real box sends validates against its command's result schema, on a contract reply topic",
  async (t) => {
    const { box } = await boxWithRunDir(t);
    const requests: Array<[string, Record<string, unknown>]> = [
      ['ping', {}],
      ['config.get', {}],
      ['logs.get', { args: { limit: 5 } }],
      ['decode.status', {}],
      ['decode.shared', { args: { on: true } }],
      ['decode.maxDecoders', { args: { max: 4 } }],
      ['content.status', {}],
      ['stop', {}],
      ['screenshot', { args: { width: 64 } }],
      ['reboot', {}],
    ];
    for (const [command, body] of requests) {
      const reply = (await box.request(command, body)).json as Reply;
      t.true(reply.ok, `${command}: ${JSON.stringify(reply.error)}`);
    }
    const counts = assertEveryMessageValid(t, box.fleet.received, { expect: ['State', 'Status', 'CommandReply'] });
    t.true((counts.CommandReply ?? 0) >= requests.length, JSON.stringify(counts));
  },
);
