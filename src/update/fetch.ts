import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { CacheError } from '../content/cache-error.ts';
import { downloadAttempt, type Fetch } from '../content/download.ts';
import type { FileSystem } from '../content/fs.ts';
import { installAtomic } from '../fs/atomic.ts';
import type { RateLimiter } from '../rate-limit.ts';
import { UpdateError } from './errors.ts';
import { type Artefact, artefactUrl } from './manifest.ts';

export interface RetryPolicy {
  /** Attempts per artefact for failures the network may recover from (cut, stall, 5xx). */
  readonly attempts: number;
  readonly baseMs: number;
  readonly maxMs: number;
}

export const RETRY_DEFAULT: RetryPolicy = { attempts: 5, baseMs: 2000, maxMs: 60_000 };

export interface ArtefactsFetchDeps {
  readonly fetch: Fetch;
  readonly fs: FileSystem;
  /** Free space of the file system holding a path (node's fs.statfs; tests inject a full disk). */
  readonly statfs: (path: string) => Promise<{ bavail: number | bigint; bsize: number | bigint }>;
  /** The bandwidth limit (`update.maxBytesPerSecond`, bytes as tokens); none: unlimited. */
  readonly limiter?: RateLimiter;
  readonly retry: RetryPolicy;
  /** No byte for this long aborts an attempt (then it resumes). */
  readonly stallMs: number;
  readonly signal: AbortSignal;
  /** Bytes of all artefacts on disk so far, of the total (after each chunk). */
  readonly onBytes: (done: number, total: number) => void;
}

/** The partial download of an artefact: renamed to its own name only after its sha256 matched. */
export const partialName = (artefact: Artefact): string => `${artefact.name}.partial`;

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

async function sizeOnDisk(fs: FileSystem, path: string): Promise<number | undefined> {
  try {
    return (await fs.stat(path)).size;
  } catch {
    return undefined;
  }
}

/** Network failures are worth another attempt after a pause; the rest end the job at once. */
function downloadFailure(error: unknown, artefact: Pick<Artefact, 'name'>): UpdateError {
  if (error instanceof UpdateError) return error;
  if (error instanceof CacheError) {
    // The content downloader names the item and its URL; its code says what kind of failure.
    if (error.code === 'ERR_CACHE_DISK_FULL')
      return new UpdateError('ERR_UPDATE_SPACE', error.message, { cause: error });
    if (error.code === 'ERR_CACHE_ABORTED')
      return new UpdateError('ERR_UPDATE_ABORTED', error.message, { cause: error });
    return new UpdateError('ERR_UPDATE_DOWNLOAD', error.message, { cause: error });
  }
  return new UpdateError('ERR_UPDATE_DOWNLOAD', `${artefact.name}: ${(error as Error)?.message ?? String(error)}`, {
    cause: error,
  });
}

/** Runs `attempt` until it succeeds, a failure is not worth retrying, or the attempts are spent. */
export async function withRetries<T>(
  deps: Pick<ArtefactsFetchDeps, 'retry' | 'signal'>,
  artefact: Pick<Artefact, 'name'>,
  attempt: () => Promise<T>,
): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (error) {
      const retryable =
        error instanceof CacheError || error instanceof UpdateError ? error.retryable : !deps.signal.aborted;
      if (!retryable || n >= deps.retry.attempts || deps.signal.aborted) throw downloadFailure(error, artefact);
      const wait = Math.min(deps.retry.maxMs, deps.retry.baseMs * 2 ** (n - 1));
      await sleep(Math.round(wait * (1 + Math.random() * 0.25)), deps.signal);
    }
  }
}

/** The artefact's size from a HEAD request: the space check needs every size before the first byte. */
async function sizeAsk(url: string, artefact: Artefact, deps: ArtefactsFetchDeps): Promise<number> {
  return withRetries(deps, artefact, async () => {
    const signal = AbortSignal.any([deps.signal, AbortSignal.timeout(deps.stallMs)]);
    const head = await deps.fetch(url, { method: 'HEAD', redirect: 'follow', signal });
    if (head.status === 403 || head.status === 405 || head.status === 501) {
      // A URL signed for GET only, or a server without HEAD: the first byte's Content-Range says the size.
      const first = await deps.fetch(url, { headers: { range: 'bytes=0-0' }, redirect: 'follow', signal });
      await first.body?.cancel();
      const total = /\/(\d+)$/.exec(first.headers.get('content-range') ?? '')?.[1];
      if (first.status === 206 && total !== undefined) return Number(total);
    }
    const response = head;
    if (response.status !== 200) {
      throw new CacheError('ERR_CACHE_HTTP', { id: artefact.name, url }, `HEAD: HTTP ${response.status}`, {
        status: response.status,
      });
    }
    const length = Number(response.headers.get('content-length'));
    if (!Number.isSafeInteger(length) || length <= 0) {
      throw new UpdateError(
        'ERR_UPDATE_DOWNLOAD',
        `${artefact.name}: the server does not say its size (no Content-Length on HEAD)`,
      );
    }
    return length;
  });
}

