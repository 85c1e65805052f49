import type { Config } from '../config/schema.ts';
import type { CecState } from '../display/cec.ts';
import { type PowerShown, powerShown } from '../display/cec-parse.ts';
import { redactValue } from '../log/redact.ts';
import type { DecodeStatus, MonitorInfo } from '../native/addon.ts';
import type { BusEvents, EventBus, SupervisorState, TimeSyncState } from '../supervisor/bus.ts';
import { type HealthState, HealthTracker, type OutputHealth } from './health.ts';

/** The status document: retained on MQTT `status`, served by the local status endpoint. */
export interface StatusDocument {
  device: { id: string; name: string; groups: string[] };
  versions: { app: string; addon: string; node: string };
  startedAt: string;
  uptimeS: number;
  supervisor: SupervisorState;
  /** The supervisor's one health judgement (the LED, /healthz and systemd show the same). */
  health: { state: HealthState; reasons: string[] };
  display: { mode: 'kms' | 'virtual' | 'unknown'; device?: string; driver?: string; reason?: string };
  outputs: Array<{
    name: string;
    mode?: string;
    source: string | null;
    decoder: number | null;
    /** From the health judgement: new frames as expected, or the coded reason why not. */
    video?: { state: 'ok' | 'error'; code?: string; message?: string };
    /** The monitor on the connector, from its EDID (KMS outputs; null: none readable). */
    monitor?: { manufacturer: string; productCode: number; name?: string; serial?: string } | null;
    /**
     * Whether the screen is lit (absent on virtual outputs): on; off (DPMS, `display.power`);
     * standby (the TV said so over HDMI-CEC); unknown (DPMS on, the TV behind its CEC adapter
     * did not say).
     */
    power?: PowerShown;
    /** Outputs with an HDMI-CEC adapter: which, the TV's power as last read back, the last problem. */
    cec?: CecState;
    /** Degrees the picture is turned clockwise, and how it is sized (once something plays). */
    rotation?: number;
    layout?: { fit: string; anchor: string; background: string };
  }>;
  decode: {
    sharedDecode: boolean;
    maxDecoders: number;
    decoders: Array<{
      id: number;
      source: string;
      consumers: string[];
      hw: boolean;
      codec: string;
      width: number;
      height: number;
      failure?: string;
      failureCode?: string;
      /** Joined by an output beyond `decode.maxDecoders` (sharing forced although `decode.shared` is off). */
      forcedShared?: boolean;
    }>;
  } | null;
  config: { version: number | null };
  /** The wall clock: synchronised or not (and by what), and steps seen (null until the content extension starts). */
  time: TimeSyncState | null;
  /** The running firmware and the A/B slots (from the update extension; absent without it). */
  firmware?: BusEvents['firmware.status'];
}

export interface StatusDeps {
  readonly bus: EventBus;
  readonly config: Config;
  readonly versions: StatusDocument['versions'];
  /** When the supervisor started (epoch ms); uptime counts from here. */
  readonly startedAt: number;
  readonly now?: () => number;
}

/**
 * Keeps the status document current from bus events. Other extensions never call it: they
 * emit what they do, and every reader (MQTT, HTTP, CLI) sees the same document. Counters that
 * change every frame (fps, frames) are telemetry, not status, so the document only changes
 * when something a person would notice changes.
 */
export class StatusTracker {
  readonly #deps: StatusDeps;
  readonly #now: () => number;
  readonly #unsubscribe: Array<() => void> = [];
  readonly #listeners = new Set<() => void>();
  #supervisor: SupervisorState;
  #display: BusEvents['display.ready'] | undefined;
  #outputs: BusEvents['display.outputs']['outputs'] = [];
  #monitors: NonNullable<BusEvents['display.outputs']['monitors']> = {};
  #decode: DecodeStatus | undefined;
  #configVersion: number | null = null;
  #time: TimeSyncState | null = null;
  #firmware: BusEvents['firmware.status'] | undefined;
  readonly #health: HealthTracker;
  #last = '';

