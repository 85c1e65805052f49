import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { installAtomic, writeFileAtomic } from '../fs/atomic.ts';
import { CacheError, type CacheErrorCode } from './cache-error.ts';
import { downloadAttempt, type Fetch } from './download.ts';
import { type FileSystem, nodeFs } from './fs.ts';
import { Limiter } from './limiter.ts';

/**
 * The offline media cache under `<dataDir>/cache`:
 *
 *   media/<sha256>          verified files, the only ones ever handed to the player
 *   partial/<sha256>.part   downloads in progress (resumed with HTTP Range after a crash, when the
 *                           content still needs them; any other file there is collected at open)
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
  /**
   * Bytes always left free on the cache's filesystem (config, content and logs share it): the
   * cache never grows past free space minus this. 0: only `maxBytes` limits it.
   */
  readonly reserveBytes?: number;
  /**
   * The sha256s on screen now (every output's current item, and what is prerolled): never
   * evicted, whatever the schedule says, asked afresh at every eviction.
   */
  readonly inUse?: () => Iterable<string>;
  readonly concurrency: number;
  readonly fetch?: Fetch;
  readonly fs?: FileSystem;
  readonly clock?: { now(): number };
  readonly retry?: Partial<RetryPolicy>;
  readonly stallMs?: number;
  /** The downloader's sync interval and resume granularity (download.ts DURABLE_STEP). */
  readonly durableStep?: number;
  /** Least time between two progress events of one download. */
  readonly progressEveryMs?: number;
}

export interface CacheOpenReport {
  readonly items: number;
  readonly bytes: number;
  /** Files whose size or mtime no longer match the index: re-hashed before use. */
  readonly unverified: string[];
  /** Partial downloads kept to be resumed (the content still needs them). */
  readonly partials: number;
  /** Partial downloads nobody needs any more (or foreign files in partial/): deleted. */
  readonly orphansCollected: number;
  readonly orphanBytesCollected: number;
}

export interface CacheStatus {
  readonly dir: string;
  readonly bytes: number;
  readonly maxBytes: number;
  readonly reserveBytes: number;
  /** The cap at the last check: the smaller of maxBytes and what free space minus the reserve allows. */
  readonly limitBytes: number;
  /** Free bytes on the cache's filesystem at the last check (null: not known). */
  readonly freeBytes: number | null;
  readonly items: number;
  readonly unverified: number;
  /** Bytes in partial downloads kept for a resume (counted against the cap). */
  readonly partialBytes: number;
  /** Orphaned partial downloads deleted when the cache was opened. */
  readonly orphansCollected: { files: number; bytes: number };
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
  readonly reserveBytes: number;
  readonly #inUse: () => Iterable<string>;
  readonly #fs: FileSystem;
  readonly #fetch: Fetch;
  readonly #clock: { now(): number };
  readonly #retry: RetryPolicy;
  readonly #stallMs: number;
  readonly #durableStep: number | undefined;
  readonly #progressEveryMs: number;
  readonly #limiter: Limiter;
  readonly #entries = new Map<string, Entry>();
  readonly #inFlight = new Map<string, Promise<EnsureResult>>();
  /** Bytes promised to downloads under way, so two of them cannot both count on the same room. */
  readonly #reserved = new Map<string, number>();
  readonly #progress = new Map<string, CacheProgress>();
  /** Partial files on disk that no download is writing now (kept for a resume), by sha256. */
  readonly #leftover = new Map<string, number>();
  #orphans = { files: 0, bytes: 0 };
  #limit = { bytes: 0, free: null as number | null };
  readonly #closing = new AbortController();
  #indexWrite: Promise<void> = Promise.resolve();
  #dirty = false;

