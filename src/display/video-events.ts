import type { Logger } from '../log/logger.ts';
import type { DisplayEvent } from '../native/addon.ts';
import { RateLimiter } from '../rate-limit.ts';
import type { EventBus } from '../supervisor/bus.ts';

/** The code of a videoError the engine sent without one (an older addon): still a coded event. */
const UNKNOWN_CODE = 'ERR_VIDEO';

export interface VideoEventsDeps {
  readonly bus: Pick<EventBus, 'emit'>;
  readonly logger: Logger;
  /** Errors let through per output: a burst, then a trickle (an output that flaps cannot flood). */
  readonly limiter?: RateLimiter;
}

/**
 * Turns the engine's `videoError` / `videoRecovered` display events into `video.error` /
 * `video.recovered` on the bus: once per output and cause (the engine promises that too; this
 * holds even if it repeats itself), through the one rate limiter, and a recovery only for an
 * error that was told. Everything else the callback delivers is not its business.
 */
export class VideoEvents {
  readonly #deps: VideoEventsDeps;
  readonly #limiter: RateLimiter;
  /** The cause told for each output now. */
  readonly #current = new Map<string, string>();
  #suppressed = 0;

  constructor(deps: VideoEventsDeps) {
    this.#deps = deps;
    this.#limiter = deps.limiter ?? new RateLimiter({ burst: 4, perSecond: 0.1 });
  }

  /** Handles one display event; true when it was a video event. */
  take(event: DisplayEvent): boolean {
    if (event.kind === 'videoError') {
      this.#error(event);
      return true;
    }
    if (event.kind === 'videoRecovered') {
      this.#recovered(event);
      return true;
    }
    return false;
  }

  /** Outputs that are gone (hotplug, reconfigure): their errors go with them. */
  forget(keep: readonly string[]): void {
    for (const output of [...this.#current.keys()]) if (!keep.includes(output)) this.#current.delete(output);
  }

  #error(event: DisplayEvent): void {
    const output = event.connector;
    if (!output) return;
    const code = event.code ?? UNKNOWN_CODE;
    if (this.#current.get(output) === code) return;
    if (!this.#limiter.take(`video:${output}`)) {
      this.#suppressed++;
      return;
    }
    this.#current.set(output, code);
    const message = event.message ?? code;
    const { logger, bus } = this.#deps;
    const suppressed = this.#suppressed;
    this.#suppressed = 0;
    // A warning, not an error line: the typed event is what the fleet hears (one `video.error`,
    // not also an `error` event made from this line).
    logger.warn(
      { output, code, ...(suppressed > 0 ? { suppressed } : {}) },
      `output ${output}: ${message}; it keeps its last frame${suppressed > 0 ? ` (${suppressed} earlier video error(s) not told: rate limit)` : ''}`,
    );
    bus.emit('video.error', { output, code, message });
  }

  #recovered(event: DisplayEvent): void {
    const output = event.connector;
    if (!output) return;
    const code = this.#current.get(output);
    if (code === undefined) return;
    this.#current.delete(output);
    this.#deps.logger.info({ output, code }, `output ${output}: shows new frames again (after ${code})`);
    this.#deps.bus.emit('video.recovered', { output, code });
  }
}
