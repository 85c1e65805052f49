import { dirname } from 'node:path';
import { writeFileAtomic } from '../fs/atomic.ts';
import type { Logger } from '../log/logger.ts';
import type { EventBus } from '../supervisor/bus.ts';
import { CommandError, type CommandRegistry } from '../supervisor/commands.ts';
import type { Extension } from '../supervisor/extension.ts';
import type { CacheStatus, RetryPolicy } from './cache.ts';
import { type ClockChange, ClockWatch, type ClockWatchDeps, type TimeSyncState } from './clock-watch.ts';
import type { Fetch } from './download.ts';
import type { FileSystem } from './fs.ts';
import { InterruptController } from './interrupt-controller.ts';
import type { Interrupt } from './interrupts.ts';
import { MediaSync } from './media-sync.ts';
import { type Content, ContentError, contentParse, contentValidate } from './model.ts';
import { ContentOutputs } from './outputs.ts';
import type { Player } from './player.ts';
import type { RunnerState } from './playlist-runner.ts';
import { scheduledMedia } from './playlists.ts';
import { type PlayProof, ProofLog } from './proof-log.ts';
import { ProofOfPlay } from './proof-of-play.ts';
import { type Placement, type ScheduleResult, scheduleAt } from './scheduler.ts';

/** Re-evaluated at least this often (the horizon moves on); clock steps reschedule at once. */
const RECHECK_MS = 3_600_000;

export interface ContentStatus {
  readonly file: string;
  readonly version: number | null;
  readonly at: string;
  readonly nextChangeAt: string | null;
  /** When the schedule was last evaluated (a boundary, the hourly check, new content, a clock step or sync). */
  readonly evaluatedAt: string | null;
  readonly player: string;
  readonly outputs: Record<string, Placement & { state: RunnerState }>;
  readonly cache: CacheStatus | null;
  readonly time: TimeSyncState | null;
  /** Live interrupts (`interrupt`), over the schedule on their outputs. */
  readonly interrupts: readonly Interrupt[];
  readonly problem?: string;
}

export interface ContentExtensionDeps {
  /** The content document. */
  readonly file: string;
  /** The media cache lives under it. */
  readonly dataDir: string;
  readonly cacheLimits: { readonly maxBytes: number; readonly reserveBytes: number; readonly concurrency: number };
  readonly logger: Logger;
  /** `content.sync`, `time.sync` and `proofOfPlay.appended` go here. */
  readonly bus: Pick<EventBus, 'emit'>;
  /** Wall-clock epoch ms of a CLOCK_MONOTONIC time in µs (the outputs' vblank timestamps). */
  readonly wallOfMonotonicUs?: (us: number) => number;
  /** How often the outputs' play records are read (default 500 ms). */
  readonly proofPollMs?: number;
  readonly commands: Pick<CommandRegistry, 'register'>;
  readonly clock: { now(): number };
  readonly fs: FileSystem;
  /** Whether the content document exists (checked once, at start). */
  readonly exists: (path: string) => boolean;
  /** What shows content: asked when content first applies, so playback can be ready by then. */
  readonly playerCreate: () => Player | undefined;
  /** Prerolling this long before a schedule boundary lets the switch land on the boundary's vblank. */
  readonly prerollMs: number;
  /** The clock watch's sync source, and its monotonic clock and interval (tests); `clock` is its wall clock. */
  readonly clockWatch: Pick<ClockWatchDeps, 'sync' | 'monotonic' | 'intervalMs'>;
  readonly fetch?: Fetch;
  readonly retry?: Partial<RetryPolicy>;
  /** Least time between two `content.sync` progress events of one job. */
  readonly syncProgressEveryMs?: number;
}

/**
 * Content: loads the content document, keeps the media the schedule needs in the cache,
 * and at every schedule boundary tells each output what to play. Offers `playlist.set`
 * (validate, persist atomically, apply) and `content.status`.
 */
