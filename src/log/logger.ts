import { type Logger, pino } from 'pino';
import type { LogLevel } from '../config/schema.ts';
import { redactValue, scrubText } from './redact.ts';
import { type LogEntry, LogRing } from './ring.ts';

export type { Logger };

/** Where finished lines go; stdout in production (journald), a buffer in tests. */
export interface LineSink {
  write(line: string): void;
  flushSync?(): void;
}

export interface LoggingOptions {
  readonly level: LogLevel;
  readonly ringSize: number;
  readonly sink?: LineSink;
}

export interface Logging {
  readonly logger: Logger;
  readonly ring: LogRing;
  /** Writes out anything buffered; call before exit. */
  readonly flush: () => void;
}

/**
 * pino writes JSON lines; this destination redacts each finished line, keeps it in the
 * ring and passes it on. Logging is far off the frame path, so a parse per line is cheap.
 */
class RedactingDestination {
  readonly #sink: LineSink;
  readonly #ring: LogRing;

  constructor(sink: LineSink, ring: LogRing) {
    this.#sink = sink;
    this.#ring = ring;
  }

  write(line: string): void {
    let out: string;
    try {
      const entry = redactValue(JSON.parse(line)) as LogEntry;
      out = `${JSON.stringify(entry)}\n`;
      this.#ring.push(entry, out.length);
    } catch {
      out = scrubText(line);
    }
    this.#sink.write(out);
  }
}

export function loggingCreate(options: LoggingOptions): Logging {
  const ring = new LogRing({ lines: options.ringSize });
  const sink = options.sink ?? pino.destination({ dest: 1, sync: true });
  const logger = pino(
    {
      level: options.level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      // journald and humans read level names; numbers only matter inside pino.
      formatters: { level: (label) => ({ level: label }) },
    },
    new RedactingDestination(sink, ring),
  );
  return { logger, ring, flush: () => sink.flushSync?.() };
}

/** A child logger for one component; every line it writes says which. */
export function loggerFor(parent: Logger, component: string, bindings: Record<string, unknown> = {}): Logger {
  return parent.child({ component, ...bindings });
}
