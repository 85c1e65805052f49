import { existsSync } from 'node:fs';
import type { TimeSource, TimeSyncState } from '../supervisor/bus.ts';

export type { TimeSource, TimeSyncState };

/**
 * Watches the wall clock for what makes a schedule wrong: a step (NTP setting the clock, an
 * operator's `date -s`, a resume from suspend) and the first synchronisation after boot.
 *
 * Steps: the wall clock (Date.now) and a monotonic clock (performance.now) advance together
 * except when the wall clock is set, so a change in their difference is a step. NTP's slewing
 * changes it by at most 0.5 ms/s, far below the threshold.
 *
 * Synchronisation: the kernel's own flag (adjtimex STA_UNSYNC, read through the addon), which
 * systemd-timesyncd, chrony and ntpd clear when they discipline the clock; without the addon,
 * systemd-timesyncd's /run/systemd/timesync/synchronized marker.
 */

/** What the kernel says about the clock (the addon's `clockState()`). */
export interface KernelClockState {
  readonly synchronized: boolean;
  readonly maxErrorUs: number;
}

export type ClockChange =
  | { readonly kind: 'step'; readonly deltaMs: number }
  | { readonly kind: 'synchronized'; readonly source: TimeSource }
  /** Lost synchronisation, or the source changed: reported, nothing to reschedule. */
  | { readonly kind: 'state' };

export interface SyncReading {
  readonly synchronized: boolean | null;
  readonly source: TimeSource;
}

export interface ClockWatchDeps {
  readonly now?: () => number;
  readonly monotonic?: () => number;
  /** The sync source: returns null when it cannot tell. Default: kernelClockSource(). */
  readonly sync?: () => SyncReading;
  readonly intervalMs?: number;
  /** A change of the wall-minus-monotonic offset larger than this is a step. */
  readonly stepThresholdMs?: number;
  readonly onChange: (change: ClockChange, state: TimeSyncState) => void;
}

const TIMESYNCD_MARKER = '/run/systemd/timesync/synchronized';

/**
 * The sync source for this machine: the addon's adjtimex reading when it has one, else
 * systemd-timesyncd's marker file (present once it synchronised; absent tells nothing, so null).
 */
export function kernelClockSource(
  clockState: (() => KernelClockState) | undefined,
  marker = TIMESYNCD_MARKER,
): () => SyncReading {
  if (clockState) {
    return () => {
      try {
        return { synchronized: clockState().synchronized, source: 'adjtimex' };
      } catch {
        return { synchronized: null, source: 'none' };
      }
    };
  }
  return () =>
    existsSync(marker) ? { synchronized: true, source: 'timesyncd' } : { synchronized: null, source: 'none' };
}

export class ClockWatch {
  readonly #now: () => number;
  readonly #monotonic: () => number;
  readonly #sync: NonNullable<ClockWatchDeps['sync']>;
  readonly #intervalMs: number;
  readonly #thresholdMs: number;
  readonly #onChange: ClockWatchDeps['onChange'];
  #offset: number;
  #timer: NodeJS.Timeout | undefined;
  #state: TimeSyncState;

  constructor(deps: ClockWatchDeps) {
    this.#now = deps.now ?? Date.now;
    this.#monotonic = deps.monotonic ?? (() => performance.timeOrigin + performance.now());
    this.#sync = deps.sync ?? kernelClockSource(undefined);
    this.#intervalMs = deps.intervalMs ?? 1000;
    this.#thresholdMs = deps.stepThresholdMs ?? 250;
    this.#onChange = deps.onChange;
    this.#offset = this.#now() - this.#monotonic();
    const sync = this.#sync();
    this.#state = { synchronized: sync.synchronized, source: sync.source, steps: 0 };
  }

  get state(): TimeSyncState {
    return this.#state;
  }

  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => this.check(), this.#intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** One look at both clocks and the sync source; reports what changed. */
  check(): void {
    const offset = this.#now() - this.#monotonic();
    const deltaMs = Math.round(offset - this.#offset);
    this.#offset = offset;
    const sync = this.#sync();
    const before = this.#state;
    this.#state = { ...before, synchronized: sync.synchronized, source: sync.source };
    if (Math.abs(deltaMs) > this.#thresholdMs) {
      this.#state = {
        ...this.#state,
        steps: this.#state.steps + 1,
        lastStep: { at: new Date(this.#now()).toISOString(), deltaMs },
      };
      this.#onChange({ kind: 'step', deltaMs }, this.#state);
    }
    if (sync.synchronized === true && before.synchronized !== true) {
      this.#state = { ...this.#state, synchronizedAt: new Date(this.#now()).toISOString() };
      this.#onChange({ kind: 'synchronized', source: sync.source }, this.#state);
    } else if (sync.synchronized !== before.synchronized || sync.source !== before.source) {
      this.#onChange({ kind: 'state' }, this.#state);
    }
  }
}
