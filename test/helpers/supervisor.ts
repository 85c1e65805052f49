import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { configLoad } from '../../src/config/load.ts';
import type { Config } from '../../src/config/schema.ts';
import { type Logger, loggingCreate } from '../../src/log/logger.ts';
import type { LogRing } from '../../src/log/ring.ts';
import { loadAddon } from '../../src/native/addon.ts';
import { Controller } from '../../src/supervisor/controller.ts';
import type { ExtensionDefinition } from '../../src/supervisor/extension.ts';
import { scratchDir } from './tmp.ts';

export interface Supervisor {
  readonly controller: Controller;
  readonly config: Config;
  readonly lines: string[];
  readonly logger: Logger;
  readonly ring: LogRing;
  stop(): Promise<boolean>;
}

/**
 * A real supervisor in this process with the given extensions, configured from `file` the way a
 * config file would (environment ignored), logging into `lines`. Stopped when the test ends.
 */
export async function supervisorStart(
  t: ExecutionContext,
  extensions: ExtensionDefinition[],
  file: Record<string, unknown> = {},
  options: { start?: boolean } = {},
): Promise<Supervisor> {
  const dir = scratchDir(t);
  const configPath = join(dir, 'config.json');
  writeFileSync(configPath, JSON.stringify({ dataDir: dir, ...file }));
  const config = configLoad({ path: configPath, env: {}, hostname: 'test-host' }).config;
  const lines: string[] = [];
  const logging = loggingCreate({ level: 'debug', ringSize: 500, sink: { write: (l) => lines.push(l) } });
  const controller = new Controller({
    config,
    logger: logging.logger,
    logRing: logging.ring,
    addon: loadAddon(),
    extensions,
    stopTimeoutMs: 1500,
  });
  if (options.start !== false) await controller.start();
  let stopped: Promise<boolean> | undefined;
  const stop = (): Promise<boolean> => {
    stopped ??= controller.stop('test over');
    return stopped;
  };
  t.teardown(stop);
  return { controller, config, lines, logger: logging.logger, ring: logging.ring, stop };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it returns something truthy, or fails naming `what`. */
export async function until<T>(probe: () => T | Promise<T>, what: string, timeoutMs = 15_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  while (Date.now() < deadline) {
    last = await probe();
    if (last) return last as NonNullable<T>;
    await sleep(50);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}
