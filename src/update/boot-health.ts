import { join } from 'node:path';
import { fileWriteAtomic } from '../fs/atomic.ts';
import type { Health } from '../status/health.ts';

/** The file the image's boot-assessment unit waits for before boot-complete.target. */
export const BOOT_HEALTHY_FILE = 'boot-healthy';

/**
 * The screens part of "this version works", from the one health judgement: a first frame has
 * been shown, no output that has something to play is without new frames, and nothing is
 * judged an error (a stuck native frame loop included). An output with nothing assigned shows
 * its slate and does not hold the judgement back.
 */
export function showsVideo(health: Health): boolean {
  if (health.state === 'booting' || health.state === 'error' || !health.firstFrame) return false;
  return health.outputs.length > 0 && health.outputs.every((o) => o.source === null || o.playing);
}

export interface BootHealthDeps {
  /** `<runDir>/boot-healthy` is written (the supervisor's RuntimeDirectory, /run/multihead). */
  readonly runDir: string;
  /** How long a disconnected broker may hold the marker back (a box at a site whose network is down still boots good). */
  readonly brokerWaitMs: number;
  readonly onHealthy?: (file: string) => void;
  readonly onError?: (error: unknown) => void;
}

/**
 * Writes the boot health marker once per boot, when the screens show video and the broker was
 * reached (or is off, or `brokerWaitMs` passed since the supervisor started). systemd-boot's
 * boot counting then blesses this version; a version that never gets here is abandoned after its
 * tries and the previous one boots by itself.
 */
export class BootHealthMarker {
  readonly #deps: BootHealthDeps;
  #written = false;
  #errorSaid = false;
  #brokerWaitOver = false;
  #last: Health | undefined;
  readonly #timer: NodeJS.Timeout;

  constructor(deps: BootHealthDeps) {
    this.#deps = deps;
    this.#timer = setTimeout(() => {
      this.#brokerWaitOver = true;
      if (this.#last) this.observe(this.#last);
    }, deps.brokerWaitMs);
    this.#timer.unref();
  }

  get written(): boolean {
    return this.#written;
  }

  observe(health: Health): void {
    this.#last = health;
    if (this.#written || !showsVideo(health)) return;
    if (health.broker === 'disconnected' && !this.#brokerWaitOver) return;
    const file = join(this.#deps.runDir, BOOT_HEALTHY_FILE);
    try {
      fileWriteAtomic(file, `${JSON.stringify({ at: new Date().toISOString(), broker: health.broker })}\n`, {
        mode: 0o644,
      });
      this.#written = true;
      clearTimeout(this.#timer);
      this.#deps.onHealthy?.(file);
    } catch (error) {
      // Said once: health changes often, and the run directory will not heal by itself.
      if (!this.#errorSaid) this.#deps.onError?.(error);
      this.#errorSaid = true;
    }
  }

  close(): void {
    clearTimeout(this.#timer);
  }
}
