import fs from 'node:fs';
import path from 'node:path';
import { dirFsync, fileWriteAtomic } from '../fs/atomic.ts';

/**
 * One item as it was on one output: from the vblank of its first frame to the vblank its last
 * frame was still on show (the outputs' own records, native/src/play_record.rs).
 */
export interface PlayProof {
  /** Counts up by one per record, across restarts: a gap is a lost record, a repeat a duplicate. */
  readonly seq: number;
  readonly output: string;
  readonly media: string;
  /** sha256 of the file shown. */
  readonly digest?: string;
  readonly playlist?: string;
  /** Set when it was an interrupt (its id). */
  readonly interrupt?: string;
  /** ISO time of the vblank that first showed it. */
  readonly startedAt: string;
  /** ISO time of the last vblank it was on show at; for a play cut by a power loss or crash, the last time it was seen. */
  readonly endedAt: string;
  /** endedAt − startedAt plus one refresh: how long it was on screen. */
  readonly durationMs: number;
  /** Distinct frames shown (1 for an image). */
  readonly frames: number;
  /** Whether it ran to its end (its duration, or its video's last frame). */
  readonly complete: boolean;
  /** What ended it: its own end (`ended`), another picture (`replaced`), a stop, or a restart of the box or supervisor. */
  readonly end: 'ended' | 'replaced' | 'stopped' | 'restart';
}

/** A play on screen now, saved so a crash or power cut does not lose it. */
export type OpenPlay = Omit<PlayProof, 'seq' | 'end' | 'complete'>;

const CURRENT = 'log.jsonl';
const PREVIOUS = 'log.1.jsonl';
const OPEN = 'open.json';
/** Per file; with the previous file, at most twice this on disk. */
export const PROOF_LOG_MAX_BYTES = 4 * 1024 * 1024;

/**
 * The proof-of-play log: append-only JSON lines in `<dataDir>/proof-of-play/`, each append
 * fsynced before it counts; at `maxBytes` the file becomes `log.1.jsonl` (the one before is
 * dropped), so the log is capped at twice that. A line torn by a power cut is skipped when
 * read. Plays still on screen are kept apart in `open.json` (replaced atomically), and a start
 * finds them there and records them as ended by the restart.
 */
export class ProofLog {
  readonly #dir: string;
  readonly #maxBytes: number;
  #seq: number;
  #size: number;

  constructor(dataDir: string, maxBytes = PROOF_LOG_MAX_BYTES) {
    this.#dir = path.join(dataDir, 'proof-of-play');
    this.#maxBytes = maxBytes;
    fs.mkdirSync(this.#dir, { recursive: true, mode: 0o700 });
    const last = this.#lastOf(CURRENT) ?? this.#lastOf(PREVIOUS);
    this.#seq = last?.seq ?? 0;
    this.#size = fileSize(this.#file(CURRENT));
  }

  /** The newest sequence number written (0: none yet). */
  get seq(): number {
    return this.#seq;
  }

  /** Appends plays (numbered here) durably; returns them as written. */
  append(plays: ReadonlyArray<Omit<PlayProof, 'seq'>>): PlayProof[] {
    if (plays.length === 0) return [];
    const written = plays.map((p) => ({ seq: ++this.#seq, ...p }));
    const text = written.map((p) => `${JSON.stringify(p)}\n`).join('');
    if (this.#size > 0 && this.#size + text.length > this.#maxBytes) this.#rotate();
    const file = this.#file(CURRENT);
    const fd = fs.openSync(file, 'a+', 0o600);
    try {
      // A line torn by a power cut ends without a newline: the next line starts on its own.
      const prefix = this.#size > 0 && !endsWithNewline(fd, this.#size) ? '\n' : '';
      fs.writeSync(fd, prefix + text);
      fs.fdatasyncSync(fd);
      this.#size += Buffer.byteLength(prefix + text);
    } finally {
      fs.closeSync(fd);
    }
    return written;
  }

  /**
   * Records with `seq` above `afterSeq`, or that started in [from, to), oldest first, at most
   * `limit`; whether more matched, and the oldest record still kept (older ones went with the
   * size cap). The files are read once per query.
   */
  query(
    range: { afterSeq: number } | { from: number; to: number },
    limit: number,
  ): { plays: PlayProof[]; more: boolean; oldestSeq: number | undefined } {
    const all = this.#all();
    const found = all.filter((p) => {
      if ('afterSeq' in range) return p.seq > range.afterSeq;
      const t = Date.parse(p.startedAt);
      return t >= range.from && t < range.to;
    });
    return { plays: found.slice(0, limit), more: found.length > limit, oldestSeq: all[0]?.seq };
  }

  /** Plays on screen now, saved atomically (replacing what was saved). */
  openSave(open: readonly OpenPlay[]): void {
    fileWriteAtomic(this.#file(OPEN), JSON.stringify(open));
  }

  /** What was on screen when the last run ended without closing its plays; forgotten once read. */
  openTake(): OpenPlay[] {
    const file = this.#file(OPEN);
    let open: OpenPlay[] = [];
    try {
      const parsed: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
      if (Array.isArray(parsed)) open = parsed as OpenPlay[];
    } catch {
      // Absent (a clean stop) or unreadable: nothing to recover.
    }
    return open;
  }

  #rotate(): void {
    fs.renameSync(this.#file(CURRENT), this.#file(PREVIOUS));
    dirFsync(this.#dir);
    this.#size = 0;
  }

  #all(): PlayProof[] {
    return [...linesOf(this.#file(PREVIOUS)), ...linesOf(this.#file(CURRENT))];
  }

  #lastOf(name: string): PlayProof | undefined {
    return linesOf(this.#file(name)).at(-1);
  }

  #file(name: string): string {
    return path.join(this.#dir, name);
  }
}

function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

function endsWithNewline(fd: number, size: number): boolean {
  const last = Buffer.alloc(1);
  fs.readSync(fd, last, 0, 1, size - 1);
  return last[0] === 0x0a;
}

/** The complete records of a log file; a torn or foreign line is skipped. */
function linesOf(file: string): PlayProof[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const plays: PlayProof[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    try {
      const p = JSON.parse(line) as PlayProof;
      if (Number.isSafeInteger(p.seq) && typeof p.output === 'string') plays.push(p);
    } catch {
      // Torn by a power cut mid-append: never acknowledged, so never published.
    }
  }
  return plays;
}
