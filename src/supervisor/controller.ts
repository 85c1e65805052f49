import type { Config } from '../config/schema.ts';
import { type Logger, loggerFor } from '../log/logger.ts';
import type { LogRing } from '../log/ring.ts';
import type { NativeAddon } from '../native/addon.ts';
import { EventBus, type SupervisorState } from './bus.ts';
import { CommandRegistry } from './commands.ts';
import type { Extension, ExtensionDefinition } from './extension.ts';
import type { StartupTimeline } from './startup.ts';

export interface ControllerDeps {
  readonly config: Config;
  readonly logger: Logger;
  readonly logRing: LogRing;
  readonly addon: NativeAddon;
  readonly extensions: readonly ExtensionDefinition[];
  /** Budget for the whole orderly shutdown; systemd and the CLI contract allow 2 s. */
  readonly stopTimeoutMs?: number;
  /** Marks each extension's start (`extension:<name>`) on the start-up timeline. */
  readonly startup?: StartupTimeline;
  /** The longest the `afterFirstFrame` extensions wait for the outputs' first frames (default 15 s). */
  readonly firstFrameWaitMs?: number;
}

export class ExtensionStartError extends Error {
  readonly extension: string;

  constructor(extension: string, cause: unknown) {
    super(`extension ${extension} failed to start: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = 'ExtensionStartError';
    this.extension = extension;
  }
}

/** An extension that is not running because its start failed, and why. */
export interface ExtensionFailure {
  readonly extension: string;
  readonly error: string;
}

/** A stop of a half-started extension must not hold up the others' start. */
const FAILED_STOP_MS = 500;

/**
 * Bounds the wait of the `afterFirstFrame` extensions. A real box shows its first frame within
 * a second or two; an emulated one (TCG) in about 13 s. A box whose source neither plays nor
 * fails in that time still gets its fleet connection, just later.
 */
const FIRST_FRAME_WAIT_MS = 15_000;

/** Why the wait for the first frames ended. */
type FirstFrameOutcome = 'shown' | 'failed' | 'no display' | 'no outputs' | 'stopping' | 'timeout';

/**
 * Starts the extensions in order and stops them in reverse, within a deadline. It owns
 * the event bus and holds the event loop open while running: a supervisor with nothing
 * to play (no KMS, no broker) must still stay up and wait for configuration.
 *
 * An essential extension that fails to start stops everything (the service manager starts
 * the process again). Any other is logged as an error (ERR_EXTENSION_START, which the fleet
 * hears on `events`), named in the `running` state's reason and left out: the screens keep
 * playing without the fleet, the HTTP page or content.
 */
export class Controller {
  readonly bus: EventBus;
  readonly commands = new CommandRegistry();
  readonly #deps: ControllerDeps;
  readonly #log: Logger;
  readonly #started: Extension[] = [];
  readonly #failed: ExtensionFailure[] = [];
  #state: SupervisorState = 'stopped';
  #keepAlive: NodeJS.Timeout | undefined;
  #stopping: Promise<boolean> | undefined;

  constructor(deps: ControllerDeps) {
    this.#deps = deps;
    this.#log = loggerFor(deps.logger, 'supervisor');
    this.bus = new EventBus((event, error) => this.#log.error({ event, err: error }, `listener for ${event} threw`));
  }

  get state(): SupervisorState {
    return this.#state;
  }

  /** The non-essential extensions left out because their start failed. */
  get failed(): readonly ExtensionFailure[] {
    return this.#failed;
  }

  async start(): Promise<void> {
    this.#setState('starting');
    this.#keepAlive = setInterval(() => {}, 2 ** 30);
    let waited = false;
    for (const definition of this.#deps.extensions) {
      if (definition.afterFirstFrame && !waited) {
        waited = true;
        const why = await this.#firstFrameWait(definition.name);
        if (why === 'stopping') return;
      }
      const outcome = await this.#startOne(definition);
      this.#deps.startup?.mark(definition.name);
      if (outcome === 'started') continue;
      if (definition.essential) {
        await this.stop(`extension ${definition.name} failed to start`);
        throw new ExtensionStartError(definition.name, outcome.error);
      }
      await this.#leaveOut(definition.name, outcome);
    }
    const failed = this.#failed.map((f) => f.extension);
    this.#setState('running', failed.length > 0 ? `without ${failed.join(', ')}: failed to start` : undefined, failed);
  }

  /**
   * Until every output shows its first frame, a source fails, or the bound passes. Meanwhile
   * the event loop and the CPUs are the first frame's: loading the fleet client, the contract
   * validators and the HTTP server took 17 s of a 37 s start under TCG, and a frame that had
   * reached the screen was reported late because the loop was busy.
   */
  async #firstFrameWait(next: string): Promise<FirstFrameOutcome> {
    const { bus } = this;
    if (!bus.latest('display.ready')) return 'no display';
    // A card with nothing connected: no frame will come, and the fleet should hear of it now.
    if (bus.latest('display.outputs')?.outputs.length === 0) return 'no outputs';
    const allShown = (outputs: ReadonlyArray<{ frames: number }>): boolean =>
      outputs.length > 0 && outputs.every((o) => o.frames > 0);
    if (allShown(bus.latest('output.stats')?.outputs ?? [])) return 'shown';
    const waitMs = this.#deps.firstFrameWaitMs ?? FIRST_FRAME_WAIT_MS;
    const offs: Array<() => void> = [];
    let timer: NodeJS.Timeout | undefined;
    const why = await new Promise<FirstFrameOutcome>((resolve) => {
      offs.push(
        bus.on('output.stats', ({ outputs }) => allShown(outputs) && resolve('shown')),
        bus.on('decode.failed', () => resolve('failed')),
        bus.on('video.error', () => resolve('failed')),
        bus.on('supervisor.state', ({ state }) => state === 'stopping' && resolve('stopping')),
      );
      timer = setTimeout(() => resolve('timeout'), waitMs);
    });
    clearTimeout(timer);
    for (const off of offs) off();
    if (why === 'timeout')
      this.#log.warn(`no first frame on every output within ${waitMs} ms; starting ${next} and the rest anyway`);
    return why;
  }

  async #startOne(
    definition: ExtensionDefinition,
  ): Promise<'started' | { error: unknown; extension: Extension | undefined }> {
    let extension: Extension | undefined;
    try {
      extension = await definition.create({
        config: this.#deps.config,
        logger: loggerFor(this.#deps.logger, definition.name),
        bus: this.bus,
        commands: this.commands,
        addon: this.#deps.addon,
        logRing: this.#deps.logRing,
      });
      await extension.start();
    } catch (error) {
      return { error, extension };
    }
    this.#started.push(extension);
    return 'started';
  }

  /** Reports a non-essential extension's failed start and releases what it took before failing. */
  async #leaveOut(name: string, outcome: { error: unknown; extension: Extension | undefined }): Promise<void> {
    const message = (outcome.error as Error)?.message ?? String(outcome.error);
    this.#failed.push({ extension: name, error: message });
    this.#log.error(
      { code: 'ERR_EXTENSION_START', extension: name, err: outcome.error },
      `extension ${name} failed to start and is left out; the others keep running: ${message}`,
    );
    if (!outcome.extension) return;
    const stopped = await withTimeout(
      Promise.resolve().then(() => outcome.extension?.stop()),
      FAILED_STOP_MS,
    );
    if (stopped !== 'done')
      this.#log.warn({ extension: name }, `extension ${name} did not release cleanly after its failed start`);
  }

  /** Stops everything in reverse start order. Resolves false if the deadline passed first. */
  stop(reason: string): Promise<boolean> {
    this.#stopping ??= this.#stopAll(reason);
    return this.#stopping;
  }

  async #stopAll(reason: string): Promise<boolean> {
    this.#setState('stopping', reason);
    const deadline = Date.now() + (this.#deps.stopTimeoutMs ?? 1500);
    let clean = true;
    for (const extension of this.#started.reverse()) {
      const left = deadline - Date.now();
      const outcome = await withTimeout(
        Promise.resolve().then(() => extension.stop()),
        left,
      );
      if (outcome !== 'done') {
        clean = false;
        this.#log.error(
          { extension: extension.name, err: outcome === 'timeout' ? undefined : outcome.error },
          outcome === 'timeout'
            ? `extension ${extension.name} did not stop in time`
            : `extension ${extension.name} failed to stop`,
        );
      }
    }
    this.#started.length = 0;
    clearInterval(this.#keepAlive);
    this.#setState('stopped', reason);
    return clean;
  }

  #setState(state: SupervisorState, reason?: string, leftOut: readonly string[] = []): void {
    this.#state = state;
    this.#log.info({ state, ...(reason ? { reason } : {}) }, `supervisor ${state}${reason ? ` (${reason})` : ''}`);
    this.bus.emit('supervisor.state', {
      state,
      ...(reason ? { reason } : {}),
      ...(leftOut.length > 0 ? { leftOut } : {}),
    });
  }
}

async function withTimeout(work: Promise<unknown>, ms: number): Promise<'done' | 'timeout' | { error: unknown }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), Math.max(0, ms));
  });
  try {
    return await Promise.race([
      work.then(
        () => 'done' as const,
        (error: unknown) => ({ error }),
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