  constructor(deps: StatusDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
    const { bus } = deps;
    this.#health = HealthTracker.acquire({ bus, config: deps.config });
    // Extensions that start after the display still learn what it said (the bus keeps the newest).
    this.#supervisor = bus.latest('supervisor.state')?.state ?? 'starting';
    this.#display = bus.latest('display.ready');
    this.#outputs = bus.latest('display.outputs')?.outputs ?? [];
    this.#monitors = bus.latest('display.outputs')?.monitors ?? {};
    this.#decode = bus.latest('decode.status')?.status;
    this.#configVersion = bus.latest('config.applied')?.version ?? null;
    this.#time = bus.latest('time.sync') ?? null;
    this.#firmware = bus.latest('firmware.status');
    this.#unsubscribe.push(
      bus.on('firmware.status', (firmware) => this.#update(() => (this.#firmware = firmware))),
      bus.on('supervisor.state', ({ state }) => this.#update(() => (this.#supervisor = state))),
      bus.on('display.ready', (ready) => this.#update(() => (this.#display = ready))),
      bus.on('display.outputs', ({ outputs, monitors }) =>
        this.#update(() => {
          this.#outputs = outputs;
          this.#monitors = monitors ?? {};
        }),
      ),
      bus.on('decode.status', ({ status }) => this.#update(() => (this.#decode = status))),
      // Read from the screens when the document is made; this says when to look again.
      bus.on('display.power', () => this.#update(() => {})),
      bus.on('display.cec', () => this.#update(() => {})),
      bus.on('config.applied', ({ version }) => this.#update(() => (this.#configVersion = version))),
      bus.on('time.sync', (time) => this.#update(() => (this.#time = time))),
      this.#health.onChange(() => this.#update(() => {})),
    );
    this.#last = this.#fingerprint();
  }

  /** The newest decoder status (with its counters), for telemetry. */
  get decodeStatus(): DecodeStatus | undefined {
    return this.#decode;
  }

  /** Sets the applied desired-config version known at start (before any config.applied event). */
  configVersionSet(version: number | null): void {
    this.#update(() => (this.#configVersion = version));
  }

  /** Redacted: sources may be URLs with credentials or signatures in them. */
  document(): StatusDocument {
    return redactValue(this.#documentRaw()) as StatusDocument;
  }

  #documentRaw(): StatusDocument {
    const { config, versions, startedAt } = this.#deps;
    const display = this.#display;
    const decoders = this.#decode?.decoders ?? [];
    // An output's source is the decoder it consumes; outputs the display does not drive
    // (virtual outputs) appear through their decoders.
    const consumerOf = new Map<string, { source: string; decoder: number }>();
    for (const d of decoders) for (const c of d.consumers) consumerOf.set(c, { source: d.source, decoder: d.id });
    const health = this.#health.assess();
    const healthOf = new Map(health.outputs.map((o) => [o.name, o]));
    const screens = display?.screens;
    // The display's outputs are the list; without any (not started), the decoders' consumers.
    // Consumers are not listed beside driven outputs: `play#1` or `content#2:...` is no output.
    const driven = screens?.outputs().map((o) => o.name) ?? [];
    const names = [
      ...new Set([...this.#outputs.map((o) => o.connector), ...(driven.length > 0 ? driven : consumerOf.keys())]),
    ].sort();
    const shownOn = (name: string): string => screens?.showing?.(name) ?? name;
    const modeOf = new Map(this.#outputs.map((o) => [o.connector, o.mode]));
    return {
      device: { id: config.device.id, name: config.device.name, groups: [...config.device.groups] },
      versions: { ...versions },
      startedAt: new Date(startedAt).toISOString(),
      uptimeS: Math.max(0, Math.floor((this.#now() - startedAt) / 1000)),
      supervisor: this.#supervisor,
      health: { state: health.state, reasons: health.reasons },
      display:
        display === undefined
          ? { mode: 'unknown' }
          : display.mode === 'kms'
            ? {
                mode: 'kms',
                device: display.device.path,
                ...(display.device.driver ? { driver: display.device.driver } : {}),
              }
            : { mode: 'virtual', reason: display.reason },
      outputs: names.map((name) => {
        const mode = modeOf.get(name);
        const playing = consumerOf.get(shownOn(name)) ?? consumerOf.get(name);
        const judged = healthOf.get(name);
        const video = videoState(judged);
        const placed = screens?.placed?.(name);
        const monitor = this.#monitors[name];
        const cec = screens?.cecState?.(name);
        return {
          name,
          ...(mode ? { mode: `${mode.width}x${mode.height}@${mode.refresh}` } : {}),
          ...(monitor !== undefined ? { monitor: monitorFacts(monitor) } : {}),
          // A virtual output has no screen to ask.
          ...(screens?.kind === 'kms' && mode
            ? { power: powerOf(screens.powered?.(name) !== false, cec), ...(cec ? { cec } : {}) }
            : {}),
          ...(placed ? { rotation: placed.rotation, layout: { ...placed.layout } } : {}),
          // Health follows playback.changed at once; the decoder status only every minute.
          source: judged ? judged.source : (playing?.source ?? null),
          decoder: playing?.decoder ?? null,
          ...(video ? { video } : {}),
        };
      }),
      decode: this.#decode
        ? {
            sharedDecode: this.#decode.sharedDecode,
            maxDecoders: this.#decode.maxDecoders,
            decoders: decoders.map((d) => ({
              id: d.id,
              source: d.source,
              consumers: [...d.consumers],
              hw: d.hw,
              codec: d.codec,
              width: d.width,
              height: d.height,
              ...(d.failure ? { failure: d.failure } : {}),
              ...(d.failureCode ? { failureCode: d.failureCode } : {}),
              ...(d.forcedShared ? { forcedShared: true } : {}),
            })),
          }
        : null,
      config: { version: this.#configVersion },
      time: this.#time,
      ...(this.#firmware ? { firmware: this.#firmware } : {}),
    };
  }

  /** Called after each change of the document (uptime aside). Returns the unsubscribe function. */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  close(): void {
    for (const off of this.#unsubscribe) off();
    if (this.#unsubscribe.length > 0) this.#health.release();
    this.#unsubscribe.length = 0;
    this.#listeners.clear();
  }

  #update(change: () => void): void {
    change();
    // Against the last document told, not the one before `change`: the shared health tracker may
    // have changed first on the same event.
    const now = this.#fingerprint();
    if (now === this.#last) return;
    this.#last = now;
    for (const listener of this.#listeners) listener();
  }

  #fingerprint(): string {
    const { uptimeS: _, ...rest } = this.document();
    return JSON.stringify(rest);
  }
}

/** An output's video state as status shows it: counters stay out (status changes when a person would notice). */
function videoState(output: OutputHealth | undefined): StatusDocument['outputs'][number]['video'] {
  if (!output) return undefined;
  if (!output.problem) return { state: 'ok' };
  return { state: 'error', code: output.problem.code, message: output.problem.message };
}

/** A monitor's EDID facts as status carries them (no empty fields). */
function monitorFacts(m: MonitorInfo | null): NonNullable<StatusDocument['outputs'][number]['monitor']> | null {
  if (!m) return null;
  return {
    manufacturer: m.manufacturer,
    productCode: m.productCode,
    ...(m.name ? { name: m.name } : {}),
    ...(m.serial ? { serial: m.serial } : {}),
  };
}

/** DPMS, and with a CEC adapter the TV's own report of its power. */
function powerOf(dpmsOn: boolean, cec: CecState | undefined): PowerShown {
  return powerShown(dpmsOn, cec && cec.tv !== 'unknown' ? cec.tv : undefined, cec !== undefined);
}