  constructor(deps: CacheDeps) {
    super();
    this.dir = deps.dir;
    this.maxBytes = deps.maxBytes;
    this.reserveBytes = deps.reserveBytes ?? 0;
    this.#inUse = deps.inUse ?? (() => []);
    this.#limit = { bytes: deps.maxBytes, free: null };
    this.#fs = deps.fs ?? nodeFs;
    this.#fetch = deps.fetch ?? globalThis.fetch;
    this.#clock = deps.clock ?? Date;
    this.#retry = { ...DEFAULT_RETRY, ...deps.retry };
    this.#stallMs = deps.stallMs ?? 30_000;
    this.#durableStep = deps.durableStep;
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
   * changed behind our back is not trusted until ensure() re-hashes it. Partial downloads of
   * `wanted` media (sha256s) are kept to be resumed; every other file in partial/ is an orphan
   * (a crash, or content that changed while it downloaded) and is deleted.
   */
  async open(wanted: ReadonlySet<string> = new Set()): Promise<CacheOpenReport> {
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
    await this.#collectPartials(wanted);
    this.#dirty = true;
    await this.#flushIndex();
    return {
      items: this.#entries.size,
      bytes: this.#bytes(),
      unverified,
      partials: this.#leftover.size,
      orphansCollected: this.#orphans.files,
      orphanBytesCollected: this.#orphans.bytes,
    };
  }

  async #collectPartials(wanted: ReadonlySet<string>): Promise<void> {
    for (const name of await this.#fs.readdir(this.#partialDir)) {
      const path = join(this.#partialDir, name);
      const sha = name.endsWith('.part') ? name.slice(0, -'.part'.length) : '';
      let size = 0;
      try {
        size = (await this.#fs.stat(path)).size;
      } catch {
        continue;
      }
      if (SHA.test(sha) && wanted.has(sha)) {
        this.#leftover.set(sha, size);
        continue;
      }
      try {
        await this.#fs.unlink(path);
        this.#orphans = { files: this.#orphans.files + 1, bytes: this.#orphans.bytes + size };
      } catch {
        // A directory or a file we may not delete: not ours to fight over; it is left.
      }
    }
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
        await this.#keepLeftover(item.sha256);
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
        {
          fetch: this.#fetch,
          fs: this.#fs,
          stallMs: this.#stallMs,
          ...(this.#durableStep ? { durableStep: this.#durableStep } : {}),
        },
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

  /**
   * Makes room for `item` under the cap (the smaller of maxBytes and free space minus the
   * reserve), evicting the least recently used media that is neither pinned nor on screen.
   * Evicts nothing when even that would not make enough room.
   */
  async #reserve(item: CacheItem, pinned: ReadonlySet<string>): Promise<void> {
    const need = item.size;
    if (need > this.maxBytes) {
      throw new CacheError('ERR_CACHE_LIMIT', item, `${need} bytes is more than cache.maxBytes (${this.maxBytes})`);
    }
    // Its own partial (a resume) is part of `need` from here on.
    this.#leftover.delete(item.sha256);
    const limit = await this.#limitNow();
    const used = (): number =>
      this.#bytes() +
      [...this.#reserved.values()].reduce((a, b) => a + b, 0) +
      [...this.#leftover.values()].reduce((a, b) => a + b, 0);
    const victims = this.#victims(pinned);
    const freeable = victims.reduce((a, v) => a + v.size, 0);
    if (used() - freeable + need > limit) {
      throw new CacheError('ERR_CACHE_LIMIT', item, this.#noRoom(need, limit, used() - freeable));
    }
    // Claimed before evicting, so a download reserving meanwhile cannot count on the same room.
    this.#reserved.set(item.sha256, need);
    while (used() > limit) {
      const victim = victims.shift();
      if (!victim) break;
      await victim.drop();
    }
  }

  #noRoom(need: number, limit: number, kept: number): string {
    const free = this.#limit.free;
    const bound =
      limit < this.maxBytes && free !== null
        ? `the cache may use ${limit} bytes (${free} free on its filesystem minus cache.reserveBytes ${this.reserveBytes}, plus what it holds)`
        : `the cache may use cache.maxBytes (${this.maxBytes})`;
    return `needs ${need} bytes but ${bound} and ${kept} bytes of it are media on screen or that the current or next schedule needs (or downloads under way); not downloaded`;
  }

  /**
   * The cap now: maxBytes, or less when the filesystem is fuller. What the cache holds on disk
   * (media and partial files) counts as room it may reuse; the reserve is never touched.
   */
  async #limitNow(): Promise<number> {
    if (!this.#fs.statfs) return this.maxBytes;
    let free: number;
    try {
      const s = await this.#fs.statfs(this.dir);
      free = Number(s.bavail) * Number(s.bsize);
    } catch {
      return this.maxBytes;
    }
    const onDisk = this.#bytes() + (await this.#partialBytesOnDisk());
    const bytes = Math.max(0, Math.min(this.maxBytes, onDisk + free - this.reserveBytes));
    this.#limit = { bytes, free };
    return bytes;
  }

  async #partialBytesOnDisk(): Promise<number> {
    let total = 0;
    for (const name of await this.#fs.readdir(this.#partialDir).catch(() => [] as string[])) {
      total += await this.#fs
        .stat(join(this.#partialDir, name))
        .then((s) => s.size)
        .catch(() => 0);
    }
    return total;
  }

  #pinnedNow(pinned: ReadonlySet<string>): Set<string> {
    return new Set([...pinned, ...this.#inUse()]);
  }

  /** What may go to make room, cheapest loss first: kept partials, then media by oldest use. */
  #victims(pinned: ReadonlySet<string>): Array<{ size: number; drop: () => Promise<void> }> {
    const keep = this.#pinnedNow(pinned);
    const partials = [...this.#leftover.entries()]
      .filter(([sha]) => !keep.has(sha) && !this.#inFlight.has(sha))
      .map(([sha, size]) => ({ size, drop: () => this.#dropLeftover(sha) }));
    const media = [...this.#entries.entries()]
      .filter(([sha]) => !keep.has(sha) && !this.#inFlight.has(sha))
      .sort((a, b) => a[1].lastUsed - b[1].lastUsed)
      .map(([sha, entry]) => ({ size: entry.size, drop: () => this.#evict(sha) }));
    return [...partials, ...media];
  }

  async #dropLeftover(sha256: string): Promise<void> {
    await this.#fs.unlink(this.partialPath(sha256)).catch(() => {});
    this.#leftover.delete(sha256);
  }

  /** A download that gave up may leave its partial file for a later resume: it counts as used. */
  async #keepLeftover(sha256: string): Promise<void> {
    try {
      this.#leftover.set(sha256, (await this.#fs.stat(this.partialPath(sha256))).size);
    } catch {
      this.#leftover.delete(sha256);
    }
  }

  /** On a full disk: drops what is neither pinned nor on screen, until `need` bytes are freed. */
  async #evictUnpinned(pinned: ReadonlySet<string>, need: number): Promise<number> {
    let freed = 0;
    for (const victim of this.#victims(pinned)) {
      if (freed >= need) break;
      await victim.drop();
      freed += victim.size;
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
      reserveBytes: this.reserveBytes,
      limitBytes: this.#limit.bytes,
      freeBytes: this.#limit.free,
      items: this.#entries.size,
      unverified: [...this.#entries.values()].filter((e) => !e.verified).length,
      partialBytes: [...this.#leftover.values()].reduce((a, b) => a + b, 0),
      orphansCollected: { ...this.#orphans },
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
