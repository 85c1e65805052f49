import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism, freemem, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import type { DecodeStatus } from '../native/addon.ts';

/** One telemetry message (components.schemas.Telemetry in docs/asyncapi.yaml). */
export interface Telemetry {
  at: string;
  session: number;
  uptimeS: number;
  cpu: {
    cores: number;
    load1: number;
    load5: number;
    load15: number;
    processPercent: number;
    systemPercent: number | null;
  };
  memory: { totalBytes: number; availableBytes: number; processRssBytes: number };
  temperatures: Array<{ zone: string; type: string; celsius: number }>;
  outputs: Array<{ name: string; fps: number | null; frames: number | null; dropped: number | null }>;
  decoders: {
    count: number;
    hw: number;
    sw: number;
    bytesCopiedPerFrame: number;
    list: Array<{
      id: number;
      source: string;
      hw: boolean;
      fps: number;
      frames: number;
      late: number;
      bytesCopiedPerFrame: number;
    }>;
  };
}

export interface TelemetryDeps {
  /** /sys/class/thermal; tests point it at a scratch directory. */
  readonly thermalDir: string;
  /** /proc, for stat and meminfo. */
  readonly procDir: string;
  readonly startedAt: number;
  readonly session: () => number;
  /** The freshest decoder status there is (the decode.status command, else the newest bus event). */
  readonly decodeStatus: () => Promise<DecodeStatus | undefined>;
  /** Newest per-output counters, if the display reports them. */
  readonly outputStats: () => ReadonlyArray<{ name: string; frames: number; dropped: number }> | undefined;
  readonly now?: () => number;
}

/**
 * Measures the machine and the pipeline. CPU figures are rates since the previous sample, so
 * the first sample after start covers the time since the sampler was made.
 */
export class TelemetrySampler {
  readonly #deps: TelemetryDeps;
  readonly #now: () => number;
  #cpuAt: number;
  #cpu = process.cpuUsage();
  #system: { busy: number; total: number } | undefined;

  constructor(deps: TelemetryDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
    this.#cpuAt = this.#now();
    this.#system = this.#systemTimes();
  }

  /**
   * Decoder sources may be URLs with credentials or signatures in them: the sample is published
   * only through MqttConnection.publish, which passes every payload through the one redaction.
   */
  async sample(): Promise<Telemetry> {
    const now = this.#now();
    const [load1, load5, load15] = loadavg() as [number, number, number];
    const status = await this.#deps.decodeStatus();
    const decoders = status?.decoders ?? [];
    const stats = new Map((this.#deps.outputStats() ?? []).map((o) => [o.name, o]));
    const fpsOf = new Map<string, number>();
    for (const d of decoders) for (const c of d.consumers) fpsOf.set(c, d.fps);
    const names = [...new Set([...fpsOf.keys(), ...stats.keys()])].sort();
    return {
      at: new Date(now).toISOString(),
      session: this.#deps.session(),
      uptimeS: Math.max(0, Math.floor((now - this.#deps.startedAt) / 1000)),
      cpu: {
        cores: availableParallelism(),
        load1: round(load1, 2),
        load5: round(load5, 2),
        load15: round(load15, 2),
        processPercent: this.#processPercent(now),
        systemPercent: this.#systemPercent(),
      },
      memory: {
        totalBytes: totalmem(),
        availableBytes: this.#memAvailable(),
        processRssBytes: process.memoryUsage.rss(),
      },
      temperatures: this.#temperatures(),
      outputs: names.map((name) => ({
        name,
        fps: fpsOf.has(name) ? round(fpsOf.get(name) as number, 1) : null,
        frames: stats.get(name)?.frames ?? null,
        dropped: stats.get(name)?.dropped ?? null,
      })),
      decoders: {
        count: decoders.length,
        hw: decoders.filter((d) => d.hw).length,
        sw: decoders.filter((d) => !d.hw).length,
        bytesCopiedPerFrame: decoders.reduce((sum, d) => sum + d.bytesCopiedPerFrame, 0),
        list: decoders.map((d) => ({
          id: d.id,
          source: d.source,
          hw: d.hw,
          fps: round(d.fps, 1),
          frames: d.frames,
          late: d.late,
          bytesCopiedPerFrame: d.bytesCopiedPerFrame,
        })),
      },
    };
  }

  #processPercent(now: number): number {
    const usage = process.cpuUsage(this.#cpu);
    const wallUs = Math.max(1, (now - this.#cpuAt) * 1000);
    this.#cpu = process.cpuUsage();
    this.#cpuAt = now;
    return round(((usage.user + usage.system) / wallUs) * 100, 1);
  }

  #systemTimes(): { busy: number; total: number } | undefined {
    try {
      const line = readFileSync(join(this.#deps.procDir, 'stat'), 'utf8').split('\n')[0] ?? '';
      const fields = line.trim().split(/\s+/).slice(1).map(Number);
      if (fields.length < 4 || fields.some((n) => !Number.isFinite(n))) return undefined;
      const total = fields.reduce((a, b) => a + b, 0);
      const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
      return { busy: total - idle, total };
    } catch {
      return undefined;
    }
  }

  #systemPercent(): number | null {
    const before = this.#system;
    const after = this.#systemTimes();
    this.#system = after;
    if (!before || !after || after.total <= before.total) return null;
    return round(((after.busy - before.busy) / (after.total - before.total)) * 100, 1);
  }

  #memAvailable(): number {
    try {
      const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync(join(this.#deps.procDir, 'meminfo'), 'utf8'));
      if (m) return Number(m[1]) * 1024;
    } catch {
      // Not Linux, or /proc not mounted: the kernel's free figure is the next best.
    }
    return freemem();
  }

  /** Zones whose temp is unreadable (permissions, a sensor that errors) are left out, not reported as 0. */
  #temperatures(): Telemetry['temperatures'] {
    let zones: string[];
    try {
      zones = readdirSync(this.#deps.thermalDir).filter((n) => n.startsWith('thermal_zone'));
    } catch {
      return [];
    }
    const out: Telemetry['temperatures'] = [];
    for (const zone of zones.sort()) {
      try {
        const milli = Number(readFileSync(join(this.#deps.thermalDir, zone, 'temp'), 'utf8').trim());
        if (!Number.isFinite(milli)) continue;
        let type = zone;
        try {
          type = readFileSync(join(this.#deps.thermalDir, zone, 'type'), 'utf8').trim() || zone;
        } catch {
          // A zone without a type is still a temperature.
        }
        out.push({ zone, type, celsius: round(milli / 1000, 1) });
      } catch {}
    }
    return out;
  }
}

function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
