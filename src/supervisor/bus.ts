export type SupervisorState = 'starting' | 'running' | 'stopping' | 'stopped';

/**
 * How the fleet broker connection stands, from the first attempt on: `broker` is scheme://host:port
 * (never credentials); `detail` is the CONNACK reason (refused) or the socket's error (unreachable).
 */
export type BrokerState =
  | { readonly state: 'connecting' | 'connected'; readonly broker: string }
  | { readonly state: 'refused' | 'unreachable'; readonly broker: string; readonly detail: string };

export type TimeSource = 'adjtimex' | 'timesyncd' | 'none';

/** The wall clock as the content extension's clock watch sees it (status `time`). */
export interface TimeSyncState {
  /** null: no source could tell. */
  readonly synchronized: boolean | null;
  readonly source: TimeSource;
  /** Wall-clock steps seen since start. */
  readonly steps: number;
  /** The newest step: when (after it) and by how much (positive: the clock went forward). */
  readonly lastStep?: { readonly at: string; readonly deltaMs: number };
  /** When the clock was seen synchronised after being unsynchronised or unknown (this run). */
  readonly synchronizedAt?: string;
}

/**
 * Every event on the bus, by name. Extensions talk to each other only through these.
 *
 * The supervisor core knows no feature: events whose payloads are a feature's own types (the
 * display's screens, the addon's decoder status, a content sync job, the configuration) are
 * added to this interface by declaration merging in `src/extensions/bus-events.ts`, which
 * imports those types. The dependency points from the features to the core, never back.
 */
export interface BusEvents {
  /** `leftOut`: non-essential extensions whose start failed; the box runs without them. */
  'supervisor.state': { state: SupervisorState; reason?: string; leftOut?: readonly string[] };
  /** A decoder runs in software although hardware was asked for: once per decoder. */
  'decode.fallback': { decoder: number; source: string; reason: string; midStream: boolean };
  /** A new JPEG preview of an output (status page, MQTT status). */
  'preview.updated': { output: string; jpeg: Buffer; width: number; height: number; at: number };
  /** What an output plays now (a source, the demo, or nothing). */
  'playback.changed': { output: string; source: string | null; reason: string };
  /** Per-output counters, periodically, from whoever drives the outputs (telemetry shows them). */
  'output.stats': { outputs: Array<{ name: string; frames: number; dropped: number }> };
  /** The clock's sync state changed, or it was stepped (schedules were re-evaluated). */
  'time.sync': TimeSyncState;
  /** The fleet broker connection came up or went down (session: the birth's counter). */
  'mqtt.connection': { connected: boolean; session: number; reason?: string };
  /** The broker connection's state changed (a retry that fails the same way is not a change). */
  'mqtt.broker': BrokerState;
  /** The installer screen was drawn anew on these outputs (no content, no demo). */
  'installer.screen': { outputs: string[]; text: string; url: string | null };
  /** The local status endpoint listens (the URL names the bound address and port). */
  'http.listening': { url: string };
  /** Proof-of-play records up to `seq` are durable (MQTT publishes what it has not yet). */
  'proofOfPlay.appended': { seq: number };
}

export type BusListener<K extends keyof BusEvents> = (payload: BusEvents[K]) => void;

/**
 * A typed, synchronous event bus. A listener that throws is reported and skipped, so one
 * extension's bug cannot stop an event reaching the others.
 */
export class EventBus {
  readonly #listeners = new Map<keyof BusEvents, Set<BusListener<never>>>();
  readonly #latest = new Map<keyof BusEvents, unknown>();
  /** For events about one output (an `output` field): the newest payload per output. */
  readonly #latestPerOutput = new Map<keyof BusEvents, Map<string, unknown>>();
  readonly #onListenerError: (event: keyof BusEvents, error: unknown) => void;

  constructor(onListenerError: (event: keyof BusEvents, error: unknown) => void) {
    this.#onListenerError = onListenerError;
  }

  on<K extends keyof BusEvents>(event: K, listener: BusListener<K>): () => void {
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener as BusListener<never>);
    return () => set.delete(listener as BusListener<never>);
  }

  /**
   * The newest payload of `event`, for extensions that start after it was emitted (MQTT and
   * HTTP start after the display has said whether it runs on KMS or virtual outputs).
   */
  latest<K extends keyof BusEvents>(event: K): BusEvents[K] | undefined {
    return this.#latest.get(event) as BusEvents[K] | undefined;
  }

  /**
   * The newest payload of an event about one output, for every output it was emitted for (an
   * extension that starts late learns what each output plays, not only the last one told).
   */
  latestPerOutput<K extends keyof BusEvents>(event: K): Array<BusEvents[K]> {
    return [...(this.#latestPerOutput.get(event)?.values() ?? [])] as Array<BusEvents[K]>;
  }

  emit<K extends keyof BusEvents>(event: K, payload: BusEvents[K]): void {
    this.#latest.set(event, payload);
    const output = (payload as { output?: unknown }).output;
    if (typeof output === 'string') {
      let perOutput = this.#latestPerOutput.get(event);
      if (!perOutput) {
        perOutput = new Map();
        this.#latestPerOutput.set(event, perOutput);
      }
      perOutput.set(output, payload);
    }
    for (const listener of this.#listeners.get(event) ?? []) {
      try {
        (listener as BusListener<K>)(payload);
      } catch (error) {
        this.#onListenerError(event, error);
      }
    }
  }
}
