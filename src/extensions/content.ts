import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { type ClockWatchDeps, kernelClockSource } from '../content/clock-watch.ts';
import type { Fetch } from '../content/download.ts';
import { ContentExtension } from '../content/extension.ts';
import { type FileSystem, nodeFs } from '../content/fs.ts';
import type { Player } from '../content/player.ts';
import { ScreensPlayer } from '../content/screens-player.ts';
import type { NativeAddon } from '../native/addon.ts';
import type { Extension, ExtensionContext } from '../supervisor/extension.ts';

export type { ContentStatus } from '../content/extension.ts';

/** Prerolling this long before a schedule boundary lets the switch land on the boundary's vblank. */
const PREROLL_MS = 3000;

export interface ContentDeps {
  readonly clock?: { now(): number };
  readonly fetch?: Fetch;
  readonly fs?: FileSystem;
  /** What shows content; default: playback's outputs, once playback is ready. */
  readonly playerCreate?: (context: ExtensionContext) => Player | undefined;
  readonly prerollMs?: number;
  readonly retry?: { attempts?: number; baseMs?: number; maxMs?: number };
  /** Least time between two `content.sync` progress events of one job (default 1 s). */
  readonly syncProgressEveryMs?: number;
  /** The clock watch's monotonic clock, sync source and interval (tests); `clock` is its wall clock. */
  readonly clockWatch?: Pick<ClockWatchDeps, 'monotonic' | 'sync' | 'intervalMs'>;
}

export function contentCreate(context: ExtensionContext): Extension {
  return contentCreateWith(context, {});
}

/** The content extension (src/content/extension.ts) with its dependencies taken from the context. */
export function contentCreateWith(context: ExtensionContext, deps: ContentDeps): Extension {
  const { config, logger, bus, commands } = context;
  const playerCreate = deps.playerCreate ?? defaultPlayer;
  return new ContentExtension({
    file: config.content.file || join(config.dataDir, 'content.json'),
    dataDir: config.dataDir,
    cacheLimits: {
      maxBytes: config.cache.maxBytes,
      reserveBytes: config.cache.reserveBytes,
      concurrency: config.cache.concurrency,
    },
    logger,
    bus,
    commands,
    clock: deps.clock ?? Date,
    fs: deps.fs ?? nodeFs,
    exists: existsSync,
    playerCreate: () => playerCreate(context),
    prerollMs: deps.prerollMs ?? PREROLL_MS,
    clockWatch: {
      sync: deps.clockWatch?.sync ?? kernelClockSource(addonClockState(context.addon)),
      ...(deps.clockWatch?.monotonic ? { monotonic: deps.clockWatch.monotonic } : {}),
      ...(deps.clockWatch?.intervalMs ? { intervalMs: deps.clockWatch.intervalMs } : {}),
    },
    ...(deps.fetch ? { fetch: deps.fetch } : {}),
    ...(deps.retry ? { retry: deps.retry } : {}),
    ...(deps.syncProgressEveryMs !== undefined ? { syncProgressEveryMs: deps.syncProgressEveryMs } : {}),
  });
}

/** Content shows on playback's outputs, through the supervisor's one decode manager; none until playback is ready. */
function defaultPlayer(context: ExtensionContext): Player | undefined {
  const { bus, config, logger } = context;
  const ready = bus.latest('playback.ready');
  if (!ready) return undefined;
  return new ScreensPlayer({
    decode: ready.decode,
    screens: ready.screens,
    claim: ready.claim,
    deviceName: config.device.name || hostname(),
    onPowerFailed: (output, error) =>
      logger.error({ output, code: (error as { code?: string }).code }, `display power of ${output}: ${error.message}`),
  });
}

/** The addon's adjtimex reading, or undefined when the addon (an older build, a test double) lacks it. */
function addonClockState(addon: NativeAddon | undefined): NativeAddon['clockState'] | undefined {
  return typeof addon?.clockState === 'function' ? () => addon.clockState() : undefined;
}
