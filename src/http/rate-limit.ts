/**
 * A token bucket per client address: `burst` requests at once, then `perSecond`. The table is
 * bounded, so a scan from many addresses cannot grow memory: when full, the stalest bucket goes
 * (a forgotten client starts again with a full burst, which only errs on the side of answering).
 */
export class ClientRateLimiter {
  readonly #buckets = new Map<string, { tokens: number; at: number }>();
  readonly #burst: number;
  readonly #perSecond: number;
  readonly #maxClients: number;
  readonly #now: () => number;

  constructor(options: { burst: number; perSecond: number; maxClients?: number; now?: () => number }) {
    this.#burst = options.burst;
    this.#perSecond = options.perSecond;
    this.#maxClients = options.maxClients ?? 4096;
    this.#now = options.now ?? Date.now;
  }

  /** 0 when the request may go ahead (a token is taken), else seconds until one is free. */
  take(client: string): number {
    const now = this.#now();
    const bucket = this.#buckets.get(client) ?? { tokens: this.#burst, at: now };
    bucket.tokens = Math.min(this.#burst, bucket.tokens + ((now - bucket.at) / 1000) * this.#perSecond);
    bucket.at = now;
    // Re-inserted so Map order is least recently seen first.
    this.#buckets.delete(client);
    this.#buckets.set(client, bucket);
    if (this.#buckets.size > this.#maxClients) {
      const stalest = this.#buckets.keys().next().value;
      if (stalest !== undefined) this.#buckets.delete(stalest);
    }
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - bucket.tokens) / this.#perSecond));
  }

  get clients(): number {
    return this.#buckets.size;
  }
}
