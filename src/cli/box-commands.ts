import type { LogEntry } from '../log/ring.ts';
import type { StatusDocument } from '../status/status.ts';
import type { EndpointClient } from './endpoint-client.ts';
import { duration, facts, table } from './table.ts';

/** `multihead status`, `outputs` and `logs`: what the local supervisor says, through its status endpoint. */

interface HealthBody {
  healthy: boolean;
  state: string;
  reasons: string[];
  broker: string;
}

interface OutputRow {
  name: string;
  mode: string | null;
  source: string | null;
  decoder: number | null;
  playing: boolean;
  frames: number | null;
  dropped: number | null;
  preview: { at: number; width: number; height: number } | null;
}

type Write = (text: string) => void;

export async function statusShow(client: EndpointClient, json: boolean, write: Write): Promise<void> {
  const [status, health] = (await Promise.all([client.json('/status'), client.json('/healthz', [200, 503])])) as [
    StatusDocument,
    HealthBody,
  ];
  if (json) {
    write(`${JSON.stringify({ status, health }, null, 2)}\n`);
    return;
  }
  const display =
    status.display.mode === 'kms'
      ? `KMS ${status.display.device ?? ''}${status.display.driver ? ` (${status.display.driver})` : ''}`
      : status.display.mode === 'virtual'
        ? `virtual outputs (${status.display.reason ?? 'no KMS device'})`
        : 'not ready';
  const decoders = status.decode?.decoders ?? [];
  write(
    facts([
      ['Device', `${status.device.name} (${status.device.id})`],
      ['Health', `${health.state}${health.reasons.length ? `: ${health.reasons.join('; ')}` : ''}`],
      ['Supervisor', `${status.supervisor}, up ${duration(status.uptimeS)}`],
      ['Display', display],
      ['Broker', health.broker],
      [
        'Decoding',
        status.decode
          ? `${decoders.length} decoder(s), sharing ${status.decode.sharedDecode ? 'on' : 'off'}, at most ${status.decode.maxDecoders}`
          : 'not reported yet',
      ],
      ['Config', status.config.version === null ? 'no fleet config applied' : `fleet version ${status.config.version}`],
      ['Versions', `app ${status.versions.app}, addon ${status.versions.addon}, Node.js ${status.versions.node}`],
    ]),
  );
  if (status.outputs.length > 0) {
    write('\n');
    write(
      table(
        ['output', 'mode', 'decoder', 'source'],
        status.outputs.map((o) => {
          const d = decoders.find((x) => x.id === o.decoder);
          const shared = d && d.consumers.length > 1 ? ' (shared)' : '';
          return [o.name, o.mode ?? '-', o.decoder === null ? '-' : `${o.decoder}${shared}`, o.source ?? 'nothing'];
        }),
      ),
    );
  }
  if (decoders.length > 0) {
    write('\n');
    write(
      table(
        ['decoder', 'path', 'picture', 'outputs', 'state'],
        decoders.map((d) => [
          String(d.id),
          d.hw ? 'hardware' : 'software',
          `${d.codec} ${d.width}x${d.height}`,
          d.consumers.join(', ') || '-',
          d.failure ? `failed: ${d.failure}` : 'running',
        ]),
      ),
    );
  }
}

export async function outputsShow(client: EndpointClient, json: boolean, write: Write): Promise<void> {
  const { outputs } = (await client.json('/outputs')) as { outputs: OutputRow[] };
  if (json) {
    write(`${JSON.stringify(outputs, null, 2)}\n`);
    return;
  }
  if (outputs.length === 0) {
    write('no outputs\n');
    return;
  }
  write(
    table(
      ['output', 'mode', 'state', 'frames', 'dropped', 'decoder', 'preview', 'source'],
      outputs.map((o) => [
        o.name,
        o.mode ?? '-',
        o.playing ? 'playing' : o.source === null ? 'idle' : 'NOT PLAYING',
        o.frames === null ? '-' : String(o.frames),
        o.dropped === null ? '-' : String(o.dropped),
        o.decoder === null ? '-' : String(o.decoder),
        o.preview ? `${new URL(`/outputs/${encodeURIComponent(o.name)}/preview.jpg`, client.base)}` : '-',
        o.source ?? 'nothing',
      ]),
    ),
  );
}

export interface LogsOptions {
  readonly json: boolean;
  readonly follow: boolean;
  readonly level?: string | undefined;
  readonly lines?: number | undefined;
  readonly signal?: AbortSignal;
}

/** One log entry for a person: time, level, component, message, then the other fields. */
export function logLine(entry: LogEntry): string {
  const { time, level, component, msg, pid: _pid, ...rest } = entry;
  const extra = Object.keys(rest).length > 0 ? ` ${JSON.stringify(rest)}` : '';
  return `${time} ${level.toUpperCase().padEnd(5)} ${component ?? '-'}: ${msg ?? ''}${extra}\n`;
}

export async function logsShow(client: EndpointClient, options: LogsOptions, write: Write): Promise<void> {
  const query = new URLSearchParams();
  if (options.level) query.set('level', options.level);
  if (options.lines !== undefined) query.set('lines', String(options.lines));
  const print = (entry: LogEntry): void => write(options.json ? `${JSON.stringify(entry)}\n` : logLine(entry));
  if (!options.follow) {
    const { lines } = (await client.json(`/logs?${query}`)) as { lines: LogEntry[] };
    for (const entry of lines) print(entry);
    return;
  }
  query.set('follow', '1');
  await client.events(`/logs?${query}`, (data) => print(JSON.parse(data) as LogEntry), options.signal);
}
