/**
 * The one token-bucket rate limiter: `burst` requests at once per key, then `perSecond`. MQTT
 * keys it by command name (a fleet script in a loop must not keep the supervisor busy answering)
 * and by `events`; HTTP by client address; firmware downloads by `update` with bytes as tokens
 * (`reserve`), to keep an update from taking the whole uplink of a site. The table is bounded, so a scan from many addresses
 * cannot grow memory: when full, the stalest bucket goes (a forgotten key starts again with a
 * full burst, which only errs on the side of answering).
 */
export class RateLimiter {
  readonly #buckets = new Map<string, { tokens: number; at: number }>();
  readonly #burst: number;
  readonly #perSecond: number;
  readonly #maxKeys: number;
  readonly #now: () => number;

  constructor(options: { burst: number; perSecond: number; maxKeys?: number; now?: () => number }) {
    this.#burst = options.burst;
    this.#perSecond = options.perSecond;
    this.#maxKeys = options.maxKeys ?? 4096;
    this.#now = options.now ?? Date.now;
  }

  /** True when the request may go ahead (and takes a token). */
  take(key: string): boolean {
    return this.wait(key) === 0;
  }

  /** 0 when the request may go ahead (a token is taken), else whole seconds until one is free. */
  wait(key: string): number {
    const bucket = this.#refill(key);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - bucket.tokens) / this.#perSecond));
  }

  /**
   * Takes `cost` tokens even when fewer are left (the bucket goes into debt) and returns the
   * milliseconds to wait before going on, 0 when it was covered. For metered streams: a chunk of
   * bytes that has already arrived cannot be refused, only paid for by pausing the reader, and
   * the pause holds back the next chunks through TCP flow control.
   */
  reserve(key: string, cost: number): number {
    const bucket = this.#refill(key);
    bucket.tokens -= cost;
    return bucket.tokens >= 0 ? 0 : Math.ceil((-bucket.tokens / this.#perSecond) * 1000);
  }

  /** How many keys have a bucket now. */
  get keys(): number {
    return this.#buckets.size;
  }

  #refill(key: string): { tokens: number; at: number } {
    const now = this.#now();
    const bucket = this.#buckets.get(key) ?? { tokens: this.#burst, at: now };
    bucket.tokens = Math.min(this.#burst, bucket.tokens + ((now - bucket.at) / 1000) * this.#perSecond);
    bucket.at = now;
    // Re-inserted so Map order is least recently seen first.
    this.#buckets.delete(key);
    this.#buckets.set(key, bucket);
    if (this.#buckets.size > this.#maxKeys) {
      const stalest = this.#buckets.keys().next().value;
      if (stalest !== undefined) this.#buckets.delete(stalest);
    }
    return bucket;
  }
}
