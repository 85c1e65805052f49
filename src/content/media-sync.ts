import { join } from 'node:path';
import type { Logger } from '../log/logger.ts';
import type { EventBus } from '../supervisor/bus.ts';
import { type CacheProgress, type CacheStatus, MediaCache, type RetryPolicy } from './cache.ts';
import type { Fetch } from './download.ts';
import type { FileSystem } from './fs.ts';
import type { Content, MediaItem } from './model.ts';
import { SyncJob } from './sync-job.ts';

export interface MediaSyncDeps {
  /** The cache lives in `<dataDir>/cache`. */
  readonly dataDir: string;
  readonly limits: { readonly maxBytes: number; readonly reserveBytes: number; readonly concurrency: number };
  readonly logger: Logger;
  /** `content.sync` events go here. */
  readonly bus: Pick<EventBus, 'emit'>;
  readonly fs: FileSystem;
  readonly clock: { now(): number };
  readonly fetch?: Fetch;
  readonly retry?: Partial<RetryPolicy>;
  /** Least time between two `content.sync` progress events of one job. */
  readonly syncProgressEveryMs?: number;
  /** sha256s on screen now: never evicted. */
  readonly inUse: () => Iterable<string>;
  /** A media item was installed: whoever waits for it may look again. */
  readonly onInstalled: () => void;
}

/**
 * The media cache as content sees it: opened once (collecting orphaned partial downloads),
 * its progress logged, and each content version's media fetched as a job the fleet can follow.
 */
export class MediaSync {
  readonly #deps: MediaSyncDeps;
  #cache: MediaCache | undefined;
  /** Content sync jobs under way (one per apply); they hear every cache progress event. */
  readonly #jobs = new Set<SyncJob>();

  constructor(deps: MediaSyncDeps) {
    this.#deps = deps;
  }

  get opened(): boolean {
    return this.#cache !== undefined;
  }

  /** `wanted`: the content about to apply; its partial downloads are kept, every other is an orphan. */
  async open(wanted: Content | undefined): Promise<void> {
    if (this.#cache) return;
    const { limits, fetch, retry } = this.#deps;
    const cache = new MediaCache({
      dir: join(this.#deps.dataDir, 'cache'),
      maxBytes: limits.maxBytes,
      reserveBytes: limits.reserveBytes,
      inUse: this.#deps.inUse,
      concurrency: limits.concurrency,
      fs: this.#deps.fs,
      clock: this.#deps.clock,
      ...(fetch ? { fetch } : {}),
      ...(retry ? { retry } : {}),
    });
    const report = await cache.open(new Set(wanted?.media.map((m) => m.sha256) ?? []));
    this.#deps.logger.info(
      {
        dir: cache.dir,
        items: report.items,
        bytes: report.bytes,
        unverified: report.unverified.length,
        partials: report.partials,
        orphansCollected: report.orphansCollected,
        orphanBytesCollected: report.orphanBytesCollected,
      },
      `media cache ${cache.dir}: ${report.items} item(s), ${report.bytes} bytes${report.unverified.length ? `, ${report.unverified.length} to re-check` : ''}${report.orphansCollected ? `, ${report.orphansCollected} orphaned partial download(s) (${report.orphanBytesCollected} bytes) deleted` : ''}`,
    );
    cache.on('progress', (p) => this.#progress(p));
    this.#cache = cache;
  }

  /**
   * Fetches `media` and pins it for this round. `syncVersion`: new content applies, so the fetch
   * is a job the fleet can follow; resolves to its id. Nothing happens before the cache is open.
   */
  fetch(media: MediaItem[], syncVersion: number | undefined): string | undefined {
    const cache = this.#cache;
    if (!cache) return undefined;
    const pinned = new Set(media.map((m) => m.sha256));
    const job = syncVersion === undefined ? undefined : this.#jobStart(cache, media, syncVersion);
    void cache.ensure(media, pinned).then((results) => {
      if (job) {
        this.#jobs.delete(job);
        job.finish(results);
      }
      const failed = results.filter((x) => !x.ok);
      if (failed.length > 0) {
        this.#deps.logger.warn(
          { failed: failed.map((f) => f.id) },
          `${failed.length} of ${results.length} media not cached; playing what is`,
        );
      }
    });
    return job?.jobId;
  }

  /** A verified cached file for the media, or null when it is not (yet) cached. */
  async path(media: MediaItem): Promise<string | null> {
    return this.#cache ? this.#cache.path(media) : null;
  }

  status(): CacheStatus | null {
    return this.#cache?.status() ?? null;
  }

  async close(): Promise<void> {
    await this.#cache?.close();
  }

  #jobStart(cache: MediaCache, media: MediaItem[], version: number): SyncJob {
    const every = this.#deps.syncProgressEveryMs;
    const job = new SyncJob({
      version,
      items: media,
      cached: (m) => cache.has(m),
      emit: (doc) => this.#deps.bus.emit('content.sync', doc),
      clock: this.#deps.clock,
      ...(every !== undefined ? { progressEveryMs: every } : {}),
    });
    this.#jobs.add(job);
    return job;
  }

  #progress(p: CacheProgress): void {
    for (const job of this.#jobs) job.progress(p);
    const { logger } = this.#deps;
    const fields = { media: p.id, url: p.url, state: p.state, bytes: p.bytes, total: p.total, attempt: p.attempt };
    if (p.state === 'failed')
      logger.error({ ...fields, code: p.error?.code }, p.error?.message ?? `media ${p.id} failed`);
    else if (p.state === 'retrying') {
      logger.warn({ ...fields, code: p.error?.code }, `${p.error?.message}; retry in ${p.retryInMs} ms`);
    } else if (p.state === 'installed') {
      logger.info(fields, `media ${p.id} cached (${p.total} bytes)`);
      this.#deps.onInstalled();
    } else if (p.state === 'evicted') logger.info(fields, `media ${p.sha256} evicted from the cache`);
  }
}
