import type { Screens } from '../display/screens.ts';
import type { Logger } from '../log/logger.ts';

export interface PreviewJpeg {
  readonly jpeg: Buffer;
  readonly width: number;
  readonly height: number;
  /** Epoch ms when it was taken. */
  readonly at: number;
}

export interface PreviewsDeps {
  readonly screens: Screens;
  readonly logger: Logger;
  readonly intervalMs: number;
  readonly width: number;
  readonly onPreview: (output: string, preview: PreviewJpeg) => void;
}

/**
 * Periodic JPEG previews of every output, for the status page and fleet dashboards. Off the
 * frame path: a snapshot copies the frame on screen once per interval, JavaScript encodes it.
 */
export class Previews {
  readonly #deps: PreviewsDeps;
  readonly #latest = new Map<string, PreviewJpeg>();
  readonly #failing = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #busy = false;

  constructor(deps: PreviewsDeps) {
    this.#deps = deps;
  }

  start(): void {
    if (this.#deps.intervalMs <= 0) return;
    this.#timer = setInterval(() => void this.takeAll(), this.#deps.intervalMs);
    this.#timer.unref();
  }

  latest(output: string): PreviewJpeg | undefined {
    return this.#latest.get(output);
  }

  /** One preview of each output now. A slow encode skips the next tick rather than queueing. */
  async takeAll(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      for (const output of this.#deps.screens.outputs()) {
        try {
          const shot = await this.#deps.screens.snapshotJpeg(output.name, this.#deps.width);
          if (!shot) continue;
          const preview = { ...shot, at: Date.now() };
          this.#latest.set(output.name, preview);
          this.#failing.delete(output.name);
          this.#deps.onPreview(output.name, preview);
        } catch (error) {
          // Once per output until it works again, not every interval.
          if (!this.#failing.has(output.name)) {
            this.#failing.add(output.name);
            this.#deps.logger.warn(
              { output: output.name, err: error },
              `output ${output.name}: preview failed: ${(error as Error).message}`,
            );
          }
        }
      }
    } finally {
      this.#busy = false;
    }
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
