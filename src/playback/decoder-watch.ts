import type { ScreenStats } from '../display/screens.ts';
import type { Logger } from '../log/logger.ts';
import type { DecoderInfo, DecodeStatus } from '../native/addon.ts';
import type { EventBus } from '../supervisor/bus.ts';

/** The code of a failure from an addon that gives none. */
export const DECODE_FAILED = 'ERR_DECODE_FAILED';

export interface DecoderWatchDeps {
  readonly logger: Logger;
  readonly bus: Pick<EventBus, 'emit'>;
  /** The outputs showing any of these consumers now (a failure names its outputs). */
  readonly outputsOf?: (consumers: readonly string[]) => string[];
}

/**
 * Tells about decoders: each one's failure and each one's fall back to software once, however
 * many outputs it feeds and however long it runs, and a periodic summary of every decoder and
 * output.
 */
export class DecoderWatch {
  readonly #deps: DecoderWatchDeps;
  readonly #failureNoted = new Set<number>();
  readonly #fallbackNoted = new Set<number>();

  constructor(deps: DecoderWatchDeps) {
    this.#deps = deps;
  }

  /** Reports what is new: failed decoders, and decoders that fell back to software. */
  check(decoders: readonly DecoderInfo[]): void {
    for (const d of decoders) {
      this.#failureNote(d);
      this.#fallbackNote(d);
    }
    // Ids are not reused: a decoder gone from the status is forgotten, so the sets stay small.
    const running = new Set(decoders.map((d) => d.id));
    for (const noted of [this.#failureNoted, this.#fallbackNoted])
      for (const id of noted) if (!running.has(id)) noted.delete(id);
  }

  /** The summary: every decoder and output in the log, and `decode.status` on the bus. */
  summary(status: DecodeStatus, outputs: readonly ScreenStats[]): void {
    const { logger, bus } = this.#deps;
    this.check(status.decoders);
    for (const d of status.decoders) {
      logger.info(
        {
          decoder: d.id,
          source: d.source,
          consumers: d.consumers,
          path: d.path,
          codec: d.codec,
          fps: Math.round(d.fps * 10) / 10,
          frames: d.frames,
          late: d.late,
          bytesCopiedPerFrame: d.bytesCopiedPerFrame,
        },
        `decoder ${d.id} (${d.path} ${d.codec} ${d.width}x${d.height}): ${d.consumers.length} consumer(s), ${d.fps.toFixed(1)} fps, ${d.late} late`,
      );
    }
    for (const o of outputs) {
      logger.info(
        { output: o.name, vblanks: o.vblanks, frames: o.frames, dropped: o.dropped },
        `output ${o.name}: ${o.frames} frames in ${o.vblanks} vblanks, ${o.dropped} dropped`,
      );
    }
    bus.emit('decode.status', { status });
  }

  #failureNote(d: DecoderInfo): void {
    if (!d.failure || this.#failureNoted.has(d.id)) return;
    // Its outputs keep the last frame they showed until playback gives them something else.
    this.#failureNoted.add(d.id);
    const code = d.failureCode ?? DECODE_FAILED;
    const outputs = this.#deps.outputsOf?.(d.consumers) ?? [];
    this.#deps.logger.error(
      { decoder: d.id, source: d.source, consumers: d.consumers, outputs, code, reason: d.failure },
      `decoder ${d.id} stopped: ${d.failure}`,
    );
    this.#deps.bus.emit('decode.failed', { decoder: d.id, source: d.source, outputs, code, message: d.failure });
  }

  #fallbackNote(d: DecoderInfo): void {
    if (d.hwMode === 'software' || !d.hwFallback || this.#fallbackNoted.has(d.id)) return;
    this.#fallbackNoted.add(d.id);
    const midStream = d.exported > 0;
    this.#deps.logger.warn(
      { decoder: d.id, source: d.source, reason: d.hwFallback, consumers: d.consumers },
      `decoder ${d.id} decodes in software${midStream ? ' from now on' : ''}: ${d.hwFallback}`,
    );
    this.#deps.bus.emit('decode.fallback', { decoder: d.id, source: d.source, reason: d.hwFallback, midStream });
  }
}
