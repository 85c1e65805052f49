import type { Config } from '../config/schema.ts';
import { type Logger, loggerFor } from '../log/logger.ts';
import type { LogRing } from '../log/ring.ts';
import type { NativeAddon } from '../native/addon.ts';
import { EventBus, type SupervisorState } from './bus.ts';
import { CommandRegistry } from './commands.ts';
import type { Extension, ExtensionDefinition } from './extension.ts';

export interface ControllerDeps {
  readonly config: Config;
  readonly logger: Logger;
  readonly logRing: LogRing;
  readonly addon: NativeAddon;
  readonly extensions: readonly ExtensionDefinition[];
  /** Budget for the whole orderly shutdown; systemd and the CLI contract allow 2 s. */
  readonly stopTimeoutMs?: number;
}

export class ExtensionStartError extends Error {
  readonly extension: string;

  constructor(extension: string, cause: unknown) {
    super(`extension ${extension} failed to start: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = 'ExtensionStartError';
    this.extension = extension;
  }
}

/**
 * Starts the extensions in order and stops them in reverse, within a deadline. It owns
 * the event bus and holds the event loop open while running: a supervisor with nothing
 * to play (no KMS, no broker) must still stay up and wait for configuration.
 */
export class Controller {
  readonly bus: EventBus;
  readonly commands = new CommandRegistry();
  readonly #deps: ControllerDeps;
  readonly #log: Logger;
  readonly #started: Extension[] = [];
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

  async start(): Promise<void> {
    this.#setState('starting');
    this.#keepAlive = setInterval(() => {}, 2 ** 30);
    for (const definition of this.#deps.extensions) {
      let extension: Extension;
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
        await this.stop(`extension ${definition.name} failed to start`);
        throw new ExtensionStartError(definition.name, error);
      }
      this.#started.push(extension);
    }
    this.#setState('running');
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

  #setState(state: SupervisorState, reason?: string): void {
    this.#state = state;
    this.#log.info({ state, ...(reason ? { reason } : {}) }, `supervisor ${state}${reason ? ` (${reason})` : ''}`);
    this.bus.emit('supervisor.state', reason ? { state, reason } : { state });
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
