import type { ExecutionContext } from 'ava';
import { type ContractSchemaName, contractLoad } from '../../src/mqtt/contract.ts';
import type { Received } from './mosquitto.ts';

const contract = contractLoad();

/** What a topic is in the contract: a device message with its schema, one the fleet writes, or none. */
export type TopicKind =
  | { kind: 'device'; schema: ContractSchemaName }
  | { kind: 'reply'; device: string }
  | { kind: 'fleet' }
  | { kind: 'unknown' };

/**
 * What a topic under `<prefix>/` is. Device topics name their schema; replies are
 * `<prefix>/replies/<requester>/<token>/<deviceId>` and nothing else under `replies/` is; topics
 * the fleet writes (`config/desired`, `cmd/...`) are not the device's.
 */
export function topicKind(topic: string, prefix = 'multihead'): TopicKind {
  if (!topic.startsWith(`${prefix}/`)) return { kind: 'unknown' };
  const rest = topic.slice(prefix.length + 1).split('/');
  if (rest[0] === 'replies') {
    return rest.length === 4 && rest.every((level) => level.length > 0)
      ? { kind: 'reply', device: rest[3] as string }
      : { kind: 'unknown' };
  }
  if (rest[0] === 'all' || rest[0] === 'group') return { kind: 'fleet' };
  const [, a, b, ...more] = rest;
  if (more.length > 0 || a === undefined) return { kind: 'unknown' };
  const single: Record<string, ContractSchemaName> = {
    state: 'State',
    status: 'Status',
    telemetry: 'Telemetry',
    events: 'Event',
  };
  if (b === undefined) return single[a] ? { kind: 'device', schema: single[a] } : { kind: 'unknown' };
  if (a === 'config' && b === 'reported') return { kind: 'device', schema: 'ReportedConfig' };
  if ((a === 'config' && b === 'desired') || a === 'cmd') return { kind: 'fleet' };
  if (a === 'jobs') return { kind: 'device', schema: 'Job' };
  return { kind: 'unknown' };
}

export interface CheckOptions {
  readonly prefix?: string;
  /**
   * What must be among the checked messages, at least once each: schema names, or
   * `CommandReply` for replies. A check that saw none of what it is about proves nothing.
   */
  readonly expect: readonly ContractSchemaName[];
}

/**
 * Every message seen under `<prefix>/#` validates against the AsyncAPI schema its topic names
 * (a reply against its command's result schema, and its last topic level is the device that
 * sent it), and no topic outside the contract was published. Returns how many device messages
 * were checked, by schema.
 */
export function assertEveryMessageValid(
  t: ExecutionContext,
  received: readonly Received[],
  options: CheckOptions,
): Record<string, number> {
  const prefix = options.prefix ?? 'multihead';
  const counts: Record<string, number> = {};
  for (const m of received) {
    const what = topicKind(m.topic, prefix);
    if (what.kind === 'fleet') continue;
    if (what.kind === 'unknown') {
      t.fail(`${m.topic}: not a topic of the contract (${m.text.slice(0, 200)})`);
      continue;
    }
    const schema: ContractSchemaName = what.kind === 'reply' ? 'CommandReply' : what.schema;
    const result = what.kind === 'reply' ? contract.validateReply(m.json) : contract.validate(schema, m.json);
    if (!result.ok) t.fail(`${m.topic} (${schema}) ${m.text.slice(0, 300)}: ${JSON.stringify(result.problems)}`);
    if (what.kind === 'reply' && (m.json as { device?: unknown } | undefined)?.device !== what.device) {
      t.fail(
        `${m.topic}: a reply whose topic names device ${what.device} but whose payload says ${m.text.slice(0, 200)}`,
      );
    }
    counts[schema] = (counts[schema] ?? 0) + 1;
  }
  const missing = options.expect.filter((schema) => !counts[schema]);
  t.deepEqual(missing, [], `every expected kind of message was seen and checked (${JSON.stringify(counts)})`);
  return counts;
}
