import type { ExecutionContext } from 'ava';
import { type ContractSchemaName, contractLoad } from '../../src/mqtt/contract.ts';
import type { Received } from './mosquitto.ts';

const contract = contractLoad();

/**
 * The schema a device-published topic must match, or undefined for a topic the contract does
 * not have (which is itself a failure: the device may publish only what the contract names).
 * Topics the fleet writes (`config/desired`, `cmd/...`) are not the device's and return null.
 */
export function schemaForTopic(
  topic: string,
  prefix: string,
  replyPrefix: string,
): ContractSchemaName | null | undefined {
  if (topic.startsWith(`${replyPrefix}/`)) return 'CommandReply';
  if (!topic.startsWith(`${prefix}/`)) return undefined;
  const rest = topic.slice(prefix.length + 1).split('/');
  if (rest[0] === 'all' || rest[0] === 'group' || rest[0] === 'replies') return null;
  const [, a, b, ...more] = rest;
  if (more.length > 0) return undefined;
  if (b === undefined) {
    return a === 'state'
      ? 'State'
      : a === 'status'
        ? 'Status'
        : a === 'telemetry'
          ? 'Telemetry'
          : a === 'events'
            ? 'Event'
            : undefined;
  }
  if (a === 'config' && b === 'reported') return 'ReportedConfig';
  if (a === 'config' && b === 'desired') return null;
  if (a === 'cmd') return null;
  if (a === 'jobs') return 'Job';
  return undefined;
}

/**
 * Every message seen under `<prefix>/#` and on reply topics validates against the AsyncAPI
 * schema its topic names, and no topic outside the contract was published. Returns how many
 * device messages were checked, by schema.
 */
export function assertEveryMessageValid(
  t: ExecutionContext,
  received: readonly Received[],
  options: { prefix?: string; replyPrefix?: string } = {},
): Record<string, number> {
  const prefix = options.prefix ?? 'multihead';
  const replyPrefix = options.replyPrefix ?? 'replies';
  const counts: Record<string, number> = {};
  for (const m of received) {
    const schema = schemaForTopic(m.topic, prefix, replyPrefix);
    if (schema === null) continue;
    if (schema === undefined) {
      t.fail(`${m.topic}: not a topic of the contract (${m.text.slice(0, 200)})`);
      continue;
    }
    const result = contract.validate(schema, m.json);
    if (!result.ok) t.fail(`${m.topic} (${schema}) ${m.text.slice(0, 300)}: ${JSON.stringify(result.problems)}`);
    counts[schema] = (counts[schema] ?? 0) + 1;
  }
  t.true(Object.keys(counts).length > 0, 'some device messages were checked');
  return counts;
}
