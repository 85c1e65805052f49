import type { Config } from '../config/schema.ts';
import type { Screens } from '../display/screens.ts';
import type { DecodeStatus } from '../native/addon.ts';
import type { BusEvents, EventBus, SupervisorState } from '../supervisor/bus.ts';

/**
 * booting: not yet showing frames; ok: every output with content plays; degraded: something a
 * technician should look at while screens still play; error: content is assigned and nothing plays.
 */
export type HealthState = 'booting' | 'ok' | 'degraded' | 'error';

export interface OutputHealth {
  readonly name: string;
  readonly source: string | null;
  readonly playing: boolean;
  readonly frames: number | null;
  readonly dropped: number | null;
}

export interface Health {
  readonly state: HealthState;
  /** Why the state is not ok, one short sentence each, most important first. */
  readonly reasons: string[];
  readonly outputs: OutputHealth[];
  /** off: no mqtt.url configured. */
  readonly broker: 'off' | 'connected' | 'disconnected';
  /** An output has shown a decoded frame (sticky): the moment systemd hears READY=1. */
  readonly firstFrame: boolean;
  /** The display is ready and no output has anything to play (a slate is all there is). */
  readonly nothingToPlay: boolean;
}

export interface HealthDeps {
  readonly bus: EventBus;
  readonly config: Config;
}

type OutputStats = BusEvents['output.stats']['outputs'];

/**
 * One judgement of "is this box doing its job", derived only from bus events, shared by the LED,
 * /healthz and systemd's STATUS= line so the three never disagree. Frame counters come from
 * `output.stats`: an output plays when its frame count moved since the previous sample, so a
 * decoder that died or a frozen presentation loop both show as "no new frames".
 */
export class HealthTracker {
  readonly #config: Config;
  readonly #unsubscribe: Array<() => void> = [];
  readonly #listeners = new Set<(health: Health) => void>();
  readonly #sources = new Map<string, string | null>();
  readonly #fallbacks = new Map<number, string>();
  #supervisor: SupervisorState;
  #screens: Screens | undefined;
  #kmsConnectors: string[] | undefined;
  #decode: DecodeStatus | undefined;
  #stats: OutputStats | undefined;
  #statsBefore: OutputStats | undefined;
  #broker: boolean | undefined;
  #firstFrame = false;
  #fingerprint = '';

