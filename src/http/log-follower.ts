import type { ServerResponse } from 'node:http';
import { redactValue } from '../log/redact.ts';
import { LEVEL_ORDER, type LogEntry } from '../log/ring.ts';

export interface LogFollowerOptions {
  /** Lines below this level (LEVEL_ORDER) are not sent. */
  readonly minLevel: number;
  /** Most bytes left unread by the client before lines are dropped instead of queued. */
  readonly maxBufferedBytes: number;
  readonly keepaliveMs: number;
}

/**
 * One `/logs?follow=1` stream. A client that does not read (a stalled browser tab, a slow link,
 * an attacker) must not make the supervisor queue log lines without bound: beyond
 * `maxBufferedBytes` not yet taken by the socket, lines are dropped and counted, and once the
 * client catches up it is told how many with an `event: dropped` message.
 */
export class LogFollower {
  readonly #response: ServerResponse;
  readonly #options: LogFollowerOptions;
  readonly #keepalive: NodeJS.Timeout;
  #dropped = 0;

  constructor(response: ServerResponse, options: LogFollowerOptions) {
    this.#response = response;
    this.#options = options;
    // Comments keep proxies and idle timeouts from closing a quiet stream.
    this.#keepalive = setInterval(() => this.#write(': keepalive\n\n'), options.keepaliveMs);
    this.#keepalive.unref();
    response.on('drain', () => this.#reportDropped());
  }

  /** Lines dropped since the client was last told. */
  get dropped(): number {
    return this.#dropped;
  }

  send(entry: LogEntry): void {
    if ((LEVEL_ORDER[entry.level] ?? 0) < this.#options.minLevel) return;
    if (!this.#write(`event: log\ndata: ${JSON.stringify(redactValue(entry))}\n\n`)) this.#dropped++;
  }

  close(): void {
    clearInterval(this.#keepalive);
  }

  /** Writes unless the client has left too much unread; false when the text was dropped. */
  #write(text: string): boolean {
    const response = this.#response;
    if (response.destroyed || response.writableEnded) return false;
    if (response.writableLength + text.length > this.#options.maxBufferedBytes) return false;
    this.#reportDropped();
    response.write(text);
    return true;
  }

  #reportDropped(): void {
    if (this.#dropped === 0) return;
    const dropped = this.#dropped;
    this.#dropped = 0;
    const message = `dropped ${dropped} lines: the client did not read fast enough`;
    this.#response.write(`event: dropped\ndata: ${JSON.stringify({ dropped, message })}\n\n`);
  }
}
