import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type ConfigLoadOptions, configLoad, type LoadedConfig } from '../config/load.ts';
import { fileWriteAtomic } from '../fs/atomic.ts';

export const DESIRED_FILE = 'config-desired.json';

/** The last desired configuration that was valid and applied, as saved in the data directory. */
export interface StoredDesired {
  readonly version: number;
  readonly config: Record<string, unknown>;
}

/** The saved desired config, or undefined when there is none or it is unreadable (said in `problem`). */
export function desiredRead(dataDir: string): { stored?: StoredDesired; problem?: string } {
  const path = join(dataDir, DESIRED_FILE);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
    return { problem: `cannot read ${path}: ${(error as Error).message}` };
  }
  try {
    const data = JSON.parse(text) as { version?: unknown; config?: unknown };
    if (
      typeof data.version === 'number' &&
      Number.isSafeInteger(data.version) &&
      data.version >= 1 &&
      typeof data.config === 'object' &&
      data.config !== null &&
      !Array.isArray(data.config)
    ) {
      return { stored: { version: data.version, config: data.config as Record<string, unknown> } };
    }
    return { problem: `${path} is not {version, config}` };
  } catch (error) {
    return { problem: `${path} is not JSON: ${(error as Error).message}` };
  }
}

export function desiredWrite(dataDir: string, desired: StoredDesired): void {
  fileWriteAtomic(join(dataDir, DESIRED_FILE), `${JSON.stringify(desired, null, 2)}\n`);
}

/**
 * Loads the configuration with the saved desired state as its top layer, so the last good
 * fleet config applies at boot without a broker. The data directory comes from the lower
 * layers; a saved desired state that no longer validates (after an upgrade) is skipped and
 * reported in `desiredProblem`, never a reason not to start.
 */
export function configLoadWithDesired(
  options: ConfigLoadOptions = {},
): LoadedConfig & { desiredVersion: number | null; desiredProblem?: string } {
  const base = configLoad(options);
  const { stored, problem } = desiredRead(base.config.dataDir);
  if (!stored) return { ...base, desiredVersion: null, ...(problem ? { desiredProblem: problem } : {}) };
  try {
    return { ...configLoad({ ...options, desired: stored.config }), desiredVersion: stored.version };
  } catch (error) {
    return { ...base, desiredVersion: null, desiredProblem: (error as Error).message };
  }
}