export interface Fetched {
  readonly bytesTotal: number;
  /** Bytes that were already on disk from an earlier, interrupted job. */
  readonly resumedBytes: number;
}

/**
 * Downloads the artefacts into `dir` as `<name>.partial` with the content downloader (HTTP Range
 * resume after a cut, stall detection), retrying network failures, within the bandwidth limit.
 * Before the first byte: every size (HEAD), and the free space of the data partition against
 * what is still missing (ERR_UPDATE_SPACE: an update must never fill the disk the box keeps
 * its config and media on). An artefact whose verified file is already there is skipped.
 */
export async function artefactsFetch(
  base: string,
  artefacts: readonly Artefact[],
  dir: string,
  deps: ArtefactsFetchDeps,
): Promise<Fetched> {
  const plan: Array<{ artefact: Artefact; url: string; size: number; have: number; partial: string }> = [];
  for (const artefact of artefacts) {
    const url = artefactUrl(base, artefact.name);
    const size = await sizeAsk(url, artefact, deps);
    const partial = join(dir, partialName(artefact));
    const final = await sizeOnDisk(deps.fs, join(dir, artefact.name));
    const have = final === size ? size : Math.min(size, (await sizeOnDisk(deps.fs, partial)) ?? 0);
    plan.push({ artefact, url, size, have, partial });
  }
  const bytesTotal = plan.reduce((sum, p) => sum + p.size, 0);
  const resumedBytes = plan.reduce((sum, p) => sum + p.have, 0);
  const missing = bytesTotal - resumedBytes;
  const { bavail, bsize } = await deps.statfs(dir);
  const free = Number(bavail) * Number(bsize);
  if (missing > free) {
    throw new UpdateError(
      'ERR_UPDATE_SPACE',
      `the update needs ${missing} more bytes in ${dir} but the data partition has ${free} free; nothing was downloaded`,
    );
  }
  const done = new Map(plan.map((p) => [p.artefact.name, p.have]));
  const report = (): void =>
    deps.onBytes(
      [...done.values()].reduce((a, b) => a + b, 0),
      bytesTotal,
    );
  report();
  for (const p of plan) {
    if (p.have === p.size && (await sizeOnDisk(deps.fs, join(dir, p.artefact.name))) === p.size) continue;
    await withRetries(deps, p.artefact, () =>
      downloadAttempt(
        {
          subject: { id: p.artefact.name, url: p.url },
          url: p.url,
          size: p.size,
          partialPath: p.partial,
          signal: deps.signal,
          onBytes: (bytes) => {
            done.set(p.artefact.name, bytes);
            report();
          },
          ...(deps.limiter ? { throttle: throttleOf(deps.limiter, deps.signal) } : {}),
        },
        { fetch: deps.fetch, fs: deps.fs, stallMs: deps.stallMs },
      ),
    );
    done.set(p.artefact.name, p.size);
    report();
  }
  return { bytesTotal, resumedBytes };
}

/** Pauses the reader until the bytes just read are paid for in the limiter's bucket. */
function throttleOf(limiter: RateLimiter, signal: AbortSignal): (bytes: number) => Promise<void> {
  return async (bytes) => {
    const ms = limiter.reserve('update', bytes);
    if (ms > 0) await sleep(ms, signal);
  };
}

/** The sha256 of a file, streamed (a root image is hundreds of MB: never whole in memory, never blocking). */
export async function fileSha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Checks each downloaded artefact against the signed digest list and only then gives it its
 * own name: what the installer is pointed at has been verified, byte for byte. A mismatch
 * deletes the partial file (its bytes are wrong; the next job fetches it again) and is
 * ERR_UPDATE_SIGNATURE: the file is not what the signer signed.
 */
export async function artefactsVerify(artefacts: readonly Artefact[], dir: string, fs: FileSystem): Promise<void> {
  for (const artefact of artefacts) {
    const final = join(dir, artefact.name);
    const partial = join(dir, partialName(artefact));
    const source = (await sizeOnDisk(fs, partial)) !== undefined ? partial : final;
    const actual = await fileSha256(source);
    if (actual !== artefact.sha256) {
      await fs.unlink(source).catch(() => {});
      throw new UpdateError(
        'ERR_UPDATE_SIGNATURE',
        `${artefact.name}: its sha256 ${actual} is not the ${artefact.sha256} of the signed SHA256SUMS (changed or corrupt); not installed`,
      );
    }
    if (source === partial) await installAtomic(fs, partial, final);
  }
}
