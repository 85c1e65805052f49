import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import type { HealthTracker } from '../status/health.ts';
import type { BusEvents, EventBus } from '../supervisor/bus.ts';

export interface MetricsDeps {
  readonly bus: EventBus;
  readonly health: HealthTracker;
  readonly mqttConfigured: boolean;
  /** Epoch ms the supervisor started. */
  readonly startedAt: number;
  /** Output counters read now (at scrape time); output.stats alone comes only every few seconds. */
  readonly outputStats?: () => Stats | undefined;
  readonly now?: () => number;
}

type Stats = BusEvents['output.stats']['outputs'];

/**
 * Prometheus metrics for /metrics, read at scrape time from the newest bus events: nothing here
 * runs per frame. Labels carry output names and decoder ids, never sources (a source URL may hold
 * credentials). Counters mirror the native counters, so they are set, not incremented.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly #unsubscribe: () => void;
  /** Recent output counter samples with when they were taken, oldest first, for frames per second. */
  #samples: Array<{ at: number; outputs: Stats }> = [];
  readonly #deps: MetricsDeps;

  constructor(deps: MetricsDeps) {
    const now = deps.now ?? Date.now;
    const { bus, registry } = { bus: deps.bus, registry: this.registry };
    const latestStats = bus.latest('output.stats');
    if (latestStats) this.#samples.push({ at: now(), outputs: latestStats.outputs });
    this.#deps = deps;
    this.#unsubscribe = bus.on('output.stats', ({ outputs }) => this.#sampleAdd(now(), outputs));
    collectDefaultMetrics({ register: registry, prefix: 'multihead_' });
    const samples = () => this.#samples;
    const decoders = () => bus.latest('decode.status')?.status.decoders ?? [];
    const countersSet = (counter: Counter<string>, values: Array<[Record<string, string>, number]>): void => {
      counter.reset();
      for (const [labels, value] of values) counter.inc(labels, value);
    };

    new Gauge({
      name: 'multihead_output_fps',
      help: 'New frames shown per second on each output, between the two newest counter samples.',
      labelNames: ['output'],
      registers: [registry],
      collect() {
        this.reset();
        const all = samples();
        const b = all.at(-1);
        // Against the newest sample at least a second older: a rate over a few ms is noise.
        const a = all.findLast((s) => b !== undefined && b.at - s.at >= 1000);
        if (!a || !b) return;
        const before = new Map(a.outputs.map((o) => [o.name, o.frames]));
        for (const o of b.outputs) {
          const then = before.get(o.name);
          if (then !== undefined) this.set({ output: o.name }, ((o.frames - then) * 1000) / (b.at - a.at));
        }
      },
    });
    new Counter({
      name: 'multihead_output_frames_total',
      help: 'Frames shown on each output (vblanks with a new frame, or commits on KMS).',
      labelNames: ['output'],
      registers: [registry],
      collect() {
        countersSet(
          this,
          (samples().at(-1)?.outputs ?? []).map((o) => [{ output: o.name }, o.frames]),
        );
      },
    });
    new Counter({
      name: 'multihead_output_dropped_frames_total',
      help: 'Frames that never reached each output (late: skipped to the newest).',
      labelNames: ['output'],
      registers: [registry],
      collect() {
        countersSet(
          this,
          (samples().at(-1)?.outputs ?? []).map((o) => [{ output: o.name }, o.dropped]),
        );
      },
    });
    new Gauge({
      name: 'multihead_decoders',
      help: 'Decoders running (one per source when decoding is shared).',
      registers: [registry],
      collect() {
        this.set(decoders().length);
      },
    });
    new Gauge({
      name: 'multihead_decode_shared',
      help: '1 when one decoder per source feeds every output showing it.',
      registers: [registry],
      collect() {
        const status = bus.latest('decode.status')?.status;
        if (status) this.set(status.sharedDecode ? 1 : 0);
      },
    });
    const perDecoder = (
      name: string,
      help: string,
      value: (d: ReturnType<typeof decoders>[number]) => number,
    ): void => {
      new Gauge({
        name,
        help,
        labelNames: ['decoder', 'path'],
        registers: [registry],
        collect() {
          this.reset();
          for (const d of decoders()) this.set({ decoder: String(d.id), path: d.path }, value(d));
        },
      });
    };
    perDecoder('multihead_decoder_consumers', 'Outputs each decoder feeds.', (d) => d.consumers.length);
    perDecoder('multihead_decoder_fps', 'Frames each decoder produces per second, smoothed.', (d) => d.fps);
    perDecoder('multihead_decoder_frames', 'Frames each decoder has decoded.', (d) => d.frames);
    perDecoder('multihead_decoder_late_frames', 'Frames decoded more than a frame period late.', (d) => d.late);
    perDecoder(
      'multihead_decoder_bytes_copied_per_frame',
      'CPU bytes copied for the newest frame (0 on the zero-copy hardware path).',
      (d) => d.bytesCopiedPerFrame,
    );
    perDecoder('multihead_decoder_hardware', '1 when the decoder runs on the GPU (VAAPI).', (d) => (d.hw ? 1 : 0));
    perDecoder('multihead_decoder_failed', '1 when the decoder stopped on an error.', (d) => (d.failure ? 1 : 0));
    new Gauge({
      name: 'multihead_mqtt_configured',
      help: '1 when mqtt.url names a fleet broker.',
      registers: [registry],
      collect() {
        this.set(deps.mqttConfigured ? 1 : 0);
      },
    });
    new Gauge({
      name: 'multihead_mqtt_connected',
      help: '1 while the fleet broker connection is up (0 also when MQTT is off).',
      registers: [registry],
      collect() {
        this.set(bus.latest('mqtt.connection')?.connected ? 1 : 0);
      },
    });
    new Gauge({
      name: 'multihead_uptime_seconds',
      help: 'Seconds since the supervisor started.',
      registers: [registry],
      collect() {
        this.set(Math.max(0, (now() - deps.startedAt) / 1000));
      },
    });
    new Gauge({
      name: 'multihead_health',
      help: '1 for the current health state (booting, ok, degraded, error), 0 for the others.',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        const state = deps.health.assess().state;
        for (const s of ['booting', 'ok', 'degraded', 'error']) this.set({ state: s }, s === state ? 1 : 0);
      },
    });
  }

  text(): Promise<string> {
    const live = this.#deps.outputStats?.();
    if (live) this.#sampleAdd((this.#deps.now ?? Date.now)(), live);
    return this.registry.metrics();
  }

  #sampleAdd(at: number, outputs: Stats): void {
    this.#samples.push({ at, outputs });
    // Enough to find one a second older even when scraped often; old ones only age.
    const keep = this.#samples.filter((s) => at - s.at <= 10_000);
    this.#samples = keep.length > 32 ? keep.slice(-32) : keep;
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  close(): void {
    this.#unsubscribe();
    this.registry.clear();
  }
}
