/**
 * Why a media item could not be cached. Every message names the item and its URL; the code
 * is stable (docs/content.md lists them) so the fleet can count and alert on it.
 */
export type CacheErrorCode =
  | 'ERR_CACHE_BAD_URL'
  | 'ERR_CACHE_NOT_FOUND'
  | 'ERR_CACHE_HTTP'
  | 'ERR_CACHE_NETWORK'
  | 'ERR_CACHE_STALLED'
  | 'ERR_CACHE_SIZE'
  | 'ERR_CACHE_CHECKSUM'
  | 'ERR_CACHE_DISK_FULL'
  | 'ERR_CACHE_LIMIT'
  | 'ERR_CACHE_IO'
  | 'ERR_CACHE_ABORTED';

/** Worth another attempt after a pause: the network or the server may recover. */
const RETRYABLE = new Set<CacheErrorCode>([
  'ERR_CACHE_HTTP',
  'ERR_CACHE_NETWORK',
  'ERR_CACHE_STALLED',
  'ERR_CACHE_SIZE',
  'ERR_CACHE_CHECKSUM',
]);

export interface CacheErrorSubject {
  readonly id: string;
  readonly url: string;
}

export class CacheError extends Error {
  readonly code: CacheErrorCode;
  readonly item: string;
  readonly url: string;
  readonly retryable: boolean;
  /** HTTP status, when a server answered. */
  readonly status?: number;

  constructor(
    code: CacheErrorCode,
    subject: CacheErrorSubject,
    detail: string,
    extra: { status?: number; cause?: unknown } = {},
  ) {
    super(
      `${code}: media ${subject.id} (${subject.url}): ${detail}`,
      extra.cause === undefined ? {} : { cause: extra.cause },
    );
    this.name = 'CacheError';
    this.code = code;
    this.item = subject.id;
    this.url = subject.url;
    this.retryable =
      RETRYABLE.has(code) &&
      !(
        code === 'ERR_CACHE_HTTP' &&
        extra.status !== undefined &&
        extra.status < 500 &&
        extra.status !== 408 &&
        extra.status !== 429
      );
    if (extra.status !== undefined) this.status = extra.status;
  }

  toJSON(): { code: CacheErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}