export class ContentExtension implements Extension {
  readonly name = 'content';
  readonly #deps: ContentExtensionDeps;
  readonly #media: MediaSync;
  readonly #outputs: ContentOutputs;
  readonly #interrupts: InterruptController;
  readonly #withdraw: Array<() => void> = [];
  #content: Content | undefined;
  #result: ScheduleResult | undefined;
  #evaluatedAt: number | undefined;
  #problem: string | undefined;
  #timers: NodeJS.Timeout[] = [];
  #watch: ClockWatch | undefined;
  #stopped = false;
  #proofLog: ProofLog | undefined;
  #proof: ProofOfPlay | undefined;

  constructor(deps: ContentExtensionDeps) {
    this.#deps = deps;
    const { logger } = deps;
    this.#outputs = new ContentOutputs({
      logger,
      playerCreate: deps.playerCreate,
      resolve: (m) => this.#media.path(m),
    });
    this.#interrupts = new InterruptController({
      dataDir: deps.dataDir,
      fs: deps.fs,
      clock: deps.clock,
      logger,
      player: () => this.#outputs.playerEnsure(),
      media: (id) => this.#content?.media.find((m) => m.id === id),
      resolve: (m) => this.#media.path(m),
      onEnded: () => {
        if (this.#content && this.#result && !this.#stopped)
          this.#outputs.follow(this.#content, this.#result.perOutput);
      },
    });
    this.#media = new MediaSync({
      dataDir: deps.dataDir,
      limits: deps.cacheLimits,
      logger,
      bus: deps.bus,
      fs: deps.fs,
      clock: deps.clock,
      inUse: () => this.#outputs.mediaInUse(),
      onInstalled: () => this.#outputs.retry(),
      ...(deps.fetch ? { fetch: deps.fetch } : {}),
      ...(deps.retry ? { retry: deps.retry } : {}),
      ...(deps.syncProgressEveryMs !== undefined ? { syncProgressEveryMs: deps.syncProgressEveryMs } : {}),
    });
  }

  async start(): Promise<void> {
    this.#watchStart();
    this.#proofStart();
    this.#commandsRegister();
    await this.#load();
    await this.#interrupts.start();
  }

  /** Proof of play: a box whose data directory cannot hold the log still plays, and says so. */
  #proofStart(): void {
    const { dataDir, logger, bus } = this.#deps;
    try {
      this.#proofLog = new ProofLog(dataDir);
    } catch (error) {
      logger.error(
        { code: 'ERR_PROOF_OF_PLAY', dataDir },
        `proof of play is off: cannot open its log under ${dataDir}: ${(error as Error).message}`,
      );
      return;
    }
    this.#proof = new ProofOfPlay({
      player: { playRecords: () => this.#outputs.player?.playRecords?.() ?? [] },
      log: this.#proofLog,
      logger,
      wallOfMonotonicUs: this.#deps.wallOfMonotonicUs ?? wallOfMonotonicUs,
      onAppended: (plays) => bus.emit('proofOfPlay.appended', { seq: plays.at(-1)?.seq ?? 0 }),
      ...(this.#deps.proofPollMs !== undefined ? { pollMs: this.#deps.proofPollMs } : {}),
    });
    this.#proof.start();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#watch?.stop();
    this.#interrupts.stop();
    this.#proof?.stop();
    for (const w of this.#withdraw.splice(0)) w();
    this.#timersClear();
    this.#outputs.close();
    await this.#media.close();
  }

  status(): ContentStatus {
    const outputs: ContentStatus['outputs'] = {};
    for (const [name, placement] of Object.entries(this.#result?.perOutput ?? {})) {
      outputs[name] = { ...placement, state: this.#outputs.state(placement.assignment) };
    }
    const nextChangeAt = this.#result?.nextChangeAt;
    return {
      file: this.#deps.file,
      version: this.#content?.version ?? null,
      at: new Date(this.#deps.clock.now()).toISOString(),
      nextChangeAt: nextChangeAt == null ? null : new Date(nextChangeAt).toISOString(),
      evaluatedAt: this.#evaluatedAt === undefined ? null : new Date(this.#evaluatedAt).toISOString(),
      player: this.#outputs.note,
      outputs,
      cache: this.#media.status(),
      time: this.#watch?.state ?? null,
      interrupts: this.#interrupts.list(),
      ...(this.#problem ? { problem: this.#problem } : {}),
    };
  }

  #commandsRegister(): void {
    const { commands } = this.#deps;
    this.#withdraw.push(
      commands.register({
        name: 'playlist.set',
        description:
          'Replace the content (media, playlists, schedules, outputs): validated, saved atomically, applied. Args: {"content": {...}}',
        handler: (args) => this.#playlistSet(args),
      }),
      commands.register({
        name: 'playlist.next',
        description:
          'Move outputs to the next item of their playlist now, gaplessly. Args: {"outputs": [...]} (absent: every output content drives).',
        handler: (args) => this.#skip(args, 1),
      }),
      commands.register({
        name: 'playlist.previous',
        description:
          'Move outputs to the previous item of their playlist now, gaplessly. Args: {"outputs": [...]} (absent: every output content drives).',
        handler: (args) => this.#skip(args, -1),
      }),
      commands.register({
        name: 'interrupt',
        description:
          'Show a media item or a message over the schedule now, on some or all outputs, until it ends or is cleared; survives restarts. Args: {"media": id | "text": "...", "outputs"?, "priority"?, "durationS"? | "until"?, "id"?, "colour"?}',
        handler: (args) => this.#interruptCall(() => this.#interrupts.add(args)),
      }),
      commands.register({
        name: 'interrupt.clear',
        description: 'End interrupts: by "id", those on "outputs", or all; the schedule shows again at once.',
        handler: (args) => this.#interruptCall(() => this.#interrupts.clear(args)),
      }),
      commands.register({
        name: 'proofOfPlay.get',
        description:
          'Proof-of-play records, oldest first: those that started in [from, to) (ISO times), or those after sequence number "afterSeq". Args: {"from", "to"} | {"afterSeq"}, "limit"? (1-1000, default 500).',
        handler: (args) => this.#proofGet(args),
      }),
      commands.register({
        name: 'content.status',
        description: 'What each output plays and why, the next schedule change, and media cache progress.',
        handler: () => this.status(),
      }),
    );
  }

  #proofGet(args: Record<string, unknown>): {
    plays: PlayProof[];
    more: boolean;
    seq: number;
    oldestSeq: number | null;
  } {
    const log = this.#proofLog;
    if (!log)
      throw new CommandError('ERR_NOT_AVAILABLE', 'proof of play is off (its log could not be opened; see the log)');
    const { limit, range } = proofQuery(args);
    const { plays, more, oldestSeq } = log.query(range, limit);
    return { plays, more, seq: log.seq, oldestSeq: oldestSeq ?? null };
  }

  /** Interrupt errors reach the caller with their code. */
  async #interruptCall(work: () => Promise<object>): Promise<object> {
    try {
      return await work();
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code?.startsWith('ERR_')) throw new CommandError(code, (error as Error).message);
      throw error;
    }
  }

  /** `playlist.next` / `playlist.previous`: an output content does not drive is refused by name. */
  async #skip(args: Record<string, unknown>, by: 1 | -1): Promise<object> {
    const outputs = args.outputs as string[] | undefined;
    const { outcomes, unknown, driven } = await this.#outputs.skip(outputs, by);
    if (unknown.length > 0) {
      throw new CommandError(
        'ERR_BAD_ARGUMENT',
        `outputs: ${unknown.join(', ')} ${unknown.length === 1 ? 'is' : 'are'} not playing content (content drives ${driven.join(', ') || 'no output'})`,
      );
    }
    const word = by === 1 ? 'next' : 'previous';
    for (const [output, outcome] of Object.entries(outcomes)) {
      if (outcome.moved)
        this.#deps.logger.info(
          { output, playlist: outcome.playlist, item: outcome.item },
          `${output}: ${word} item ${outcome.item} of playlist ${outcome.playlist}, on request`,
        );
    }
    return { outputs: outcomes };
  }

  /** The content document at start; a missing or bad one leaves the outputs on their slate. */
  async #load(): Promise<void> {
    const { file, fs, logger } = this.#deps;
    if (!this.#deps.exists(file)) {
      logger.info({ file }, `no content at ${file}; waiting for playlist.set`);
      await this.#cacheOpenAtStart();
      return;
    }
    try {
      const c = contentParse(await fs.readFile(file, 'utf8'), file);
      await this.#apply(c);
      logger.info({ version: c.version, file }, `content version ${c.version} loaded from ${file}`);
    } catch (error) {
      // A bad file must not stop the supervisor: outputs keep their slate, the reason is reported.
      this.#problem = (error as Error).message;
      logger.error({ file, code: (error as { code?: string }).code, err: error }, this.#problem);
      await this.#cacheOpenAtStart();
    }
  }

  /** Without content the cache still opens at start: orphaned partial downloads go now, not later. */
  async #cacheOpenAtStart(): Promise<void> {
    try {
      await this.#media.open(undefined);
    } catch (error) {
      this.#deps.logger.error(
        { err: error },
        `cannot open the media cache under ${this.#deps.dataDir}: ${(error as Error).message}`,
      );
    }
  }

  /** Validate, open the cache, save, apply: a failure before the save changes nothing. */
  async #playlistSet(args: Record<string, unknown>): Promise<object> {
    const { file, dataDir, logger } = this.#deps;
    let next: Content;
    try {
      next = contentValidate(args.content, 'content');
    } catch (error) {
      if (error instanceof ContentError) throw new CommandError(error.code, error.message);
      throw error;
    }
    try {
      await this.#media.open(next);
    } catch (error) {
      throw new CommandError(
        'ERR_CACHE_IO',
        `cannot open the media cache under ${dataDir}: ${(error as Error).message}; nothing changed`,
      );
    }
    try {
      await this.#persist(next);
    } catch (error) {
      throw new CommandError('ERR_CONTENT_WRITE', `cannot save ${file}: ${(error as Error).message}; nothing changed`);
    }
    const jobId = await this.#apply(next);
    logger.info({ version: next.version, file }, `content version ${next.version} applied`);
    return {
      version: next.version,
      file,
      nextChangeAt: this.status().nextChangeAt,
      outputs: this.status().outputs,
      ...(jobId ? { jobId } : {}),
    };
  }

  async #persist(c: Content): Promise<void> {
    const { file, fs } = this.#deps;
    await fs.mkdir(dirname(file), { recursive: true });
    await writeFileAtomic(fs, file, `${JSON.stringify(c, null, 2)}\n`);
  }

  /** Resolves to the id of the content sync job that fetches the media. */
  async #apply(c: Content): Promise<string | undefined> {
    await this.#media.open(c);
    this.#content = c;
    this.#problem = undefined;
    const player = this.#outputs.playerEnsure();
    if (player) this.#outputs.reconcile(c, player);
    return this.#reschedule(c.version);
  }

  /** `syncVersion`: this reschedule applies new content, so its media fetch is a job the fleet can follow. */
  #reschedule(syncVersion?: number): string | undefined {
    this.#timersClear();
    const c = this.#content;
    if (!c || this.#stopped) return undefined;
    const now = this.#deps.clock.now();
    const r = scheduleAt(now, c);
    this.#result = r;
    this.#evaluatedAt = now;
    const jobId = this.#media.fetch(scheduledMedia(c, r), syncVersion);
    if (this.#outputs.player) this.#outputs.follow(c, r.perOutput);
    this.#timersArm(c, r, now);
    return jobId;
  }

  /** The next evaluation (at the boundary, or the hourly check) and the preroll ahead of the boundary. */
  #timersArm(c: Content, r: ScheduleResult, now: number): void {
    const at = r.nextChangeAt;
    const delay = at === null ? RECHECK_MS : Math.min(RECHECK_MS, Math.max(0, at - now));
    this.#timers.push(setTimeout(() => this.#reschedule(), delay));
    const next = r.next;
    if (at !== null && at - now <= RECHECK_MS && next && this.#outputs.player) {
      const prerollAt = Math.max(0, at - now - this.#deps.prerollMs);
      this.#timers.push(setTimeout(() => this.#outputs.preroll(c, next), prerollAt));
    }
    for (const t of this.#timers) t.unref();
  }

  #timersClear(): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers = [];
  }

  #watchStart(): void {
    const { bus, clock, clockWatch, logger } = this.#deps;
    const watch = new ClockWatch({
      now: () => clock.now(),
      ...(clockWatch.sync ? { sync: clockWatch.sync } : {}),
      ...(clockWatch.monotonic ? { monotonic: clockWatch.monotonic } : {}),
      ...(clockWatch.intervalMs ? { intervalMs: clockWatch.intervalMs } : {}),
      onChange: (change, state) => this.#clockChanged(change, state),
    });
    this.#watch = watch;
    bus.emit('time.sync', watch.state);
    logger.info(
      { time: watch.state },
      `clock: synchronized ${watch.state.synchronized} (source ${watch.state.source})`,
    );
    watch.start();
  }

  /** A step or the first synchronisation makes the schedule wrong: evaluate it again now. */
  #clockChanged(change: ClockChange, state: TimeSyncState): void {
    this.#deps.bus.emit('time.sync', state);
    if (change.kind === 'state') {
      this.#deps.logger.warn({ time: state }, `clock: synchronized ${state.synchronized} (source ${state.source})`);
      return;
    }
    const why =
      change.kind === 'step'
        ? `the clock was stepped by ${change.deltaMs} ms`
        : `the clock is synchronised (${change.source})`;
    this.#deps.logger.info({ time: state, change }, `${why}: schedules re-evaluated`);
    this.#reschedule();
  }
}

