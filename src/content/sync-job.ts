import { randomUUID } from 'node:crypto';
import type { CacheItem, CacheProgress, EnsureResult } from './cache.ts';
import type { CacheErrorCode } from './cache-error.ts';

/** Where a content sync job stands (AWS IoT Jobs style: accepted → in_progress → succeeded | failed). */
export type SyncJobState = 'accepted' | 'in_progress' | 'succeeded' | 'failed';

/** One media item that could not be cached. */
export interface SyncFailure {
  readonly media: string;
  readonly code: CacheErrorCode;
  readonly message: string;
}

/** The bus event `content.sync`: one job document, the same shape the fleet sees on `jobs/<jobId>`. */
export interface ContentSync {
  readonly jobId: string;
  readonly operation: 'content.sync';
  readonly state: SyncJobState;
  /** The content version this job fetches media for. */
  readonly version: number;
  /** Media items the job covers, and how many of them are cached (verified) now. */
  readonly items: number;
  readonly itemsDone: number;
  readonly bytesDone: number;
  readonly bytesTotal: number;
  /** bytesDone of bytesTotal, 0–100 (100 for a job with nothing to fetch). */
  readonly percent: number;
  readonly startedAt: string;
  readonly at: string;
  /** Only on `failed`: the first failure's code, and every failed item. */
  readonly error?: { code: string; message: string };
  readonly failures?: SyncFailure[];
}

export interface SyncJobDeps {
  readonly version: number;
  readonly items: readonly CacheItem[];
  /** Already cached and trusted (counts as done from the start). */
  readonly cached: (item: CacheItem) => boolean;
  readonly emit: (doc: ContentSync) => void;
  readonly clock?: { now(): number };
  /** Least time between two in_progress documents (state changes and finished items are never held back). */
  readonly progressEveryMs?: number;
  readonly jobId?: string;
}

/**
 * Follows the cache downloads of one content apply and turns them into job documents. The
 * cache reports per download (and may share one download between two jobs that need the same
 * bytes); the fleet wants one answer per content change: did everything it needs arrive.
 */
export class SyncJob {
  readonly jobId: string;
  readonly #deps: SyncJobDeps;
  readonly #clock: { now(): number };
  readonly #everyMs: number;
  readonly #startedAt: string;
  /** Bytes so far per sha256 (an item listed twice under two ids is fetched once). */
  readonly #bytes = new Map<string, number>();
  readonly #size = new Map<string, number>();
  readonly #done = new Set<string>();
  #state: SyncJobState = 'accepted';
  #lastEmit = 0;
  #held: NodeJS.Timeout | undefined;

  constructor(deps: SyncJobDeps) {
    this.#deps = deps;
    this.#clock = deps.clock ?? Date;
    this.#everyMs = deps.progressEveryMs ?? 1000;
    this.jobId = deps.jobId ?? `content-${deps.version}-${randomUUID().slice(0, 8)}`;
    this.#startedAt = new Date(this.#clock.now()).toISOString();
    for (const item of deps.items) {
      this.#size.set(item.sha256, item.size);
      const cached = deps.cached(item);
      this.#bytes.set(item.sha256, cached ? item.size : 0);
      if (cached) this.#done.add(item.sha256);
    }
    this.#send();
  }

  get state(): SyncJobState {
    return this.#state;
  }

  /** A cache progress event; ignored unless it is about this job's media. */
  progress(p: CacheProgress): void {
    if (this.#finished() || !this.#size.has(p.sha256) || p.state === 'evicted') return;
    if (p.state === 'installed') {
      this.#bytes.set(p.sha256, this.#size.get(p.sha256) ?? p.total);
      this.#done.add(p.sha256);
    } else if (p.state === 'downloading' || p.state === 'retrying' || p.state === 'verifying') {
      this.#bytes.set(p.sha256, Math.min(p.bytes, this.#size.get(p.sha256) ?? p.bytes));
    } else return;
    const first = this.#state === 'accepted';
    this.#state = 'in_progress';
    if (first || p.state === 'installed') this.#send();
    else this.#throttled();
  }

  /** The cache's answer for every item: the final document. */
  finish(results: readonly EnsureResult[]): ContentSync {
    clearTimeout(this.#held);
    const failures: SyncFailure[] = [];
    for (const r of results) {
      if (r.ok) {
        this.#done.add(r.sha256);
        this.#bytes.set(r.sha256, this.#size.get(r.sha256) ?? 0);
      } else if (r.error) failures.push({ media: r.id, code: r.error.code, message: r.error.message });
    }
    this.#state = failures.length > 0 ? 'failed' : 'succeeded';
    const first = failures[0];
    return this.#send(
      first
        ? {
            error: {
              code: first.code,
              message: `${failures.length} of ${results.length} media not cached; first: ${first.media}: ${first.message}`,
            },
            failures,
          }
        : {},
    );
  }

  #finished(): boolean {
    return this.#state === 'succeeded' || this.#state === 'failed';
  }

  #throttled(): void {
    const wait = this.#lastEmit + this.#everyMs - this.#clock.now();
    if (wait <= 0) {
      this.#send();
      return;
    }
    this.#held ??= setTimeout(() => {
      this.#held = undefined;
      if (!this.#finished()) this.#send();
    }, wait);
    this.#held.unref();
  }

  #send(extra: Pick<ContentSync, 'error' | 'failures'> = {}): ContentSync {
    clearTimeout(this.#held);
    this.#held = undefined;
    this.#lastEmit = this.#clock.now();
    let bytesDone = 0;
    let bytesTotal = 0;
    for (const [sha, size] of this.#size) {
      bytesTotal += size;
      bytesDone += this.#bytes.get(sha) ?? 0;
    }
    const doc: ContentSync = {
      jobId: this.jobId,
      operation: 'content.sync',
      state: this.#state,
      version: this.#deps.version,
      items: this.#size.size,
      itemsDone: this.#done.size,
      bytesDone,
      bytesTotal,
      percent: bytesTotal === 0 ? 100 : Math.floor((bytesDone / bytesTotal) * 1000) / 10,
      startedAt: this.#startedAt,
      at: new Date(this.#lastEmit).toISOString(),
      ...extra,
    };
    this.#deps.emit(doc);
    return doc;
  }
}