  constructor(deps: HealthDeps) {
    this.#config = deps.config;
    const { bus } = deps;
    // Extensions that start after the display still learn what was said before them.
    this.#supervisor = bus.latest('supervisor.state')?.state ?? 'starting';
    this.#screens = bus.latest('display.ready')?.screens;
    this.#kmsConnectors = bus.latest('display.outputs')?.outputs.map((o) => o.connector);
    this.#decode = bus.latest('decode.status')?.status;
    this.#broker = bus.latest('mqtt.connection')?.connected;
    const changed = bus.latest('playback.changed');
    if (changed) this.#sources.set(changed.output, changed.source);
    const fallback = bus.latest('decode.fallback');
    if (fallback) this.#fallbacks.set(fallback.decoder, fallback.reason);
    const stats = bus.latest('output.stats');
    if (stats) this.#statsTake(stats.outputs);
    this.#unsubscribe.push(
      bus.on('supervisor.state', ({ state }) => this.#update(() => (this.#supervisor = state))),
      bus.on('display.ready', ({ screens }) => this.#update(() => (this.#screens = screens))),
      bus.on('display.outputs', ({ outputs }) =>
        this.#update(() => (this.#kmsConnectors = outputs.map((o) => o.connector))),
      ),
      bus.on('playback.changed', ({ output, source }) => this.#update(() => this.#sources.set(output, source))),
      bus.on('decode.status', ({ status }) => this.#update(() => (this.#decode = status))),
      bus.on('decode.fallback', ({ decoder, reason }) => this.#update(() => this.#fallbacks.set(decoder, reason))),
      bus.on('output.stats', ({ outputs }) => this.#update(() => this.#statsTake(outputs))),
      bus.on('mqtt.connection', ({ connected }) => this.#update(() => (this.#broker = connected))),
    );
    this.#fingerprint = JSON.stringify(this.assess());
  }

  assess(): Health {
    const broker = this.#config.mqtt.url === '' ? 'off' : this.#broker ? 'connected' : 'disconnected';
    const base = { broker, firstFrame: this.#firstFrame } as const;
    if (this.#supervisor !== 'running') {
      return {
        ...base,
        state: 'booting',
        reasons: [`supervisor ${this.#supervisor}`],
        outputs: [],
        nothingToPlay: false,
      };
    }
    const screens = this.#screens;
    if (!screens) {
      return { ...base, state: 'booting', reasons: ['display not ready'], outputs: [], nothingToPlay: false };
    }
    const decoders = this.#decode?.decoders ?? [];
    const decoderOf = new Map<string, (typeof decoders)[number]>();
    for (const d of decoders) for (const c of d.consumers) decoderOf.set(c, d);
    const latest = new Map((this.#stats ?? []).map((s) => [s.name, s]));
    const before = new Map((this.#statsBefore ?? []).map((s) => [s.name, s]));
    const problems: string[] = [];
    const outputs: OutputHealth[] = screens.outputs().map(({ name }) => {
      const decoder = decoderOf.get(name);
      const source = this.#sources.get(name) ?? decoder?.source ?? null;
      const now = latest.get(name);
      const then = before.get(name);
      const moving = now !== undefined && (then ? now.frames > then.frames : now.frames > 0);
      if (source !== null && decoder?.failure)
        problems.push(`${name}: decoder ${decoder.id} failed: ${decoder.failure}`);
      else if (source !== null && now !== undefined && !moving) problems.push(`${name}: no new frames`);
      return {
        name,
        source,
        playing: source !== null && moving && !decoder?.failure,
        frames: now?.frames ?? null,
        dropped: now?.dropped ?? null,
      };
    });
    const assigned = outputs.filter((o) => o.source !== null);
    const playing = outputs.filter((o) => o.playing);
    const nothingToPlay = assigned.length === 0;
    const result = (state: HealthState, reasons: string[]): Health => ({
      ...base,
      state,
      reasons,
      outputs,
      nothingToPlay,
    });
    // Playback assigns content right after display.ready, and the first output counters follow
    // within seconds: judging before them would flash "nothing to play" at every boot.
    if (this.#stats === undefined) return result('booting', ['waiting for the first frame']);
    if (!nothingToPlay && playing.length === 0) return result('error', ['nothing playing', ...problems]);
    const degraded = [...problems];
    if (nothingToPlay) degraded.push('nothing to play: no content assigned');
    for (const o of outputs) if (!nothingToPlay && o.source === null) degraded.push(`${o.name}: no content`);
    for (const missing of this.#missingOutputs()) degraded.push(`${missing}: configured but not driven`);
    const fellBack = new Map(this.#fallbacks);
    for (const d of decoders) if (d.hwFallback && d.hwMode !== 'software') fellBack.set(d.id, d.hwFallback);
    for (const [id, reason] of fellBack) degraded.push(`decoder ${id} decodes in software: ${reason}`);
    return result(degraded.length > 0 ? 'degraded' : 'ok', degraded);
  }

  /** Called with the new judgement whenever state, reasons, broker or first frame change. */
  onChange(listener: (health: Health) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  close(): void {
    for (const off of this.#unsubscribe.splice(0)) off();
    this.#listeners.clear();
  }

  /** Connectors the `outputs` setting names that KMS does not drive (unplugged or refused). */
  #missingOutputs(): string[] {
    const wanted = this.#config.outputs;
    if (wanted === 'auto' || this.#screens?.kind !== 'kms') return [];
    const driven = new Set(this.#kmsConnectors ?? []);
    return wanted.filter((o) => o.enabled !== false && !driven.has(o.connector)).map((o) => o.connector);
  }

  #statsTake(outputs: OutputStats): void {
    this.#statsBefore = this.#stats;
    this.#stats = outputs;
    if (outputs.some((o) => o.frames > 0)) this.#firstFrame = true;
  }

  #update(change: () => void): void {
    change();
    const health = this.assess();
    const fingerprint = JSON.stringify({
      ...health,
      outputs: health.outputs.map((o) => [o.name, o.source, o.playing]),
    });
    if (fingerprint === this.#fingerprint) return;
    this.#fingerprint = fingerprint;
    for (const listener of this.#listeners) listener(health);
  }
}

/** One line for systemd's STATUS= and logs: what plays, and the first thing wrong. */
export function healthSummary(health: Health): string {
  const playing = health.outputs.filter((o) => o.playing).map((o) => o.name);
  const parts: string[] = [];
  if (health.state === 'booting') parts.push(`starting: ${health.reasons[0] ?? ''}`.trim());
  else if (health.nothingToPlay) parts.push(`nothing to play on ${health.outputs.length} output(s)`);
  else parts.push(`playing on ${playing.length}/${health.outputs.length} output(s)`);
  if (health.state === 'degraded' || health.state === 'error') {
    const first = health.reasons.find((r) => r !== 'nothing playing') ?? health.reasons[0];
    parts.push(`${health.state}${first ? `: ${first}` : ''}`);
  }
  if (health.broker !== 'off') parts.push(`broker ${health.broker}`);
  // STATUS= is one line; a reason quoting a URL or error text must not break it.
  return parts.join('; ').replace(/[\r\n]+/g, ' ');
}
