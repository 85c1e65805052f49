import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { type CacheProgress, MediaCache } from '../content/cache.ts';
import { type ClockChange, ClockWatch, kernelClockSource, type TimeSyncState } from '../content/clock-watch.ts';
import type { Fetch } from '../content/download.ts';
import { type FileSystem, nodeFs } from '../content/fs.ts';
import {
  type Assignment,
  assignmentKey,
  assignmentOutputs,
  type Content,
  ContentError,
  contentParse,
  contentValidate,
  type MediaItem,
  mediaById,
} from '../content/model.ts';
import type { Player } from '../content/player.ts';
import { PlaylistRunner, type RunnablePlaylist } from '../content/playlist-runner.ts';
import { type Placement, type ScheduleResult, scheduleAt } from '../content/scheduler.ts';
import { ScreensPlayer } from '../content/screens-player.ts';
import { SyncJob } from '../content/sync-job.ts';
import { writeFileAtomic } from '../fs/atomic.ts';
import type { NativeAddon } from '../native/addon.ts';
import { CommandError } from '../supervisor/commands.ts';
import type { Extension, ExtensionContext } from '../supervisor/extension.ts';

/** Prerolling this long before a schedule boundary lets the switch land on the boundary's vblank. */
const PREROLL_MS = 3000;
/** Re-evaluated at least this often (the horizon moves on); clock steps reschedule at once. */
const RECHECK_MS = 3_600_000;

export interface ContentDeps {
  readonly clock?: { now(): number };
  readonly fetch?: Fetch;
  readonly fs?: FileSystem;
  /** What shows content; default: virtual outputs when there is no KMS device, else none yet. */
  readonly playerCreate?: (context: ExtensionContext) => Player | undefined;
  readonly prerollMs?: number;
  readonly retry?: { attempts?: number; baseMs?: number; maxMs?: number };
  /** Least time between two `content.sync` progress events of one job (default 1 s). */
  readonly syncProgressEveryMs?: number;
  /** The clock watch's monotonic clock, sync source and interval (tests); `clock` is its wall clock. */
  readonly clockWatch?: Pick<ConstructorParameters<typeof ClockWatch>[0], 'monotonic' | 'sync' | 'intervalMs'>;
}

export interface ContentStatus {
  readonly file: string;
  readonly version: number | null;
  readonly at: string;
  readonly nextChangeAt: string | null;
  /** When the schedule was last evaluated (a boundary, the hourly check, new content, a clock step or sync). */
  readonly evaluatedAt: string | null;
  readonly player: string;
  readonly outputs: Record<string, Placement & { state: PlaylistRunner['state'] }>;
  readonly cache: ReturnType<MediaCache['status']> | null;
  readonly time: TimeSyncState | null;
  readonly problem?: string;
}

export function contentCreate(context: ExtensionContext): Extension {
  return contentCreateWith(context, {});
}

/**
 * Content: loads the content document, keeps the media the schedule needs in the cache,
 * and at every schedule boundary tells each output what to play. Offers `playlist.set`
 * (validate, persist atomically, apply) and `content.status`.
 */