/** The newest records asked for at once: a reply stays well under a broker's message limit. */
const PROOF_GET_MAX = 1000;

/** `proofOfPlay.get`'s arguments, or a coded error naming the one that is wrong. */
function proofQuery(args: Record<string, unknown>): {
  limit: number;
  range: { afterSeq: number } | { from: number; to: number };
} {
  const bad = (message: string): never => {
    throw new CommandError('ERR_BAD_ARGUMENT', message);
  };
  const limit = args.limit ?? 500;
  if (!Number.isInteger(limit) || (limit as number) < 1 || (limit as number) > PROOF_GET_MAX)
    bad(`limit: ${JSON.stringify(limit)} is not a whole number from 1 to ${PROOF_GET_MAX}`);
  for (const key of Object.keys(args))
    if (!['from', 'to', 'afterSeq', 'limit'].includes(key))
      bad(`unknown argument "${key}" (known: from, to, afterSeq, limit)`);
  if (args.afterSeq !== undefined) {
    if (args.from !== undefined || args.to !== undefined) bad('give either afterSeq or from/to, not both');
    if (!Number.isSafeInteger(args.afterSeq) || (args.afterSeq as number) < 0)
      bad(`afterSeq: ${JSON.stringify(args.afterSeq)} is not a whole number >= 0`);
    return { limit: limit as number, range: { afterSeq: args.afterSeq as number } };
  }
  const time = (key: 'from' | 'to', fallback: number): number => {
    const v = args[key];
    if (v === undefined) return fallback;
    const t = typeof v === 'string' && v.length <= 40 ? Date.parse(v) : Number.NaN;
    return Number.isNaN(t) ? bad(`${key}: ${JSON.stringify(v).slice(0, 60)} is not an ISO 8601 time`) : t;
  };
  const from = time('from', 0);
  const to = time('to', Number.MAX_SAFE_INTEGER);
  if (to <= from) bad('to must be later than from');
  return { limit: limit as number, range: { from, to } };
}

/** CLOCK_MONOTONIC (Node's hrtime on Linux) µs to wall-clock epoch ms, as of now. */
function wallOfMonotonicUs(us: number): number {
  const nowUs = Number(process.hrtime.bigint() / 1000n);
  return Date.now() - (nowUs - us) / 1000;
}
