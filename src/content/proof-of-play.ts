import type { Logger } from '../log/logger.ts';
import type { Player, PlayerPlayRecord } from './player.ts';
import type { OpenPlay, PlayProof, ProofLog } from './proof-log.ts';

/** How often the outputs' records are read: a play on screen for a second is on disk by then. */
export const PROOF_POLL_MS = 500;
/** How often the saved "on screen now" list is refreshed while nothing starts or ends. */
const OPEN_REFRESH_MS = 10_000;

export interface ProofOfPlayDeps {
  readonly player: Pick<Player, 'playRecords'>;
  readonly log: ProofLog;
  readonly logger: Pick<Logger, 'warn' | 'error'>;
  /** Wall-clock epoch ms of a CLOCK_MONOTONIC time in µs (the vblank timestamps' clock). */
  readonly wallOfMonotonicUs: (us: number) => number;
  /** Told the records just made durable (MQTT publishes them). */
  readonly onAppended: (plays: readonly PlayProof[]) => void;
  readonly now?: () => number;
  readonly pollMs?: number;
}

/**
 * Proof of play: turns the outputs' own records (first and last vblank of each item on each
 * output) into durable records in the ProofLog, one per item shown per output. What is on
 * screen is saved too, so a crash or a power cut loses no play that was on screen for a
 * poll interval: the next start records it as ended by the restart, at the time last seen.
 */
export class ProofOfPlay {
  readonly #deps: ProofOfPlayDeps;
  #timer: NodeJS.Timeout | undefined;
  /** Plays on screen, by record key, as last saved. */
  #open = new Map<string, OpenPlay>();
  #openSavedAt = 0;
  #failedSaid = false;

  constructor(deps: ProofOfPlayDeps) {
    this.#deps = deps;
  }

  /** Records what the last run left on screen, then reads the outputs every poll interval. */
  start(): void {
    const left = this.#deps.log.openTake();
    if (left.length > 0) {
      this.#append(left.map((p) => ({ ...p, complete: false, end: 'restart' as const })));
    }
    this.#saveOpen(new Map());
    const tick = (): void => {
      this.poll();
      this.#timer = setTimeout(tick, this.#deps.pollMs ?? PROOF_POLL_MS);
    };
    this.#timer = setTimeout(tick, this.#deps.pollMs ?? PROOF_POLL_MS);
  }

  /** Records the plays on screen as stopped (a clean stop of the supervisor). */
  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.poll();
    const open = [...this.#open.values()];
    if (open.length > 0) this.#append(open.map((p) => ({ ...p, complete: false, end: 'stopped' as const })));
    this.#saveOpen(new Map());
  }

  /** Reads the outputs' records: closed ones are appended, open ones saved as on screen. */
  poll(): void {
    let records: PlayerPlayRecord[];
    try {
      records = this.#deps.player.playRecords?.() ?? [];
    } catch (error) {
      this.#say(`proof of play: the outputs' records could not be read: ${(error as Error).message}`);
      return;
    }
    const closed: Array<Omit<PlayProof, 'seq'>> = [];
    const open = new Map<string, OpenPlay>();
    for (const r of records) {
      const play = this.#playOf(r);
      if (r.end === 'open') open.set(r.key, play);
      else closed.push({ ...play, complete: completeOf(r, play.durationMs), end: endOf(r) });
    }
    this.#append(closed);
    const changed = open.size !== this.#open.size || [...open.keys()].some((k) => !this.#open.has(k));
    const now = (this.#deps.now ?? Date.now)();
    if (changed || closed.length > 0 || (open.size > 0 && now - this.#openSavedAt >= OPEN_REFRESH_MS)) {
      this.#saveOpen(open);
    } else {
      this.#open = open;
    }
  }

  #playOf(r: PlayerPlayRecord): OpenPlay {
    const { wallOfMonotonicUs } = this.#deps;
    const started = wallOfMonotonicUs(r.firstUs);
    const ended = wallOfMonotonicUs(r.lastUs);
    const durationMs = Math.round(((r.lastUs - r.firstUs) / 1000 + 1000 / r.refresh) * 10) / 10;
    return {
      output: r.output,
      media: r.proof.media,
      ...(r.proof.digest !== undefined ? { digest: r.proof.digest } : {}),
      ...(r.proof.playlist !== undefined ? { playlist: r.proof.playlist } : {}),
      ...(r.proof.interrupt !== undefined ? { interrupt: r.proof.interrupt } : {}),
      startedAt: new Date(started).toISOString(),
      endedAt: new Date(ended).toISOString(),
      durationMs,
      frames: r.frames,
    };
  }

  #append(plays: ReadonlyArray<Omit<PlayProof, 'seq'>>): void {
    if (plays.length === 0) return;
    try {
      const written = this.#deps.log.append(plays);
      this.#failedSaid = false;
      this.#deps.onAppended(written);
    } catch (error) {
      this.#say(`proof of play: ${plays.length} record(s) could not be written: ${(error as Error).message}`);
    }
  }

  #saveOpen(open: Map<string, OpenPlay>): void {
    this.#open = open;
    this.#openSavedAt = (this.#deps.now ?? Date.now)();
    try {
      this.#deps.log.openSave([...open.values()]);
    } catch (error) {
      this.#say(`proof of play: the plays on screen could not be saved: ${(error as Error).message}`);
    }
  }

  /** Said once until it works again: a full disk must not flood the log twice a second. */
  #say(message: string): void {
    if (this.#failedSaid) return;
    this.#failedSaid = true;
    this.#deps.logger.error({ code: 'ERR_PROOF_OF_PLAY' }, message);
  }
}

/** The file started its next pass: this one ended by itself. */
function endOf(r: PlayerPlayRecord): PlayProof['end'] {
  if (r.end === 'loop') return 'ended';
  return r.end === 'stopped' ? 'stopped' : 'replaced';
}

/**
 * Whether the play ran to its end: a pass that gave way to the next ran its file to the end; a
 * timed item showed its time (to within one and a half refreshes); a video played to its end
 * was replaced after its decoder counted this pass's end.
 */
function completeOf(r: PlayerPlayRecord, durationMs: number): boolean {
  if (r.end === 'loop') return true;
  const expected = r.proof.expectedMs;
  if (expected !== undefined) return durationMs >= expected - 1500 / r.refresh;
  return r.loops > r.pass;
}
