/** One log line as kept in memory: the redacted JSON object pino wrote. */
export interface LogEntry {
  readonly level: string;
  readonly time: string;
  readonly msg?: string;
  readonly [field: string]: unknown;
}

export const LEVEL_ORDER: Readonly<Record<string, number>> = {
  trace: 10,
  debug: 20,
  info: 30,
  warn: 40,
  error: 50,
  fatal: 60,
};

export interface LogRingOptions {
  /** Most lines kept. */
  readonly lines: number;
  /** Most bytes kept, so a few huge lines cannot grow the heap without bound. */
  readonly bytes?: number;
}

/**
 * Recent log lines for `logs.get` over MQTT and `/logs` over HTTP. Bounded by lines and
 * bytes; the oldest lines go first. A fixed array with a moving head avoids shifting.
 */
export class LogRing {
  readonly #lines: Array<{ entry: LogEntry; size: number } | undefined>;
  readonly #maxBytes: number;
  #head = 0;
  #count = 0;
  #bytes = 0;
  #listeners = new Set<(entry: LogEntry) => void>();

  constructor(options: LogRingOptions) {
    this.#lines = new Array(options.lines);
    this.#maxBytes = options.bytes ?? 4 * 1024 * 1024;
  }

  get size(): number {
    return this.#count;
  }

  push(entry: LogEntry, size: number): void {
    while (this.#count > 0 && (this.#count === this.#lines.length || this.#bytes + size > this.#maxBytes)) {
      this.#dropOldest();
    }
    if (size > this.#maxBytes) return;
    this.#lines[(this.#head + this.#count) % this.#lines.length] = { entry, size };
    this.#count++;
    this.#bytes += size;
    for (const listener of this.#listeners) listener(entry);
  }

  /** The newest `limit` lines at `level` or above, oldest first. */
  tail(options: { limit?: number; level?: string } = {}): LogEntry[] {
    const min = LEVEL_ORDER[options.level ?? 'trace'] ?? 0;
    const limit = options.limit ?? this.#count;
    const out: LogEntry[] = [];
    for (let i = this.#count - 1; i >= 0 && out.length < limit; i--) {
      const slot = this.#lines[(this.#head + i) % this.#lines.length];
      if (slot && (LEVEL_ORDER[slot.entry.level] ?? 0) >= min) out.push(slot.entry);
    }
    return out.reverse();
  }

  /** Live lines as they arrive (for `/logs?follow=1`). Returns the unsubscribe function. */
  subscribe(listener: (entry: LogEntry) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #dropOldest(): void {
    const slot = this.#lines[this.#head];
    this.#lines[this.#head] = undefined;
    this.#head = (this.#head + 1) % this.#lines.length;
    this.#count--;
    this.#bytes -= slot?.size ?? 0;
  }
}
