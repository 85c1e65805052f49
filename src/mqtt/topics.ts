/** Every topic of the contract (docs/asyncapi.yaml), built in one place. */
export interface DeviceTopics {
  readonly root: string;
  readonly state: string;
  readonly status: string;
  readonly telemetry: string;
  readonly events: string;
  readonly desired: string;
  readonly reported: string;
  /** Proof-of-play batches (QoS 1, in sequence order). */
  readonly proofOfPlay: string;
  /** Job documents (content sync): `<root>/jobs/<jobId>`. */
  readonly job: (jobId: string) => string;
  /** What the device subscribes to. */
  readonly subscriptions: readonly Subscription[];
}

export interface Subscription {
  readonly topic: string;
  /**
   * Command topics: the broker must not hand out retained messages on subscribe (MQTT v5
   * Retain Handling 2), and must keep the retain flag of live ones (Retain As Published) so the
   * router can refuse them. A retained command would otherwise run on every reconnect and start.
   */
  readonly commands: boolean;
}

export function deviceTopics(prefix: string, deviceId: string, groups: readonly string[]): DeviceTopics {
  const root = `${prefix}/${deviceId}`;
  const command = (topic: string): Subscription => ({ topic, commands: true });
  return {
    root,
    state: `${root}/state`,
    status: `${root}/status`,
    telemetry: `${root}/telemetry`,
    events: `${root}/events`,
    desired: `${root}/config/desired`,
    reported: `${root}/config/reported`,
    proofOfPlay: `${root}/proofOfPlay`,
    job: (jobId) => `${root}/jobs/${jobId}`,
    subscriptions: [
      command(`${root}/cmd/+`),
      { topic: `${root}/config/desired`, commands: false },
      command(`${prefix}/all/cmd/+`),
      ...groups.map((group) => command(`${prefix}/group/${group}/cmd/+`)),
    ],
  };
}

export type IncomingTopic =
  | { kind: 'command'; command: string; scope: 'device' | 'all' | { group: string } }
  | { kind: 'desired' }
  | { kind: 'other' };

/** What an incoming topic addresses; the broker only delivers what we subscribed to, but a
 * group the device has left since may still deliver from a persistent session. */
export function topicParse(topic: string, prefix: string, deviceId: string, groups: readonly string[]): IncomingTopic {
  if (!topic.startsWith(`${prefix}/`)) return { kind: 'other' };
  const rest = topic.slice(prefix.length + 1).split('/');
  if (rest.length === 3 && rest[0] === deviceId && rest[1] === 'config' && rest[2] === 'desired') {
    return { kind: 'desired' };
  }
  if (rest.length === 3 && rest[0] === deviceId && rest[1] === 'cmd') {
    return { kind: 'command', command: rest[2] as string, scope: 'device' };
  }
  if (rest.length === 3 && rest[0] === 'all' && rest[1] === 'cmd') {
    return { kind: 'command', command: rest[2] as string, scope: 'all' };
  }
  if (rest.length === 4 && rest[0] === 'group' && rest[2] === 'cmd' && groups.includes(rest[1] as string)) {
    return { kind: 'command', command: rest[3] as string, scope: { group: rest[1] as string } };
  }
  return { kind: 'other' };
}

/** Longest reply address a requester may give (the device adds `/<deviceId>`). */
const REPLY_ADDRESS_MAX = 256;
/** One topic level of a reply address: not empty, no wildcard, no NUL (which MQTT forbids). */
const levelValid = (level: string): boolean =>
  level.length > 0 && level.length <= 128 && !/[/+#]/.test(level) && !level.includes(String.fromCharCode(0));

export type ReplyAddress = { ok: true; topic: string } | { ok: false; message: string };

/**
 * Where the reply to a request with reply address `address` goes. Only
 * `<prefix>/replies/<requester>/<token>` is accepted (exactly that depth, no wildcards, no
 * empty level), and the device publishes on `<address>/<deviceId>`: replies never land on a
 * device's own topics, and the broker ACL (`pattern write <prefix>/replies/+/+/%u`) lets a
 * device's credentials write only replies that name that device.
 */
export function replyTopic(address: string, prefix: string, deviceId: string): ReplyAddress {
  const expected = `${prefix}/replies/<requester>/<token>`;
  if (address.length > REPLY_ADDRESS_MAX) {
    return { ok: false, message: `reply address is ${address.length} characters; the limit is ${REPLY_ADDRESS_MAX}` };
  }
  if (!address.startsWith(`${prefix}/replies/`)) {
    return { ok: false, message: `reply address ${JSON.stringify(address)} is not of the form ${expected}` };
  }
  const levels = address.slice(prefix.length + '/replies/'.length).split('/');
  if (levels.length !== 2 || !levels.every(levelValid)) {
    return {
      ok: false,
      message: `reply address ${JSON.stringify(address)} is not of the form ${expected} (two levels, no wildcards)`,
    };
  }
  return { ok: true, topic: `${address}/${deviceId}` };
}