export function contentCreateWith(context: ExtensionContext, deps: ContentDeps): Extension {
  const { config, logger, commands } = context;
  const clock = deps.clock ?? Date;
  const fs = deps.fs ?? nodeFs;
  const file = config.content.file || join(config.dataDir, 'content.json');
  const prerollMs = deps.prerollMs ?? PREROLL_MS;
  const withdraw: Array<() => void> = [];
  const runners = new Map<string, PlaylistRunner>();
  let content: Content | undefined;
  let result: ScheduleResult | undefined;
  let evaluatedAt: number | undefined;
  let cache: MediaCache | undefined;
  let player: Player | undefined;
  let playerNote = 'not started';
  let problem: string | undefined;
  let timers: NodeJS.Timeout[] = [];
  let stopped = false;
  /** Content sync jobs under way (one per apply); they hear every cache progress event. */
  const jobs = new Set<SyncJob>();

  /** `wanted`: the content about to apply; its partial downloads are kept, every other is an orphan. */
  const cacheOpen = async (wanted: Content | undefined): Promise<MediaCache> => {
    if (cache) return cache;
    const c = new MediaCache({
      dir: join(config.dataDir, 'cache'),
      maxBytes: config.cache.maxBytes,
      reserveBytes: config.cache.reserveBytes,
      inUse: onScreen,
      concurrency: config.cache.concurrency,
      fs,
      clock,
      ...(deps.fetch ? { fetch: deps.fetch } : {}),
      ...(deps.retry ? { retry: deps.retry } : {}),
    });
    const report = await c.open(new Set(wanted?.media.map((m) => m.sha256) ?? []));
    logger.info(
      {
        dir: c.dir,
        items: report.items,
        bytes: report.bytes,
        unverified: report.unverified.length,
        partials: report.partials,
        orphansCollected: report.orphansCollected,
        orphanBytesCollected: report.orphanBytesCollected,
      },
      `media cache ${c.dir}: ${report.items} item(s), ${report.bytes} bytes${report.unverified.length ? `, ${report.unverified.length} to re-check` : ''}${report.orphansCollected ? `, ${report.orphansCollected} orphaned partial download(s) (${report.orphanBytesCollected} bytes) deleted` : ''}`,
    );
    c.on('progress', progressLog);
    cache = c;
    return c;
  };

  /** sha256s every output shows or holds prerolled now: the cache never evicts them. */
  const onScreen = (): string[] => [...runners.values()].flatMap((r) => r.mediaInUse.map((m) => m.sha256));

  const progressLog = (p: CacheProgress): void => {
    for (const job of jobs) job.progress(p);
    const fields = { media: p.id, url: p.url, state: p.state, bytes: p.bytes, total: p.total, attempt: p.attempt };
    if (p.state === 'failed')
      logger.error({ ...fields, code: p.error?.code }, p.error?.message ?? `media ${p.id} failed`);
    else if (p.state === 'retrying') {
      logger.warn({ ...fields, code: p.error?.code }, `${p.error?.message}; retry in ${p.retryInMs} ms`);
    } else if (p.state === 'installed') {
      logger.info(fields, `media ${p.id} cached (${p.total} bytes)`);
      for (const runner of runners.values()) runner.retry();
    } else if (p.state === 'evicted') logger.info(fields, `media ${p.sha256} evicted from the cache`);
  };

  const playerEnsure = (): Player | undefined => {
    if (player || playerNote !== 'not started') return player;
    try {
      player = (deps.playerCreate ?? defaultPlayer)(context);
      playerNote = player ? `outputs ${player.outputs.join(', ')}` : 'playback has no outputs yet';
    } catch (error) {
      playerNote = `cannot start: ${(error as Error).message}`;
      logger.error({ err: error }, `content player ${playerNote}`);
    }
    if (!player) logger.warn(`content scheduled, but nothing shows it: ${playerNote}`);
    return player;
  };

  const runnable = (c: Content, id: string): RunnablePlaylist | undefined => {
    const playlist = c.playlists.find((p) => p.id === id);
    if (!playlist) return undefined;
    const media = mediaById(c);
    return {
      id: playlist.id,
      loop: playlist.loop ?? true,
      items: playlist.items.flatMap((item) => {
        const m = media.get(item.media);
        return m ? [{ media: m, ...(item.duration !== undefined ? { durationMs: item.duration * 1000 } : {}) }] : [];
      }),
    };
  };

  /** Media of the playlists placed now and next: fetched first, never evicted. */
  const needed = (c: Content, r: ScheduleResult): MediaItem[] => {
    const media = mediaById(c);
    const ids = new Set<string>();
    for (const placements of [r.perOutput, r.next ?? {}]) {
      for (const p of Object.values(placements)) {
        const playlist = c.playlists.find((x) => x.id === p.playlist);
        for (const item of playlist?.items ?? []) ids.add(item.media);
      }
    }
    return [...ids].flatMap((id) => media.get(id) ?? []);
  };

  const runnersReconcile = (c: Content, p: Player): void => {
    const keys = new Set(c.outputs.map(assignmentKey));
    for (const [key, runner] of runners) {
      if (!keys.has(key)) {
        runner.stop();
        runners.delete(key);
        void p.slate(runner.outputs, `not assigned in content version ${c.version}`);
      }
    }
    const assigned = new Set<string>();
    for (const a of c.outputs) {
      const outputs = assignmentOutputs(a).filter((o) => p.outputs.includes(o));
      for (const o of assignmentOutputs(a)) {
        if (!p.outputs.includes(o))
          logger.warn({ output: o }, `content assigns output ${o}, which this device does not drive`);
        assigned.add(o);
      }
      const key = assignmentKey(a);
      if (!runners.has(key) && outputs.length > 0) runners.set(key, runnerFor(a, outputs, p));
    }
    const free = p.outputs.filter((o) => !assigned.has(o));
    if (free.length > 0) void p.slate(free, `no content assigned to this output (content version ${c.version})`);
  };

  const runnerFor = (a: Assignment, outputs: string[], p: Player): PlaylistRunner =>
    new PlaylistRunner({
      player: p,
      targets: outputs.map((output) => {
        const crop = a.tiles?.find((t) => t.output === output)?.crop;
        return crop ? { output, crop } : { output };
      }),
      resolve: async (m) => (cache ? cache.path(m) : null),
      log: logger,
    });

  /** Playlists are compared by definition, so editing a playlist restarts it. */
  const signatures = new Map<string, string>();
  const signature = (r: RunnablePlaylist | undefined): string => JSON.stringify(r ?? null);

  /** `syncVersion`: this reschedule applies new content, so its media fetch is a job the fleet can follow. */
  const reschedule = (syncVersion?: number): string | undefined => {
    for (const t of timers) clearTimeout(t);
    timers = [];
    const c = content;
    if (!c || stopped) return undefined;
    const now = clock.now();
    const r = scheduleAt(now, c);
    result = r;
    evaluatedAt = now;
    const media = needed(c, r);
    let jobId: string | undefined;
    if (cache) {
      const pinned = new Set(media.map((m) => m.sha256));
      const mediaCache = cache;
      const job =
        syncVersion === undefined
          ? undefined
          : new SyncJob({
              version: syncVersion,
              items: media,
              cached: (m) => mediaCache.has(m),
              emit: (doc) => context.bus.emit('content.sync', doc),
              clock,
              ...(deps.syncProgressEveryMs !== undefined ? { progressEveryMs: deps.syncProgressEveryMs } : {}),
            });
      if (job) jobs.add(job);
      jobId = job?.jobId;
      void cache.ensure(media, pinned).then((results) => {
        if (job) {
          jobs.delete(job);
          job.finish(results);
        }
        const failed = results.filter((x) => !x.ok);
        if (failed.length > 0) {
          logger.warn(
            { failed: failed.map((f) => f.id) },
            `${failed.length} of ${results.length} media not cached; playing what is`,
          );
        }
      });
    }
    const p = player;
    if (p) {
      for (const a of c.outputs) {
        const key = assignmentKey(a);
        const runner = runners.get(key);
        const placement = r.perOutput[assignmentOutputs(a)[0] ?? ''];
        if (!runner || !placement) continue;
        if (placement.playlist === null) {
          const state = runner.state;
          if (state.kind !== 'slate' || state.reason !== placement.reason) void runner.slate(placement.reason);
          signatures.delete(key);
          continue;
        }
        const playlist = runnable(c, placement.playlist);
        const sig = signature(playlist);
        if (playlist && (runner.playlistId !== playlist.id || signatures.get(key) !== sig)) {
          signatures.set(key, sig);
          logger.info(
            { assignment: key, playlist: playlist.id, reason: placement.reason },
            `${key}: playing ${playlist.id} (${placement.reason})`,
          );
          void runner.play(playlist);
        }
      }
    }
    const at = r.nextChangeAt;
    const delay = at === null ? RECHECK_MS : Math.min(RECHECK_MS, Math.max(0, at - now));
    timers.push(setTimeout(() => reschedule(), delay));
    if (at !== null && at - now <= RECHECK_MS && r.next && p) {
      const next = r.next;
      timers.push(
        setTimeout(
          () => {
            for (const a of c.outputs) {
              const key = assignmentKey(a);
              const target = next[assignmentOutputs(a)[0] ?? '']?.playlist;
              const runner = runners.get(key);
              if (!runner || !target || target === runner.playlistId) continue;
              const playlist = runnable(c, target);
              if (playlist) void runner.preroll(playlist);
            }
          },
          Math.max(0, at - now - prerollMs),
        ),
      );
    }
    for (const t of timers) t.unref();
    return jobId;
  };

  /** Resolves to the id of the content sync job that fetches the media. */
  const apply = async (c: Content): Promise<string | undefined> => {
    await cacheOpen(c);
    content = c;
    problem = undefined;
    const p = playerEnsure();
    if (p) runnersReconcile(c, p);
    return reschedule(c.version);
  };

  const persist = async (c: Content): Promise<void> => {
    await fs.mkdir(dirname(file), { recursive: true });
    await writeFileAtomic(fs, file, `${JSON.stringify(c, null, 2)}\n`);
  };

  const status = (): ContentStatus => {
    const outputs: ContentStatus['outputs'] = {};
    for (const [name, placement] of Object.entries(result?.perOutput ?? {})) {
      const runner = runners.get(placement.assignment);
      outputs[name] = { ...placement, state: runner?.state ?? { kind: 'idle' } };
    }
    return {
      file,
      version: content?.version ?? null,
      at: new Date(clock.now()).toISOString(),
      nextChangeAt: result?.nextChangeAt == null ? null : new Date(result.nextChangeAt).toISOString(),
      evaluatedAt: evaluatedAt === undefined ? null : new Date(evaluatedAt).toISOString(),
      player: playerNote,
      outputs,
      cache: cache?.status() ?? null,
      time: watch?.state ?? null,
      ...(problem ? { problem } : {}),
    };
  };

  /** Without content the cache still opens at start: orphaned partial downloads go now, not later. */
  const cacheOpenAtStart = async (): Promise<void> => {
    try {
      await cacheOpen(undefined);
    } catch (error) {
      logger.error({ err: error }, `cannot open the media cache under ${config.dataDir}: ${(error as Error).message}`);
    }
  };

  let watch: ClockWatch | undefined;
  const clockChanged = (change: ClockChange, state: TimeSyncState): void => {
    context.bus.emit('time.sync', state);
    if (change.kind === 'state') {
      logger.warn({ time: state }, `clock: synchronized ${state.synchronized} (source ${state.source})`);
      return;
    }
    const why =
      change.kind === 'step'
        ? `the clock was stepped by ${change.deltaMs} ms`
        : `the clock is synchronised (${change.source})`;
    logger.info({ time: state, change }, `${why}: schedules re-evaluated`);
    reschedule();
  };
  const watchStart = (): void => {
    watch = new ClockWatch({
      now: () => clock.now(),
      sync: deps.clockWatch?.sync ?? kernelClockSource(addonClockState(context.addon)),
      ...(deps.clockWatch?.monotonic ? { monotonic: deps.clockWatch.monotonic } : {}),
      ...(deps.clockWatch?.intervalMs ? { intervalMs: deps.clockWatch.intervalMs } : {}),
      onChange: clockChanged,
    });
    context.bus.emit('time.sync', watch.state);
    logger.info(
      { time: watch.state },
      `clock: synchronized ${watch.state.synchronized} (source ${watch.state.source})`,
    );
    watch.start();
  };

  return {
    name: 'content',
    async start() {
      watchStart();
      withdraw.push(
        commands.register({
          name: 'playlist.set',
          description:
            'Replace the content (media, playlists, schedules, outputs): validated, saved atomically, applied. Args: {"content": {...}}',
          handler: async (args) => {
            let next: Content;
            try {
              next = contentValidate(args.content, 'content');
            } catch (error) {
              if (error instanceof ContentError) throw new CommandError(error.code, error.message);
              throw error;
            }
            try {
              await cacheOpen(next);
            } catch (error) {
              throw new CommandError(
                'ERR_CACHE_IO',
                `cannot open the media cache under ${config.dataDir}: ${(error as Error).message}; nothing changed`,
              );
            }
            try {
              await persist(next);
            } catch (error) {
              throw new CommandError(
                'ERR_CONTENT_WRITE',
                `cannot save ${file}: ${(error as Error).message}; nothing changed`,
              );
            }
            const jobId = await apply(next);
            logger.info({ version: next.version, file }, `content version ${next.version} applied`);
            return {
              version: next.version,
              file,
              nextChangeAt: status().nextChangeAt,
              outputs: status().outputs,
              ...(jobId ? { jobId } : {}),
            };
          },
        }),
        commands.register({
          name: 'content.status',
          description: 'What each output plays and why, the next schedule change, and media cache progress.',
          handler: () => status(),
        }),
      );
      if (!existsSync(file)) {
        logger.info({ file }, `no content at ${file}; waiting for playlist.set`);
        await cacheOpenAtStart();
        return;
      }
      try {
        const c = contentParse(await fs.readFile(file, 'utf8'), file);
        await apply(c);
        logger.info({ version: c.version, file }, `content version ${c.version} loaded from ${file}`);
      } catch (error) {
        // A bad file must not stop the supervisor: outputs keep their slate, the reason is reported.
        problem = (error as Error).message;
        logger.error({ file, code: (error as { code?: string }).code, err: error }, problem);
        await cacheOpenAtStart();
      }
    },
    async stop() {
      stopped = true;
      watch?.stop();
      for (const w of withdraw.splice(0)) w();
      for (const t of timers) clearTimeout(t);
      timers = [];
      for (const runner of runners.values()) runner.stop();
      runners.clear();
      player?.close();
      await cache?.close();
    },
  };
}

/** Virtual outputs when there is no KMS device (as the playback extension does); none on KMS yet. */
/** Content shows on playback's outputs, through the supervisor's one decode manager. */
function defaultPlayer(context: ExtensionContext): Player | undefined {
  const { bus, config, logger } = context;
  const ready = bus.latest('playback.ready');
  if (!ready) return undefined;
  return new ScreensPlayer({
    decode: ready.decode,
    screens: ready.screens,
    claim: ready.claim,
    deviceName: config.device.name || hostname(),
    onCropIgnored: (output) =>
      logger.warn({ output }, `output ${output}: virtual outputs cannot crop; the tile shows the whole picture`),
  });
}

/** The addon's adjtimex reading, or undefined when the addon (an older build, a test double) lacks it. */
function addonClockState(addon: NativeAddon | undefined): NativeAddon['clockState'] | undefined {
  return typeof addon?.clockState === 'function' ? () => addon.clockState() : undefined;
}
