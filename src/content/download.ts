import { writeAll } from '../fs/atomic.ts';
import { urlProblem, WEB_SCHEMES } from '../playback/source-policy.ts';
import { CacheError, type CacheErrorSubject } from './cache-error.ts';
import type { FileHandleLike, FileSystem } from './fs.ts';

export type Fetch = typeof globalThis.fetch;

/** Bytes gathered before one write to the partial file. */
const WRITE_BATCH = 256 * 1024;

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

  let offset = await sizeOf(deps.fs, partialPath);
  if (offset > size) {
    await deps.fs.unlink(partialPath);
    offset = 0;
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
    let written = 0;
    flush = async (): Promise<void> => {
      if (pendingBytes === 0 || !file) return;
      const batch = Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
      try {
        await writeAll(file, batch);
      } catch (error) {
        throw ioError(subject, partialPath, error, `${offset + written} of ${size} bytes written`);
      }
      written += batch.length;
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
    return { resumedFrom: offset, fetched };
  } catch (error) {
    // Bytes that arrived before a network failure are good: keep them for the resume.
    if (!(error instanceof CacheError && (error.code === 'ERR_CACHE_DISK_FULL' || error.code === 'ERR_CACHE_IO'))) {
      await flush().catch(() => {});
    }
    throw failure(error);
  } finally {
    clearTimeout(timer);
    request.signal?.removeEventListener('abort', onOuterAbort);
    await file?.close().catch(() => {});
  }
}
