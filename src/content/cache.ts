import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { installAtomic, writeFileAtomic } from './atomic-file.ts';
import { CacheError, type CacheErrorCode } from './cache-error.ts';
import { downloadAttempt, type Fetch } from './download.ts';
import { type FileSystem, nodeFs } from './fs.ts';
import { Limiter } from './limiter.ts';

/**
 * The offline media cache under `<dataDir>/cache`:
 *
 *   media/<sha256>          verified files, the only ones ever handed to the player
 *   partial/<sha256>.part   downloads in progress (resumed with HTTP Range after a crash)
 *   index.json              size, mtime and last use of each media file (written atomically)
 *
 * Files are named by content, so the same bytes under two ids or URLs are fetched once, and a
 * new URL for unchanged bytes costs nothing.
 */

/** What the cache needs to know about a media item (a subset of the content model's). */
export interface CacheItem {
  readonly id: string;
  readonly url: string;
  readonly sha256: string;
  readonly size: number;
}

export type CacheState = 'queued' | 'downloading' | 'verifying' | 'installed' | 'retrying' | 'failed' | 'evicted';

export interface CacheProgress {
  readonly id: string;
  readonly sha256: string;
  readonly url: string;
  readonly state: CacheState;
  readonly bytes: number;
  readonly total: number;
  readonly attempt: number;
  /** Bytes already on disk when this attempt started (a resumed download). */
  readonly resumedFrom?: number;
  readonly retryInMs?: number;
  readonly error?: { code: CacheErrorCode; message: string };
}

export interface EnsureResult {
  readonly id: string;
  readonly sha256: string;
  readonly ok: boolean;
  readonly path?: string;
  readonly error?: { code: CacheErrorCode; message: string };
}

export interface RetryPolicy {
  /** Attempts per ensure() for retryable failures (network, 5xx, checksum, stall). */
  readonly attempts: number;
  readonly baseMs: number;
  readonly maxMs: number;
}

export interface CacheDeps {
  /** The cache directory, e.g. /var/lib/multihead/cache. */
  readonly dir: string;
  readonly maxBytes: number;
  readonly concurrency: number;
  readonly fetch?: Fetch;
  readonly fs?: FileSystem;
  readonly clock?: { now(): number };
  readonly retry?: Partial<RetryPolicy>;
  readonly stallMs?: number;
  /** Least time between two progress events of one download. */
  readonly progressEveryMs?: number;
}

export interface CacheOpenReport {
  readonly items: number;
  readonly bytes: number;
  /** Files whose size or mtime no longer match the index: re-hashed before use. */
  readonly unverified: string[];
  readonly partials: number;
}

export interface CacheStatus {
  readonly dir: string;
  readonly bytes: number;
  readonly maxBytes: number;
  readonly items: number;
  readonly unverified: number;
  /** Downloads under way, waiting, or failed since the last success, by media id. */
  readonly downloads: CacheProgress[];
}

interface Entry {
  size: number;
  mtimeMs: number;
  lastUsed: number;
  /** Hashed (now or in an earlier run, with size and mtime unchanged since). */
  verified: boolean;
}

interface IndexFile {
  version: 1;
  items: Record<string, { size: number; mtimeMs: number; lastUsed: number }>;
}

const SHA = /^[0-9a-f]{64}$/;
const DEFAULT_RETRY: RetryPolicy = { attempts: 4, baseMs: 2000, maxMs: 60_000 };

type Events = { progress: [CacheProgress] };

export class MediaCache extends EventEmitter<Events> {
  readonly dir: string;
  readonly maxBytes: number;
  readonly #fs: FileSystem;
  readonly #fetch: Fetch;
  readonly #clock: { now(): number };
  readonly #retry: RetryPolicy;
  readonly #stallMs: number;
  readonly #progressEveryMs: number;
  readonly #limiter: Limiter;
  readonly #entries = new Map<string, Entry>();
  readonly #inFlight = new Map<string, Promise<EnsureResult>>();
  /** Bytes promised to downloads under way, so two of them cannot both count on the same room. */
  readonly #reserved = new Map<string, number>();
  readonly #progress = new Map<string, CacheProgress>();
  readonly #closing = new AbortController();
  #indexWrite: Promise<void> = Promise.resolve();
  #dirty = false;

  constructor(deps: CacheDeps) {
    super();
    this.dir = deps.dir;
    this.maxBytes = deps.maxBytes;
    this.#fs = deps.fs ?? nodeFs;
    this.#fetch = deps.fetch ?? globalThis.fetch;
    this.#clock = deps.clock ?? Date;
    this.#retry = { ...DEFAULT_RETRY, ...deps.retry };
    this.#stallMs = deps.stallMs ?? 30_000;
    this.#progressEveryMs = deps.progressEveryMs ?? 250;
    this.#limiter = new Limiter(deps.concurrency);
  }

