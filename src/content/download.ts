import { writeAll } from '../fs/atomic.ts';
import { urlProblem, WEB_SCHEMES } from '../playback/source-policy.ts';
import { CacheError, type CacheErrorSubject } from './cache-error.ts';
import type { FileHandleLike, FileSystem } from './fs.ts';

export type Fetch = typeof globalThis.fetch;

/** Bytes gathered before one write to the partial file. */
const WRITE_BATCH = 256 * 1024;

/**
 * The partial file is synced to disk each time it grows past a multiple of this. After a
 * power cut its length cannot be trusted: ext4 records a new size when it allocates the
 * blocks, and blocks whose write never finished read back as zeros (a resumed firmware
 * download then failed its digest under QEMU). So a partial this process did not leave
 * itself is resumed one step below its last whole step, where the sync before it is proven
 * to have finished. Costs at most two steps fetched again after a crash or restart.
 */
export const DURABLE_STEP = 4 * 1024 * 1024;

/**
 * Lengths of partial files as this process left them after an attempt: its own writes are in
 * the page cache, so its retries resume at the exact byte.
 */
const leftByThisProcess = new Map<string, number>();

/**
 * Where to resume a partial of `onDisk` bytes written by an earlier process or boot: the
 * writer syncs after crossing every multiple of `step` and writes less than a step beyond it
 * before that sync has finished, so a file that reached step k+1 holds step k for sure.
 */
export function resumePoint(onDisk: number, step: number): number {
  return Math.max(0, (Math.floor(onDisk / step) - 1) * step);
}

export interface DownloadRequest {
  readonly subject: CacheErrorSubject;
  readonly url: string;
  /** Expected size in bytes (from the content document). */
  readonly size: number;
  /** Where the bytes go; resumed from its current length if it exists. */
  readonly partialPath: string;
  readonly onBytes?: (bytes: number, resumedFrom: number) => void;
  /**
   * Called with each chunk's size once it is taken; the next chunk is read only when it
   * resolves (a bandwidth limit: firmware updates). Its wait does not count as a stall.
   */
  readonly throttle?: (bytes: number) => Promise<void>;
  readonly signal?: AbortSignal;
}

export interface DownloadDeps {
  readonly fetch: Fetch;
  readonly fs: FileSystem;
  /** No byte for this long (headers or body) aborts the attempt, so a hung server cannot block a slot. */
  readonly stallMs: number;
  /** Sync interval and resume granularity (DURABLE_STEP; tests use small files). */
  readonly durableStep?: number;
}

export interface DownloadResult {
  /** Bytes already in the partial file when this attempt started (0: from scratch). */
  readonly resumedFrom: number;
  /** Bytes this attempt fetched. */
  readonly fetched: number;
}

async function sizeOf(fs: FileSystem, path: string): Promise<number> {
  try {
    return (await fs.stat(path)).size;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw error;
  }
}

function ioError(subject: CacheErrorSubject, path: string, error: unknown, written: string): CacheError {
  const e = error as NodeJS.ErrnoException;
  if (e?.code === 'ENOSPC' || e?.code === 'EDQUOT') {
    return new CacheError('ERR_CACHE_DISK_FULL', subject, `disk full writing ${path} (${written})`, { cause: error });
  }
  return new CacheError('ERR_CACHE_IO', subject, `cannot write ${path}: ${e?.message ?? String(error)}`, {
    cause: error,
  });
}

/** Cuts a partial back to the length it is known to hold, durably, before a resume. */
async function partialTruncate(
  fs: FileSystem,
  path: string,
  length: number,
  subject: CacheErrorSubject,
): Promise<void> {
  let handle: FileHandleLike | undefined;
  try {
    handle = await fs.open(path, 'r+');
    await handle.truncate(length);
    await handle.sync();
  } catch (error) {
    throw ioError(subject, path, error, `truncating to ${length} bytes for the resume`);
  } finally {
    await handle?.close().catch(() => {});
  }
}

/**
 * One download attempt into the partial file, resuming with an HTTP Range request when part
 * of it is there. Returns when the file holds exactly `size` bytes (not yet verified: the
 * caller checks the sha256). Throws CacheError; a retryable one leaves the partial file for
 * the next attempt to resume.
 */
