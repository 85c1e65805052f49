import type { Config } from '../config/schema.ts';
import { consumerOn, type Screens } from '../display/screens.ts';
import type { DecodeStatus } from '../native/addon.ts';
import { INSTALLER_SOURCE_PREFIX } from '../playback/installer-screen.ts';
import type { BusEvents, EventBus, SupervisorState } from '../supervisor/bus.ts';
import { type FrameLoopHealth, frameLoopsCheck } from './frame-loops.ts';

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
  /** Why it shows no new frames: the video engine's or its decoder's ERR_ code and reason. */
  readonly problem?: VideoProblem;
}

/** A coded reason an output shows no new frames (docs/mqtt.md, events `video.error`, `decoder.failed`). */
export interface VideoProblem {
  readonly code: string;
  readonly message: string;
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
  /** The native frame loops and how long since each went round (when polled). */
  readonly frameLoops: FrameLoopHealth['loops'];
  /** A native frame loop is stuck: the systemd watchdog is withheld while this holds. */
  readonly stalled: boolean;
}

export interface HealthDeps {
  readonly bus: EventBus;
  readonly config: Config;
  /** The addon's frame loops; without it (unit tests) stalls are not judged. */
  readonly frameLoops?: () => ReadonlyArray<{ name: string; ageMs: number }>;
  /** How often the frame loops are polled (default 1 s). */
  readonly pollMs?: number;
}

/** The one tracker per bus, and how many readers hold it. */
const shared = new WeakMap<EventBus, { tracker: HealthTracker; holders: number }>();

type OutputStats = BusEvents['output.stats']['outputs'];

/**
 * One judgement of "is this box doing its job", derived from bus events and the native frame
 * loops, and ONE instance of it per supervisor (`HealthTracker.acquire`): the LED, /healthz and
 * /status, the MQTT `status` and systemd's STATUS= line and watchdog all read the same tracker,
 * so they never disagree (a stuck frame loop is an error on all of them). Frame counters come from
 * `output.stats`: an output plays when its frame count moved since the previous sample, so a
 * decoder that died or a frozen presentation loop both show as "no new frames".
 */
export class HealthTracker {
  readonly #config: Config;
  readonly #unsubscribe: Array<() => void> = [];
  readonly #listeners = new Set<(health: Health) => void>();
  readonly #sources = new Map<string, string | null>();
  readonly #fallbacks = new Map<number, string>();
  /** Outputs the engine said show no new frames, until it says they do again. */
  readonly #videoErrors = new Map<string, VideoProblem>();
  /** Outputs whose decoder failed, until they are given something else to show. */
  readonly #decodeFailures = new Map<string, VideoProblem>();
  #supervisor: SupervisorState;
  /** Extensions left out after a failed start: the screens play, but the box is not whole. */
  #leftOut: readonly string[] = [];
  #screens: Screens | undefined;
  #kmsConnectors: string[] | undefined;
  #decode: DecodeStatus | undefined;
  #stats: OutputStats | undefined;
  #statsBefore: OutputStats | undefined;
  #broker: boolean | undefined;
  #firstFrame = false;
  #fingerprint = '';
  #frameLoops: HealthDeps['frameLoops'];
  #loops: FrameLoopHealth = { loops: [], stalled: [] };
  #poll: NodeJS.Timeout | undefined;
  readonly #pollMs: number;

