import { monitorName } from '../display/monitors.ts';
import type { LogEntry, LogRing } from '../log/ring.ts';
import type { BusEvents, EventBus } from '../supervisor/bus.ts';

/** One message on `events` (components.schemas.Event in docs/asyncapi.yaml). */
export interface DeviceEvent {
  type:
    | 'error'
    | 'display.fallback'
    | 'outputs.changed'
    | 'decoder.failed'
    | 'video.error'
    | 'video.recovered'
    | 'monitor.changed'
    | 'config.applied'
    | 'config.rejected'
    | 'command.unanswered';
  severity: 'info' | 'warn' | 'error';
  at: string;
  message: string;
  details?: Record<string, unknown>;
}

/** The most error lines from before the fleet client started that it sends when it starts. */
const STARTUP_ERRORS_MAX = 20;

export interface EventSourcesDeps {
  readonly bus: EventBus;
  readonly logRing: LogRing;
  readonly emit: (event: DeviceEvent) => void;
  readonly now?: () => number;
}

/**
 * What the fleet hears about without asking: error log lines, the display falling back to
 * virtual outputs, outputs appearing or going (hotplug), decoders that stop with a failure.
 * Returns the function that stops listening.
 */
export function eventSourcesAttach(deps: EventSourcesDeps): () => void {
  const now = deps.now ?? Date.now;
  // Sources, reasons and failures quote URLs that may carry credentials or signatures: every
  // MQTT publish passes the one redaction (MqttConnection.publish), so events are not redacted twice.
  const emit = (event: DeviceEvent): void => deps.emit(event);
  const at = (): string => new Date(now()).toISOString();
  const failed = new Set<number>();
  let outputs: string | undefined;
  const fallback = (ready: BusEvents['display.ready']): void => {
    if (ready.mode !== 'virtual') return;
    emit({
      type: 'display.fallback',
      severity: 'warn',
      at: at(),
      message: `no KMS device; running with virtual outputs: ${ready.reason}`,
      details: { reason: ready.reason },
    });
  };
  const errorSend = (entry: LogEntry, when: string): void =>
    emit({
      type: 'error',
      severity: 'error',
      at: when,
      message: String(entry.msg ?? '').slice(0, 4096),
      details: {
        ...(typeof entry.component === 'string' ? { component: entry.component } : {}),
        ...(typeof entry.code === 'string' ? { code: entry.code } : {}),
        level: entry.level,
      },
    });
  // The fleet client starts after the outputs' first frames: what went wrong before (a KMS
  // card refused, an extension that failed to start) is said now, at the time it was logged.
  for (const entry of deps.logRing.tail({ level: 'error', limit: STARTUP_ERRORS_MAX })) errorSend(entry, entry.time);
  // The display decides before this extension starts; the fleet still hears about it.
  const ready = deps.bus.latest('display.ready');
  if (ready) fallback(ready);
  const offs = [
    deps.bus.on('display.ready', fallback),
    deps.bus.on('display.outputs', ({ outputs: list }) => {
      const names = list.map((o) => o.connector).sort();
      const key = names.join(',');
      if (key === outputs) return;
      const before = outputs === undefined ? [] : outputs.split(',').filter(Boolean);
      outputs = key;
      emit({
        type: 'outputs.changed',
        severity: 'info',
        at: at(),
        message: `outputs now ${names.length > 0 ? names.join(', ') : 'none'}`,
        details: {
          outputs: names,
          added: names.filter((n) => !before.includes(n)),
          removed: before.filter((n) => !names.includes(n)),
        },
      });
    }),
    // The decoder watch tells a failure within a second (decode.failed, with its outputs and
    // code); the periodic status is the net for a decoder whose failure it did not tell.
    deps.bus.on('decode.failed', ({ decoder, source, outputs: on, code, message }) => {
      if (failed.has(decoder)) return;
      failed.add(decoder);
      emit({
        type: 'decoder.failed',
        severity: 'error',
        at: at(),
        message: `decoder ${decoder} (${source}) stopped: ${code}: ${message}${on.length > 0 ? `; ${on.join(', ')} keep their last frame` : ''}`,
        details: { decoder, source, outputs: on, code, failure: message },
      });
    }),
    deps.bus.on('decode.status', ({ status }) => {
      for (const d of status.decoders) {
        if (!d.failure || failed.has(d.id)) continue;
        failed.add(d.id);
        emit({
          type: 'decoder.failed',
          severity: 'error',
          at: at(),
          message: `decoder ${d.id} (${d.source}) stopped: ${d.failure}`,
          details: {
            decoder: d.id,
            source: d.source,
            consumers: d.consumers,
            failure: d.failure,
            ...(d.failureCode ? { code: d.failureCode } : {}),
          },
        });
      }
    }),
    deps.bus.on('video.error', ({ output, code, message }) =>
      emit({
        type: 'video.error',
        severity: 'error',
        at: at(),
        message: `output ${output}: ${code}: ${message}`,
        details: { output, code },
      }),
    ),
    deps.bus.on('video.recovered', ({ output, code }) =>
      emit({
        type: 'video.recovered',
        severity: 'info',
        at: at(),
        message: `output ${output} shows new frames again (after ${code})`,
        details: { output, code },
      }),
    ),
    deps.bus.on('display.monitor.changed', ({ output, before, after }) =>
      emit({
        type: 'monitor.changed',
        severity: 'warn',
        at: at(),
        message: `output ${output}: monitor changed from ${monitorName(before)} to ${after ? monitorName(after) : 'one without EDID'}`,
        details: { output, before, after },
      }),
    ),
    deps.logRing.subscribe((entry: LogEntry) => {
      if (entry.level === 'error' || entry.level === 'fatal') errorSend(entry, at());
    }),
  ];
  return () => {
    for (const off of offs) off();
  };
}