export async function downloadAttempt(request: DownloadRequest, deps: DownloadDeps): Promise<DownloadResult> {
  const { subject, size, partialPath } = request;
  // The source policy's rule, the same one content validation applies: a URL that got past
  // neither would be refused here rather than handed to fetch.
  const problem = urlProblem(request.url, WEB_SCHEMES);
  if (problem !== undefined) throw new CacheError('ERR_CACHE_BAD_URL', subject, `the URL ${problem}`);
  const url = new URL(request.url);

  const step = deps.durableStep ?? DURABLE_STEP;
  const onDisk = await sizeOf(deps.fs, partialPath);
  let offset = onDisk;
  if (offset > size) {
    await deps.fs.unlink(partialPath);
    offset = 0;
  } else if (leftByThisProcess.get(partialPath) !== onDisk) {
    offset = resumePoint(onDisk, step);
    if (offset < onDisk) {
      await partialTruncate(deps.fs, partialPath, offset, subject);
      // Now synced at that length: a retry after a failure before the first byte keeps it.
      leftByThisProcess.set(partialPath, offset);
    }
  }
  if (offset === size) return { resumedFrom: offset, fetched: 0 };

  const controller = new AbortController();
  let stalled = false;
  let timer: NodeJS.Timeout | undefined;
  const arm = (): void => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      stalled = true;
      controller.abort();
    }, deps.stallMs);
  };
  const onOuterAbort = (): void => controller.abort();
  request.signal?.addEventListener('abort', onOuterAbort, { once: true });

  let file: FileHandleLike | undefined;
  let fetched = 0;
  let written = 0;
  let flush = async (): Promise<void> => {};
  const failure = (error: unknown): CacheError => {
    if (error instanceof CacheError) return error;
    if (request.signal?.aborted)
      return new CacheError('ERR_CACHE_ABORTED', subject, 'download stopped (shutting down)');
    if (stalled) {
      return new CacheError(
        'ERR_CACHE_STALLED',
        subject,
        `no data for ${deps.stallMs} ms (at byte ${offset + fetched})`,
      );
    }
    const cause = (error as { cause?: { code?: string; message?: string } })?.cause;
    const detail = cause?.code ?? cause?.message ?? (error as Error)?.message ?? String(error);
    return new CacheError('ERR_CACHE_NETWORK', subject, `connection failed at byte ${offset + fetched}: ${detail}`, {
      cause: error,
    });
  };

  try {
    arm();
    const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
    const response = await deps.fetch(url, { headers, signal: controller.signal, redirect: 'follow' });
    arm();
    let start = offset;
    if (response.status === 416 && offset > 0) {
      // The server says our partial is already as long as the file, or the file shrank.
      await response.body?.cancel();
      await deps.fs.unlink(partialPath);
      throw new CacheError('ERR_CACHE_SIZE', subject, `server refused bytes ${offset}- (416): the file changed size`, {
        status: 416,
      });
    }
    if (response.status === 404 || response.status === 410) {
      await response.body?.cancel();
      throw new CacheError('ERR_CACHE_NOT_FOUND', subject, `HTTP ${response.status}`, { status: response.status });
    }
    if (response.status !== 200 && response.status !== 206) {
      await response.body?.cancel();
      throw new CacheError('ERR_CACHE_HTTP', subject, `HTTP ${response.status} ${response.statusText}`.trim(), {
        status: response.status,
      });
    }
    if (response.status === 206) {
      const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(response.headers.get('content-range') ?? '');
      if (!range || Number(range[1]) !== offset) {
        await response.body?.cancel();
        throw new CacheError(
          'ERR_CACHE_HTTP',
          subject,
          `asked for bytes ${offset}- but got Content-Range ${JSON.stringify(response.headers.get('content-range'))}`,
          { status: 206 },
        );
      }
      if (range[3] !== '*' && Number(range[3]) !== size) {
        await response.body?.cancel();
        throw new CacheError('ERR_CACHE_SIZE', subject, `the server has ${range[3]} bytes, expected ${size}`);
      }
    } else {
      // 200: the whole file (no partial, or a server without Range support): start over.
      start = 0;
      const length = response.headers.get('content-length');
      if (length !== null && Number(length) !== size) {
        await response.body?.cancel();
        throw new CacheError('ERR_CACHE_SIZE', subject, `the server has ${length} bytes, expected ${size}`);
      }
    }
    offset = start;
    try {
      file = await deps.fs.open(partialPath, start === 0 ? 'w' : 'a', 0o644);
    } catch (error) {
      throw ioError(subject, partialPath, error, 'opening');
    }
    // Network chunks are small (16-64 KiB); writing them in batches costs far fewer syscalls.
    let pending: Uint8Array[] = [];
    let pendingBytes = 0;
    flush = async (): Promise<void> => {
      if (pendingBytes === 0 || !file) return;
      const batch = Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
      const before = offset + written;
      try {
        await writeAll(file, batch);
        written += batch.length;
        // Crossing a step: sync before writing on (resumePoint relies on it).
        if (Math.floor((offset + written) / step) > Math.floor(before / step)) await file.sync();
      } catch (error) {
        throw ioError(subject, partialPath, error, `${offset + written} of ${size} bytes written`);
      }
    };
    if (response.body) {
      for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
        arm();
        if (offset + fetched + chunk.length > size) {
          throw new CacheError('ERR_CACHE_SIZE', subject, `the server sent more than the expected ${size} bytes`);
        }
        pending.push(chunk);
        pendingBytes += chunk.length;
        fetched += chunk.length;
        if (pendingBytes >= WRITE_BATCH) await flush();
        request.onBytes?.(offset + fetched, offset);
        if (request.throttle) {
          clearTimeout(timer);
          await request.throttle(chunk.length);
          arm();
        }
      }
    }
    await flush();
    if (offset + fetched !== size) {
      throw new CacheError('ERR_CACHE_NETWORK', subject, `the response ended at byte ${offset + fetched} of ${size}`);
    }
    try {
      await file.sync();
    } catch (error) {
      throw ioError(subject, partialPath, error, 'syncing');
    }
    leftByThisProcess.delete(partialPath);
    return { resumedFrom: offset, fetched };
  } catch (error) {
    // Bytes that arrived before a network failure are good: keep them for the resume.
    if (!(error instanceof CacheError && (error.code === 'ERR_CACHE_DISK_FULL' || error.code === 'ERR_CACHE_IO'))) {
      await flush().catch(() => {});
    }
    if (file) leftByThisProcess.set(partialPath, offset + written);
    throw failure(error);
  } finally {
    clearTimeout(timer);
    request.signal?.removeEventListener('abort', onOuterAbort);
    await file?.close().catch(() => {});
  }
}
