import { isDeepStrictEqual } from 'node:util';
import { ConfigError } from '../config/load.ts';
import { type Config, settingsFlat } from '../config/schema.ts';
import type { Logger } from '../log/logger.ts';
import type { EventBus } from '../supervisor/bus.ts';
import type { CommandRegistry } from '../supervisor/commands.ts';
import type { Contract } from './contract.ts';
import { desiredRead, desiredWrite } from './desired-store.ts';
import { PAYLOAD_LIMITS, payloadDecode } from './payload.ts';

/** `config/reported` (components.schemas.ReportedConfig in docs/asyncapi.yaml). */
export interface ReportedConfig {
  version: number | null;
  outcome: 'applied' | 'rejected';
  appliedVersion: number | null;
  at: string;
  applied: string[];
  restartRequired: string[];
  unchanged: string[];
  errors: Array<{ key: string; code: string; message: string }>;
}

/**
 * How a key takes effect without a restart. Each returns true when it did; false (nobody
 * offers the command yet) leaves the key for the next start, and the report says so.
 */
export type LiveApplier = (value: unknown) => Promise<boolean>;

export interface DesiredConfigDeps {
  readonly contract: Contract;
  readonly dataDir: string;
  /** The configuration that results from the lower layers plus `desired`; throws ConfigError. */
  readonly reload: (desired: Record<string, unknown>) => Config;
  /** The configuration the supervisor started with. */
  readonly initial: Config;
  readonly commands: CommandRegistry;
  readonly bus: EventBus;
  readonly logger: Logger;
  /** Keys the MQTT extension applies itself (mqtt.telemetryIntervalS). */
  readonly localAppliers: Readonly<Record<string, LiveApplier>>;
  readonly now?: () => number;
}

const SETTINGS = settingsFlat();

/**
 * The fleet's desired configuration: validated whole, saved, applied. A document with any
 * error is rejected whole and nothing changes; a valid one is saved atomically before any key
 * is applied, so a crash mid-apply still boots into the new config.
 */
export class DesiredConfig {
  readonly #deps: DesiredConfigDeps;
  readonly #now: () => number;
  readonly #appliers: Record<string, LiveApplier>;
  #effective: Config;
  #appliedVersion: number | null = null;
  #lastReport: ReportedConfig | undefined;