  /**
   * The supervisor's one tracker for `deps.bus`, made by the first reader; give it back with
   * `release()`. A reader that knows the frame loops (the addon) hands them over if the first did not.
   */
  static acquire(deps: HealthDeps): HealthTracker {
    let entry = shared.get(deps.bus);
    if (!entry) {
      entry = { tracker: new HealthTracker(deps), holders: 0 };
      shared.set(deps.bus, entry);
    }
    entry.holders++;
    if (deps.frameLoops && !entry.tracker.#frameLoops) entry.tracker.#frameLoopsWatch(deps.frameLoops);
    return entry.tracker;
  }

  /** Gives back an acquired tracker; the last reader's release closes it. */
  release(): void {
    const entry = shared.get(this.#bus);
    if (entry?.tracker !== this) {
      this.close();
      return;
    }
    entry.holders--;
    if (entry.holders > 0) return;
    shared.delete(this.#bus);
    this.close();
  }

  readonly #bus: EventBus;

  constructor(deps: HealthDeps) {
    this.#config = deps.config;
    this.#pollMs = deps.pollMs ?? 1000;
    const { bus } = deps;
    this.#bus = bus;
    // Extensions that start after the display still learn what was said before them.
    this.#supervisor = bus.latest('supervisor.state')?.state ?? 'starting';
    this.#leftOut = bus.latest('supervisor.state')?.leftOut ?? [];
    this.#screens = bus.latest('display.ready')?.screens;
    this.#kmsConnectors = bus.latest('display.outputs')?.outputs.map((o) => o.connector);
    this.#decode = bus.latest('decode.status')?.status;
    this.#broker = bus.latest('mqtt.connection')?.connected;
    for (const changed of bus.latestPerOutput('playback.changed')) this.#sources.set(changed.output, changed.source);
    const fallback = bus.latest('decode.fallback');
    if (fallback) this.#fallbacks.set(fallback.decoder, fallback.reason);
    const stats = bus.latest('output.stats');
    if (stats) this.#statsTake(stats.outputs);
    this.#unsubscribe.push(
      bus.on('supervisor.state', ({ state, leftOut }) =>
        this.#update(() => {
          this.#supervisor = state;
          this.#leftOut = leftOut ?? [];
        }),
      ),
      bus.on('display.ready', ({ screens }) => this.#update(() => (this.#screens = screens))),
      bus.on('display.outputs', ({ outputs }) =>
        this.#update(() => (this.#kmsConnectors = outputs.map((o) => o.connector))),
      ),
      bus.on('playback.changed', ({ output, source }) =>
        this.#update(() => {
          this.#sources.set(output, source);
          this.#decodeFailures.delete(output);
        }),
      ),
      bus.on('video.error', ({ output, code, message }) =>
        this.#update(() => this.#videoErrors.set(output, { code, message })),
      ),
      bus.on('video.recovered', ({ output }) => this.#update(() => this.#videoErrors.delete(output))),
      bus.on('decode.failed', ({ decoder, outputs, code, message }) =>
        this.#update(() => {
          for (const output of outputs)
            this.#decodeFailures.set(output, { code, message: `decoder ${decoder} failed: ${message}` });
        }),
      ),
      bus.on('decode.status', ({ status }) => this.#update(() => (this.#decode = status))),
      bus.on('decode.fallback', ({ decoder, reason }) => this.#update(() => this.#fallbacks.set(decoder, reason))),
      bus.on('output.stats', ({ outputs }) => this.#update(() => this.#statsTake(outputs))),
      bus.on('mqtt.connection', ({ connected }) => this.#update(() => (this.#broker = connected))),
    );
    this.#fingerprint = this.#fingerprintOf(this.assess());
    if (deps.frameLoops) this.#frameLoopsWatch(deps.frameLoops);
  }

  /** The frame loops polled now (the watchdog asks before every ping), and the judgement updated. */
  frameLoopsNow(): FrameLoopHealth {
    const read = this.#frameLoops;
    if (read) this.#update(() => (this.#loops = frameLoopsCheck(read)));
    return this.#loops;
  }

  assess(): Health {
    const health = this.#assessEvents();
    const { stalled } = this.#loops;
    const loops = { frameLoops: this.#loops.loops, stalled: stalled.length > 0 };
    if (stalled.length === 0) return { ...health, ...loops };
    // A stuck presentation or vblank thread shows nothing new whatever the counters said last.
    return { ...health, ...loops, state: 'error', reasons: [...stalled, ...health.reasons] };
  }

  #frameLoopsWatch(read: NonNullable<HealthDeps['frameLoops']>): void {
    this.#frameLoops = read;
    clearInterval(this.#poll);
    this.#poll = setInterval(() => this.frameLoopsNow(), this.#pollMs);
    this.#poll.unref();
    this.frameLoopsNow();
  }

  #assessEvents(): Omit<Health, 'frameLoops' | 'stalled'> {
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
      // The consumer it was given, else one named after it (the demo's, or a status that says so).
      const decoder = decoderOf.get(consumerOn(screens, name)) ?? decoderOf.get(name);
      const told = this.#sources.get(name) ?? decoder?.source ?? null;
      // The installer screen says "nothing to play" in pictures: it is not content.
      const source = told?.startsWith(INSTALLER_SOURCE_PREFIX) ? null : told;
      const now = latest.get(name);
      const then = before.get(name);
      const moving = now !== undefined && (then ? now.frames > then.frames : now.frames > 0);
      const problem = this.#problemOf(name, source, decoder);
      if (problem) problems.push(`${name}: ${problem.code}: ${problem.message}`);
      else if (source !== null && now !== undefined && !moving) problems.push(`${name}: no new frames`);
      return {
        name,
        source,
        playing: source !== null && moving && !problem,
        frames: now?.frames ?? null,
        dropped: now?.dropped ?? null,
        ...(problem ? { problem } : {}),
      };
    });
    const assigned = outputs.filter((o) => o.source !== null);
    const playing = outputs.filter((o) => o.playing);
    const nothingToPlay = assigned.length === 0;
    const result = (state: HealthState, reasons: string[]): Omit<Health, 'frameLoops' | 'stalled'> => ({
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
    for (const name of this.#leftOut) degraded.push(`extension ${name} failed to start and is left out`);
    if (nothingToPlay) degraded.push('nothing to play: no content assigned');
    for (const o of outputs) if (!nothingToPlay && o.source === null) degraded.push(`${o.name}: no content`);
    for (const missing of this.#missingOutputs()) degraded.push(`${missing}: configured but not driven`);
    const fellBack = new Map(this.#fallbacks);
    for (const d of decoders) if (d.hwFallback && d.hwMode !== 'software') fellBack.set(d.id, d.hwFallback);
    for (const [id, reason] of fellBack) degraded.push(`decoder ${id} decodes in software: ${reason}`);
    return result(degraded.length > 0 ? 'degraded' : 'ok', degraded);
  }

  /** The engine's error first (it names what the screen shows), else its decoder's failure. */
  #problemOf(
    name: string,
    source: string | null,
    decoder: DecodeStatus['decoders'][number] | undefined,
  ): VideoProblem | undefined {
    const video = this.#videoErrors.get(name);
    if (video) return video;
    if (source === null) return undefined;
    const failed = this.#decodeFailures.get(name);
    if (failed) return failed;
    if (decoder?.failure) {
      return {
        code: decoder.failureCode ?? 'ERR_DECODE_FAILED',
        message: `decoder ${decoder.id} failed: ${decoder.failure}`,
      };
    }
    return undefined;
  }

  /** Called with the new judgement whenever state, reasons, broker or first frame change. */
  onChange(listener: (health: Health) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  close(): void {
    clearInterval(this.#poll);
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

  /** What readers care about: not counters, not how many ms a loop has waited. */
  #fingerprintOf(health: Health): string {
    return JSON.stringify({
      ...health,
      outputs: health.outputs.map((o) => [o.name, o.source, o.playing, o.problem?.code]),
      frameLoops: health.frameLoops.map((l) => l.name),
    });
  }

  #update(change: () => void): void {
    change();
    const health = this.assess();
    const fingerprint = this.#fingerprintOf(health);
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