  get #mediaDir(): string {
    return join(this.dir, 'media');
  }

  get #partialDir(): string {
    return join(this.dir, 'partial');
  }

  get #indexPath(): string {
    return join(this.dir, 'index.json');
  }

  /** Where a media file lives once installed (exists only after verification). */
  mediaPath(sha256: string): string {
    return join(this.#mediaDir, sha256);
  }

  partialPath(sha256: string): string {
    return join(this.#partialDir, `${sha256}.part`);
  }

  /**
   * Loads the index and checks every media file's size and mtime against it. A file that
   * changed behind our back is not trusted until ensure() re-hashes it.
   */
  async open(): Promise<CacheOpenReport> {
    await this.#fs.mkdir(this.#mediaDir, { recursive: true });
    await this.#fs.mkdir(this.#partialDir, { recursive: true });
    let index: IndexFile = { version: 1, items: {} };
    try {
      const parsed = JSON.parse(await this.#fs.readFile(this.#indexPath, 'utf8')) as IndexFile;
      if (parsed && typeof parsed.items === 'object' && parsed.items !== null) index = parsed;
    } catch {
      // Missing or unreadable: every file is re-hashed before use, nothing is lost.
    }
    const unverified: string[] = [];
    for (const name of await this.#fs.readdir(this.#mediaDir)) {
      const path = join(this.#mediaDir, name);
      if (name.endsWith('.tmp')) {
        await this.#fs.unlink(path).catch(() => {});
        continue;
      }
      if (!SHA.test(name)) continue;
      const stat = await this.#fs.stat(path);
      const known = index.items[name];
      const trusted = known !== undefined && known.size === stat.size && known.mtimeMs === stat.mtimeMs;
      this.#entries.set(name, {
        size: stat.size,
        mtimeMs: stat.mtimeMs,
        lastUsed: known?.lastUsed ?? 0,
        verified: trusted,
      });
      if (!trusted) unverified.push(name);
    }
    const partials = (await this.#fs.readdir(this.#partialDir)).filter((n) => n.endsWith('.part')).length;
    this.#dirty = true;
    await this.#flushIndex();
    return { items: this.#entries.size, bytes: this.#bytes(), unverified, partials };
  }

  /** Installed and trusted, without touching the disk. */
  has(item: CacheItem): boolean {
    const entry = this.#entries.get(item.sha256);
    return entry?.verified === true && entry.size === item.size;
  }

  /**
   * The path to give the player, or null. Checks size and mtime first: a file changed since
   * it was verified is not handed out (ensure() re-hashes and re-fetches it). Marks it used.
   */
  async path(item: CacheItem): Promise<string | null> {
    const entry = this.#entries.get(item.sha256);
    if (!entry?.verified || entry.size !== item.size) return null;
    const path = this.mediaPath(item.sha256);
    try {
      const stat = await this.#fs.stat(path);
      if (stat.size !== entry.size || stat.mtimeMs !== entry.mtimeMs) {
        entry.verified = false;
        return null;
      }
    } catch {
      this.#entries.delete(item.sha256);
      return null;
    }
    entry.lastUsed = this.#clock.now();
    this.#dirty = true;
    return path;
  }

  /**
   * Makes sure every item is cached and verified, downloading what is missing (at most
   * `concurrency` at once). Never throws for an item: each result says ok or why not.
   * `pinned` (sha256s) are what the current and next schedule need: never evicted for room.
   */
  async ensure(items: readonly CacheItem[], pinned: ReadonlySet<string> = new Set()): Promise<EnsureResult[]> {
    const keep = new Set([...pinned, ...items.map((i) => i.sha256)]);
    return Promise.all(items.map((item) => this.#ensureOne(item, keep)));
  }

  async #ensureOne(item: CacheItem, pinned: ReadonlySet<string>): Promise<EnsureResult> {
    const running = this.#inFlight.get(item.sha256);
    if (running) {
      const r = await running;
      return { ...r, id: item.id };
    }
    if (!this.has(item)) this.#emit(item, { state: 'queued', bytes: 0, attempt: 0 });
    const work = this.#limiter.run(() => this.#obtain(item, pinned));
    this.#inFlight.set(item.sha256, work);
    try {
      return await work;
    } finally {
      this.#inFlight.delete(item.sha256);
    }
  }

  async #obtain(item: CacheItem, pinned: ReadonlySet<string>): Promise<EnsureResult> {
    const path = this.mediaPath(item.sha256);
    const entry = this.#entries.get(item.sha256);
    if (entry && (await this.#stillGood(item, entry))) {
      return { id: item.id, sha256: item.sha256, ok: true, path };
    }
    let attempt = 0;
    for (;;) {
      attempt++;
      try {
        await this.#fetchOnce(item, attempt, pinned);
        this.#progress.delete(item.sha256);
        return { id: item.id, sha256: item.sha256, ok: true, path };
      } catch (caught) {
        const error =
          caught instanceof CacheError
            ? caught
            : new CacheError('ERR_CACHE_IO', item, (caught as Error)?.message ?? String(caught), { cause: caught });
        if (error.code === 'ERR_CACHE_DISK_FULL' && attempt < this.#retry.attempts) {
          // Room may be made by dropping media nobody needs now; else give the disk back.
          if ((await this.#evictUnpinned(pinned, item.size)) > 0) continue;
        }
        if (error.code === 'ERR_CACHE_DISK_FULL' || error.code === 'ERR_CACHE_CHECKSUM') {
          await this.#fs.unlink(this.partialPath(item.sha256)).catch(() => {});
        }
        const bytes = this.#progress.get(item.sha256)?.bytes ?? 0;
        if (error.retryable && attempt < this.#retry.attempts && !this.#closing.signal.aborted) {
          const wait = Math.min(this.#retry.maxMs, this.#retry.baseMs * 2 ** (attempt - 1));
          const retryInMs = Math.round(wait * (1 + Math.random() * 0.25));
          this.#emit(item, { state: 'retrying', bytes, attempt, retryInMs, error: error.toJSON() });
          await sleep(retryInMs, this.#closing.signal);
          continue;
        }
        this.#emit(item, { state: 'failed', bytes, attempt, error: error.toJSON() });
        return { id: item.id, sha256: item.sha256, ok: false, error: error.toJSON() };
      }
    }
  }

  /** Size and mtime unchanged and hashed before, or hashes right now. A bad file is deleted. */
  async #stillGood(item: CacheItem, entry: Entry): Promise<boolean> {
    const path = this.mediaPath(item.sha256);
    try {
      const stat = await this.#fs.stat(path);
      if (stat.size !== entry.size || stat.mtimeMs !== entry.mtimeMs) entry.verified = false;
      entry.size = stat.size;
      entry.mtimeMs = stat.mtimeMs;
    } catch {
      this.#entries.delete(item.sha256);
      return false;
    }
    if (entry.verified && entry.size === item.size) return true;
    if (entry.size === item.size) {
      this.#emit(item, { state: 'verifying', bytes: entry.size, attempt: 0 });
      if ((await this.#hash(path)) === item.sha256) {
        entry.verified = true;
        this.#dirty = true;
        await this.#flushIndex();
        this.#emit(item, { state: 'installed', bytes: entry.size, attempt: 0 });
        return true;
      }
    }
    // Changed on disk (bit rot, a hand edit, a truncated copy): drop it and fetch it again.
    await this.#fs.unlink(path).catch(() => {});
    this.#entries.delete(item.sha256);
    this.#dirty = true;
    await this.#flushIndex();
    return false;
  }

  async #fetchOnce(item: CacheItem, attempt: number, pinned: ReadonlySet<string>): Promise<void> {
    if (this.#closing.signal.aborted) throw new CacheError('ERR_CACHE_ABORTED', item, 'cache closed');
    await this.#reserve(item, pinned);
    try {
      let lastEmit = 0;
      this.#emit(item, { state: 'downloading', bytes: 0, attempt });
      const partial = this.partialPath(item.sha256);
      const result = await downloadAttempt(
        {
          subject: item,
          url: item.url,
          size: item.size,
          partialPath: partial,
          signal: this.#closing.signal,
          onBytes: (bytes, resumedFrom) => {
            const now = this.#clock.now();
            if (now - lastEmit < this.#progressEveryMs && bytes < item.size) return;
            lastEmit = now;
            this.#emit(item, { state: 'downloading', bytes, attempt, resumedFrom });
          },
        },
        { fetch: this.#fetch, fs: this.#fs, stallMs: this.#stallMs },
      );
      this.#emit(item, { state: 'verifying', bytes: item.size, attempt, resumedFrom: result.resumedFrom });
      const actual = await this.#hash(partial);
      if (actual !== item.sha256) {
        throw new CacheError(
          'ERR_CACHE_CHECKSUM',
          item,
          `sha256 of the download is ${actual}, expected ${item.sha256}; not installed`,
        );
      }
      const target = this.mediaPath(item.sha256);
      try {
        await installAtomic(this.#fs, partial, target);
      } catch (error) {
        throw new CacheError('ERR_CACHE_IO', item, `cannot install ${target}: ${(error as Error).message}`, {
          cause: error,
        });
      }
      const stat = await this.#fs.stat(target);
      this.#entries.set(item.sha256, {
        size: stat.size,
        mtimeMs: stat.mtimeMs,
        lastUsed: this.#clock.now(),
        verified: true,
      });
      this.#dirty = true;
      await this.#flushIndex().catch(() => {
        // The file is installed; a stale index only costs a re-hash on the next start.
      });
      this.#emit(item, { state: 'installed', bytes: item.size, attempt, resumedFrom: result.resumedFrom });
    } finally {
      this.#reserved.delete(item.sha256);
    }
  }

  /** Makes room under maxBytes for `item`, evicting the least recently used unpinned media. */
  async #reserve(item: CacheItem, pinned: ReadonlySet<string>): Promise<void> {
    const need = item.size;
    if (need > this.maxBytes) {
      throw new CacheError('ERR_CACHE_LIMIT', item, `${need} bytes is more than cache.maxBytes (${this.maxBytes})`);
    }
    const used = (): number => this.#bytes() + [...this.#reserved.values()].reduce((a, b) => a + b, 0);
    const victims = [...this.#entries.entries()]
      .filter(([sha]) => !pinned.has(sha) && !this.#inFlight.has(sha))
      .sort((a, b) => a[1].lastUsed - b[1].lastUsed);
    while (used() + need > this.maxBytes) {
      const victim = victims.shift();
      if (!victim) {
        throw new CacheError(
          'ERR_CACHE_LIMIT',
          item,
          `needs ${need} bytes but only ${this.maxBytes - used()} of cache.maxBytes (${this.maxBytes}) are free and the rest is media the current or next schedule needs`,
        );
      }
      await this.#evict(victim[0]);
    }
    this.#reserved.set(item.sha256, need);
  }

  /** On a full disk: drops unpinned media, oldest use first, until `need` bytes are freed. */
  async #evictUnpinned(pinned: ReadonlySet<string>, need: number): Promise<number> {
    let freed = 0;
    const victims = [...this.#entries.entries()]
      .filter(([sha]) => !pinned.has(sha) && !this.#inFlight.has(sha))
      .sort((a, b) => a[1].lastUsed - b[1].lastUsed);
    for (const [sha, entry] of victims) {
      if (freed >= need) break;
      await this.#evict(sha);
      freed += entry.size;
    }
    return freed;
  }

  async #evict(sha256: string): Promise<void> {
    const entry = this.#entries.get(sha256);
    await this.#fs.unlink(this.mediaPath(sha256)).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
    this.#entries.delete(sha256);
    this.#dirty = true;
    await this.#flushIndex().catch(() => {});
    this.emit('progress', {
      id: sha256,
      sha256,
      url: '',
      state: 'evicted',
      bytes: entry?.size ?? 0,
      total: entry?.size ?? 0,
      attempt: 0,
    });
  }

  async #hash(path: string): Promise<string> {
    const hash = createHash('sha256');
    const handle = await this.#fs.open(path, 'r');
    try {
      const buffer = new Uint8Array(1 << 20);
      for (;;) {
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
        if (bytesRead === 0) break;
        hash.update(buffer.subarray(0, bytesRead));
      }
    } finally {
      await handle.close();
    }
    return hash.digest('hex');
  }

  #bytes(): number {
    let total = 0;
    for (const e of this.#entries.values()) total += e.size;
    return total;
  }

  #emit(item: CacheItem, fields: Omit<CacheProgress, 'id' | 'sha256' | 'url' | 'total'>): void {
    const progress: CacheProgress = { id: item.id, sha256: item.sha256, url: item.url, total: item.size, ...fields };
    if (progress.state === 'installed') this.#progress.delete(item.sha256);
    else this.#progress.set(item.sha256, progress);
    this.emit('progress', progress);
  }

  /** Index writes are serialised: the last one holds the newest state. */
  #flushIndex(): Promise<void> {
    this.#indexWrite = this.#indexWrite
      .catch(() => {})
      .then(async () => {
        if (!this.#dirty) return;
        this.#dirty = false;
        const items: IndexFile['items'] = {};
        for (const [sha, e] of this.#entries) {
          if (e.verified) items[sha] = { size: e.size, mtimeMs: e.mtimeMs, lastUsed: e.lastUsed };
        }
        const index: IndexFile = { version: 1, items };
        try {
          await writeFileAtomic(this.#fs, this.#indexPath, `${JSON.stringify(index)}\n`);
        } catch (error) {
          this.#dirty = true;
          throw error;
        }
      });
    return this.#indexWrite;
  }

  status(): CacheStatus {
    return {
      dir: this.dir,
      bytes: this.#bytes(),
      maxBytes: this.maxBytes,
      items: this.#entries.size,
      unverified: [...this.#entries.values()].filter((e) => !e.verified).length,
      downloads: [...this.#progress.values()],
    };
  }

  /** Stops downloads (their partial files stay for the next start) and saves the index. */
  async close(): Promise<void> {
    this.#closing.abort();
    await Promise.allSettled([...this.#inFlight.values()]);
    await this.#flushIndex().catch(() => {});
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
