/** Every topic of the contract (docs/asyncapi.yaml), built in one place. */
export interface DeviceTopics {
  readonly root: string;
  readonly state: string;
  readonly status: string;
  readonly telemetry: string;
  readonly events: string;
  readonly desired: string;
  readonly reported: string;
  /** Job documents (content sync): `<root>/jobs/<jobId>`. */
  readonly job: (jobId: string) => string;
  /** What the device subscribes to. */
  readonly subscriptions: readonly string[];
}

export function deviceTopics(prefix: string, deviceId: string, groups: readonly string[]): DeviceTopics {
  const root = `${prefix}/${deviceId}`;
  return {
    root,
    state: `${root}/state`,
    status: `${root}/status`,
    telemetry: `${root}/telemetry`,
    events: `${root}/events`,
    desired: `${root}/config/desired`,
    reported: `${root}/config/reported`,
    job: (jobId) => `${root}/jobs/${jobId}`,
    subscriptions: [
      `${root}/cmd/+`,
      `${root}/config/desired`,
      `${prefix}/all/cmd/+`,
      ...groups.map((group) => `${prefix}/group/${group}/cmd/+`),
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