  constructor(deps: DesiredConfigDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
    this.#effective = deps.initial;
    // Decode settings belong to the playback extension: applied through its commands, so they
    // take effect live exactly when an extension offers them.
    this.#appliers = {
      'decode.shared': (on) => this.#viaCommand('decode.shared', { on }),
      'decode.maxDecoders': (max) => this.#viaCommand('decode.maxDecoders', { max }),
      ...deps.localAppliers,
    };
  }

  get effective(): Config {
    return this.#effective;
  }

  get appliedVersion(): number | null {
    return this.#appliedVersion;
  }

  /** The newest report, to publish (retained) after every connect. */
  get report(): ReportedConfig | undefined {
    return this.#lastReport;
  }

  /**
   * Takes up the saved desired config at start: what the boot config already has is applied;
   * what differs is applied live where possible, else reported as waiting for a restart.
   */
  async boot(): Promise<ReportedConfig | undefined> {
    const { stored, problem } = desiredRead(this.#deps.dataDir);
    if (problem) this.#deps.logger.warn(`saved desired config ignored: ${problem}`);
    if (!stored) return undefined;
    let next: Config;
    try {
      next = this.#deps.reload(stored.config);
    } catch (error) {
      this.#deps.logger.warn(
        { version: stored.version },
        `saved desired config version ${stored.version} no longer validates: ${(error as Error).message}`,
      );
      return undefined;
    }
    return this.#apply(stored.version, stored.config, next, false);
  }

  /** Handles one `config/desired` message; resolves to the report to publish. */
  async handle(payload: Uint8Array): Promise<ReportedConfig> {
    const decoded = payloadDecode(payload, PAYLOAD_LIMITS.desiredBytes);
    if (!decoded.ok) return this.#reject(null, [{ key: '', code: decoded.code, message: decoded.message }]);
    const value = decoded.value as { version?: unknown; config?: unknown };
    const version =
      typeof value === 'object' && value !== null && Number.isSafeInteger(value.version)
        ? (value.version as number)
        : null;
    const shape = this.#deps.contract.validate('DesiredConfig', value);
    if (!shape.ok) {
      return this.#reject(
        version,
        shape.problems.map((p) => ({
          key: p.path === '' ? '' : p.path.slice(1).replaceAll('/', '.'),
          code: 'ERR_DESIRED_INVALID',
          message: `${p.path || 'document'} ${p.message}`,
        })),
      );
    }
    const desired = value as { version: number; config: Record<string, unknown> };
    if (this.#appliedVersion !== null && desired.version < this.#appliedVersion) {
      return this.#reject(desired.version, [
        {
          key: 'version',
          code: 'ERR_VERSION_STALE',
          message: `version ${desired.version} is older than the applied version ${this.#appliedVersion}`,
        },
      ]);
    }
    if (desired.version === this.#appliedVersion && this.#lastReport?.outcome === 'applied') {
      // The retained desired document comes again after every reconnect: nothing to do.
      return this.#lastReport;
    }
    let next: Config;
    try {
      next = this.#deps.reload(desired.config);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      return this.#reject(
        desired.version,
        error.problems.map((p) => ({
          key: p.key,
          code: p.rule.startsWith('unknown key') ? 'ERR_UNKNOWN_KEY' : 'ERR_CONFIG_INVALID',
          // The value is quoted unless the key is secret (ConfigProblem leaves it out then).
          message: `${p.key || p.source}${'value' in p ? ` = ${JSON.stringify(p.value)}` : ''}: ${p.rule}`,
        })),
      );
    }
    try {
      desiredWrite(this.#deps.dataDir, { version: desired.version, config: desired.config });
    } catch (error) {
      return this.#reject(desired.version, [
        { key: '', code: 'ERR_PERSIST_FAILED', message: `cannot save the desired config: ${(error as Error).message}` },
      ]);
    }
    return this.#apply(desired.version, desired.config, next, true);
  }

  async #apply(
    version: number,
    layer: Record<string, unknown>,
    next: Config,
    announce: boolean,
  ): Promise<ReportedConfig> {
    const mentioned = new Set(leafKeys(layer));
    const applied: string[] = [];
    const restartRequired: string[] = [];
    const unchanged: string[] = [];
    for (const [key] of SETTINGS) {
      const before = valueAt(this.#effective, key);
      const after = valueAt(next, key);
      if (isDeepStrictEqual(before, after)) {
        if (mentioned.has(key)) unchanged.push(key);
        continue;
      }
      const applier = this.#appliers[key];
      let live = false;
      try {
        live = applier ? await applier(after) : false;
      } catch (error) {
        this.#deps.logger.warn({ key }, `applying ${key} live failed: ${(error as Error).message}`);
      }
      (live ? applied : restartRequired).push(key);
    }
    // Keys waiting for a restart still differ from what runs; the effective config is what
    // runs now plus what was applied live.
    const running = structuredClone(this.#effective);
    for (const key of applied) valueSet(running, key, valueAt(next, key));
    this.#effective = running;
    this.#appliedVersion = version;
    const report: ReportedConfig = {
      version,
      outcome: 'applied',
      appliedVersion: version,
      at: new Date(this.#now()).toISOString(),
      applied,
      restartRequired,
      unchanged,
      errors: [],
    };
    this.#lastReport = report;
    this.#deps.logger.info(
      { version, applied, restartRequired },
      `desired config version ${version} applied${restartRequired.length ? `; restart needed for ${restartRequired.join(', ')}` : ''}`,
    );
    if (announce || applied.length > 0) {
      this.#deps.bus.emit('config.applied', { version, config: next, applied, restartRequired });
    }
    return report;
  }

  #reject(version: number | null, errors: ReportedConfig['errors']): ReportedConfig {
    const report: ReportedConfig = {
      version,
      outcome: 'rejected',
      appliedVersion: this.#appliedVersion,
      at: new Date(this.#now()).toISOString(),
      applied: [],
      restartRequired: [],
      unchanged: [],
      errors,
    };
    this.#lastReport = report;
    this.#deps.logger.warn(
      { version, errors: errors.map((e) => e.key || e.code) },
      `desired config${version === null ? '' : ` version ${version}`} rejected: ${errors[0]?.message ?? ''}${errors.length > 1 ? ` (and ${errors.length - 1} more)` : ''}`,
    );
    return report;
  }

  async #viaCommand(name: string, args: Record<string, unknown>): Promise<boolean> {
    if (!this.#deps.commands.has(name)) return false;
    const reply = await this.#deps.commands.invoke(name, args, { transport: 'internal', from: 'config/desired' });
    if (!reply.ok) throw new Error(`${reply.error.code}: ${reply.error.message}`);
    return true;
  }
}

function leafKeys(node: Record<string, unknown>, prefix = ''): string[] {
  return Object.entries(node).flatMap(([name, value]) =>
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    SETTINGS.some(([k]) => k.startsWith(`${prefix}${name}.`))
      ? leafKeys(value as Record<string, unknown>, `${prefix}${name}.`)
      : [`${prefix}${name}`],
  );
}

function valueAt(config: Config, key: string): unknown {
  return key.split('.').reduce<unknown>((node, name) => (node as Record<string, unknown>)?.[name], config);
}

function valueSet(config: Config, key: string, value: unknown): void {
  const path = key.split('.');
  const leaf = path.pop() as string;
  const parent = path.reduce(
    (node, name) => node[name] as Record<string, unknown>,
    config as unknown as Record<string, unknown>,
  );
  parent[leaf] = structuredClone(value);
}
