import type { ReplyTarget } from './command-router.ts';

/** Bounded offline buffers: a long outage costs at most this many messages of memory. */
const OFFLINE_EVENTS = 100;
const OFFLINE_TELEMETRY = 10;
const OFFLINE_REPLIES = 100;
/** Jobs whose newest document waits for the broker; older jobs' documents are dropped first. */
const OFFLINE_JOBS = 20;

/** Where waiting messages go once the broker is back; a send that fails then is not kept again. */
export interface OfflineSink {
  job(jobId: string, text: string): void;
  event(text: string): void;
  telemetry(text: string): void;
  reply(target: ReplyTarget, text: string): void;
}

/** Appends `item`, dropping the oldest beyond `max`. */
function bounded<T>(queue: T[], item: T, max: number): void {
  queue.push(item);
  if (queue.length > max) queue.shift();
}

/**
 * What could not be published while the broker was away, kept for the next connection. Each
 * kind has its own bound, oldest dropped first, so a long outage cannot grow memory.
 */
export class OfflineBuffers {
  readonly #events: string[] = [];
  readonly #telemetry: string[] = [];
  readonly #replies: Array<[ReplyTarget, string]> = [];
  /** Newest document per job id (a job's older progress is worthless once a newer one exists). */
  readonly #jobs = new Map<string, string>();

  event(text: string): void {
    bounded(this.#events, text, OFFLINE_EVENTS);
  }

  telemetry(text: string): void {
    bounded(this.#telemetry, text, OFFLINE_TELEMETRY);
  }

  reply(target: ReplyTarget, text: string): void {
    bounded(this.#replies, [target, text], OFFLINE_REPLIES);
  }

  /** Keeps only the job's newest document, and moves the job to the back of the drop order. */
  job(jobId: string, text: string): void {
    this.#jobs.delete(jobId);
    this.#jobs.set(jobId, text);
    for (const oldest of this.#jobs.keys()) {
      if (this.#jobs.size <= OFFLINE_JOBS) break;
      this.#jobs.delete(oldest);
    }
  }

  /** Hands everything that waited to `sink` (jobs, events, telemetry, replies; oldest first) and forgets it. */
  flush(sink: OfflineSink): void {
    for (const [jobId, text] of this.#jobs) sink.job(jobId, text);
    this.#jobs.clear();
    for (const text of this.#events.splice(0)) sink.event(text);
    for (const text of this.#telemetry.splice(0)) sink.telemetry(text);
    for (const [target, text] of this.#replies.splice(0)) sink.reply(target, text);
  }
}
