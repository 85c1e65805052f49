import { isDeepStrictEqual } from 'node:util';
import { ConfigError } from '../config/load.ts';
import { type Config, settingsFlat } from '../config/schema.ts';
import type { Logger } from '../log/logger.ts';
import type { EventBus } from '../supervisor/bus.ts';
import type { CommandRegistry } from '../supervisor/commands.ts';
import type { Contract } from './contract.ts';
import {
  CONNECTIVITY_KEYS,
  desiredClear,
  desiredDigest,
  desiredState,
  desiredWrite,
  type RolledBack,
  remoteForbidden,
  type StoredDesired,
  trialWrite,
} from './desired-store.ts';
import type { DeviceEvent } from './events.ts';
import { PAYLOAD_LIMITS, payloadDecode } from './payload.ts';

/** `config/reported` (components.schemas.ReportedConfig in docs/asyncapi.yaml). */
export interface ReportedConfig {
  version: number | null;
  /** `trial`: saved, and the supervisor restarts into it; it stays only if it reaches the broker. */
  outcome: 'applied' | 'rejected' | 'trial';
  appliedVersion: number | null;
  at: string;
  applied: string[];
  restartRequired: string[];
  unchanged: string[];
  errors: Array<{ key: string; code: string; message: string }>;
  /** With outcome `trial`: the connectivity keys on trial and how long they have to reach the broker. */
  trial?: { keys: string[]; timeoutS: number };
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
  /**
   * Starts the supervisor again (an orderly stop; systemd starts it), so a config on trial takes
   * effect. Without it the trial starts at the next start.
   */
  readonly restart?: () => void;
  /** Time for the `trial` report to leave before the restart. */
  readonly restartDelayMs?: number;
  readonly now?: () => number;
}

type ReportError = ReportedConfig['errors'][number];

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
  /** The content of the applied version: the same version with other content is a conflict. */
  #appliedDigest: string | undefined;
  #appliedReport: ReportedConfig | undefined;
  #rolledBack: RolledBack | undefined;
  #lastReport: ReportedConfig | undefined;
  #restartTimer: NodeJS.Timeout | undefined;

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
   * Takes up the saved desired config at start (the one on trial if this start runs one): what
   * the boot config already has is applied; what differs is applied live where possible, else
   * reported as waiting for a restart. A trial rolled back earlier becomes the report.
   */
  async boot(): Promise<ReportedConfig | undefined> {
    const { good, trial, rolledBack, problems } = desiredState(this.#deps.dataDir);
    for (const problem of problems) this.#deps.logger.warn(`saved desired config ignored: ${problem}`);
    this.#rolledBack = rolledBack;
    const stored = trial ?? good;
    let report: ReportedConfig | undefined;
    if (stored && stored.version > 0) {
      try {
        const next = this.#deps.reload(stored.config);
        report = await this.#apply(stored.version, stored.config, next, false);
      } catch (error) {
        this.#deps.logger.warn(
          { version: stored.version },
          `saved desired config version ${stored.version} no longer validates: ${(error as Error).message}`,
        );
      }
    }
    if (rolledBack && !trial && rolledBack.version > (this.#appliedVersion ?? 0)) {
      report = this.#rolledBackReport(rolledBack);
    }
    return report;
  }

  /** Handles one `config/desired` message; resolves to the report to publish. */
  async handle(payload: Uint8Array): Promise<ReportedConfig> {
    // The fleet cleared the retained message: it no longer wants anything of its own.
    if (payload.length === 0) return this.#clear();
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
    const desired = value as StoredDesired;
    const forbidden = remoteForbidden(desired.config);
    if (forbidden.length > 0) {
      return this.#reject(
        desired.version,
        forbidden.map((f) => ({ key: f.key, code: 'ERR_NOT_REMOTE', message: f.message })),
      );
    }
    const known = this.#versionKnown(desired);
    if (known) return known;
    let next: Config;
    try {
      next = this.#deps.reload(desired.config);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      return this.#reject(desired.version, configErrors(error));
    }
    return this.#take(desired, next);
  }

  /**
   * The answer for a version seen before, if any: the retained document again after a
   * reconnect (its earlier report, nothing re-applied, a rolled-back trial not tried again),
   * or the same version with other content (ERR_VERSION_CONFLICT, never taken as applied).
   */
  #versionKnown(desired: StoredDesired): ReportedConfig | undefined {
    const digest = desiredDigest(desired.config);
    const conflict = (what: string): ReportedConfig =>
      this.#reject(desired.version, [
        {
          key: 'version',
          code: 'ERR_VERSION_CONFLICT',
          message: `version ${desired.version} was ${what} with other content; publish changes under a new version`,
        },
      ]);
    const back = this.#rolledBack;
    if (back && desired.version === back.version) {
      if (back.digest !== digest) return conflict('rolled back');
      return this.#rolledBackReport(back);
    }
    if (this.#appliedVersion !== null && desired.version < this.#appliedVersion) {
      return this.#reject(desired.version, [
        {
          key: 'version',
          code: 'ERR_VERSION_STALE',
          message: `version ${desired.version} is older than the applied version ${this.#appliedVersion}`,
        },
      ]);
    }
    if (desired.version === this.#appliedVersion) {
      if (this.#appliedDigest !== digest) return conflict('applied');
      if (this.#appliedReport) {
        this.#lastReport = this.#appliedReport;
        return this.#appliedReport;
      }
    }
    return undefined;
  }

  /** A valid document: tried first when it changes connectivity, else saved and applied. */
  async #take(desired: StoredDesired, next: Config): Promise<ReportedConfig> {
    if (connectivityChanged(this.#effective, next).length > 0) return this.#trialStart(desired, next);
    try {
      desiredWrite(this.#deps.dataDir, desired);
    } catch (error) {
      return this.#reject(desired.version, [
        { key: '', code: 'ERR_PERSIST_FAILED', message: `cannot save the desired config: ${(error as Error).message}` },
      ]);
    }
    if (this.#rolledBack && this.#rolledBack.version <= desired.version) this.#rolledBack = undefined;
    return this.#apply(desired.version, desired.config, next, true);
  }

  /** Drops the desired layer: the lower layers (file, environment, defaults) apply again. */
  async #clear(): Promise<ReportedConfig> {
    let next: Config;
    try {
      next = this.#deps.reload({});
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      return this.#reject(null, configErrors(error));
    }
    // Going back to the file's broker is a connectivity change like any other: tried first.
    if (connectivityChanged(this.#effective, next).length > 0)
      return this.#trialStart({ version: 0, config: {} }, next);
    try {
      desiredClear(this.#deps.dataDir);
    } catch (error) {
      return this.#reject(null, [
        { key: '', code: 'ERR_PERSIST_FAILED', message: `cannot drop the desired config: ${(error as Error).message}` },
      ]);
    }
    this.#rolledBack = undefined;
    return this.#apply(null, {}, next, true);
  }

  /**
   * Saves the document as the config on trial beside the last good one and restarts into it
   * (src/mqtt/desired-trial.ts watches that start). Nothing is applied live before: the
   * restart applies it whole.
   */
  #trialStart(desired: StoredDesired, next: Config): ReportedConfig {
    const keys = connectivityChanged(this.#effective, next);
    const version = desired.version === 0 ? null : desired.version;
    try {
      trialWrite(this.#deps.dataDir, { ...desired, boots: 0, since: new Date(this.#now()).toISOString() });
    } catch (error) {
      return this.#reject(version, [
        { key: '', code: 'ERR_PERSIST_FAILED', message: `cannot save the desired config: ${(error as Error).message}` },
      ]);
    }
    const changed = SETTINGS.map(([key]) => key).filter(
      (key) => !isDeepStrictEqual(valueAt(this.#effective, key), valueAt(next, key)),
    );
    const report: ReportedConfig = {
      version,
      outcome: 'trial',
      appliedVersion: this.#appliedVersion,
      at: new Date(this.#now()).toISOString(),
      applied: [],
      restartRequired: changed,
      unchanged: [],
      errors: [],
      trial: { keys, timeoutS: this.#effective.mqtt.trialS },
    };
    this.#lastReport = report;
    this.#deps.logger.warn(
      { version, keys },
      `desired config${version === null ? ' (cleared)' : ` version ${version}`} changes ${keys.join(', ')}: restarting to try it; it must reach the broker within ${this.#effective.mqtt.trialS} s or the box rolls back`,
    );
    const restart = this.#deps.restart;
    if (restart) {
      clearTimeout(this.#restartTimer);
      this.#restartTimer = setTimeout(restart, this.#deps.restartDelayMs ?? 500);
    }
    return report;
  }

  #rolledBackReport(back: RolledBack): ReportedConfig {
    return this.#reject(back.version === 0 ? null : back.version, [
      {
        key: '',
        code: 'ERR_ROLLED_BACK',
        message: `rolled back to ${this.#appliedVersion === null ? 'the configuration without a desired layer' : `version ${this.#appliedVersion}`} at ${back.at}: ${back.reason}`,
      },
    ]);
  }

  async #apply(
    version: number | null,
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
    this.#appliedDigest = version === null ? undefined : desiredDigest(layer);
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
    this.#appliedReport = report;
    this.#deps.logger.info(
      { version, applied, restartRequired },
      `desired config ${version === null ? 'dropped' : `version ${version} applied`}${restartRequired.length ? `; restart needed for ${restartRequired.join(', ')}` : ''}`,
    );
    if (version !== null && (announce || applied.length > 0)) {
      this.#deps.bus.emit('config.applied', { version, config: next, applied, restartRequired });
    }
    return report;
  }

  #reject(version: number | null, errors: ReportError[]): ReportedConfig {
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

/** The connectivity keys whose values differ between what runs and what a document asks for. */
function connectivityChanged(running: Config, next: Config): string[] {
  return CONNECTIVITY_KEYS.filter((key) => !isDeepStrictEqual(valueAt(running, key), valueAt(next, key)));
}

function configErrors(error: ConfigError): ReportError[] {
  return error.problems.map((p) => ({
    key: p.key,
    code: p.rule.startsWith('unknown key') ? 'ERR_UNKNOWN_KEY' : 'ERR_CONFIG_INVALID',
    // The value is quoted unless the key is secret (ConfigProblem leaves it out then).
    message: `${p.key || p.source}${'value' in p ? ` = ${JSON.stringify(p.value)}` : ''}: ${p.rule}`,
  }));
}

/** The `events` message that goes with a report. */
export function reportEvent(report: ReportedConfig): DeviceEvent {
  const name = report.version === null ? 'desired config' : `desired config version ${report.version}`;
  const details = { version: report.version, appliedVersion: report.appliedVersion };
  if (report.outcome === 'applied') {
    return { type: 'config.applied', severity: 'info', at: report.at, message: `${name} applied`, details };
  }
  if (report.outcome === 'trial') {
    return {
      type: 'config.applied',
      severity: 'warn',
      at: report.at,
      message: `${name} on trial: restarting with ${report.trial?.keys.join(', ')}; rolled back unless it reaches the broker within ${report.trial?.timeoutS} s`,
      details: { ...details, trial: report.trial },
    };
  }
  return {
    type: 'config.rejected',
    severity: 'warn',
    at: report.at,
    message: `${name} rejected: ${report.errors.map((e) => e.message).join('; ')}`,
    details: { ...details, codes: [...new Set(report.errors.map((e) => e.code))] },
  };
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

/**
 * `config/desired` messages one at a time, and of those that wait only the newest: the broker
 * retains only the newest too, and a flood then costs one message of memory, not one each.
 * A burst that arrives in one read collapses before the first is handled.
 */
export class DesiredQueue {
  readonly #handle: (payload: Uint8Array) => Promise<void>;
  readonly #logger: Logger;
  #pending: Uint8Array | undefined;
  #running = false;
  #skipped = 0;

  constructor(handle: (payload: Uint8Array) => Promise<void>, logger: Logger) {
    this.#handle = handle;
    this.#logger = logger;
  }

  /** How many are waiting: 0 or 1. */
  get waiting(): number {
    return this.#pending === undefined ? 0 : 1;
  }

  push(payload: Uint8Array): void {
    if (this.#pending !== undefined) this.#skipped++;
    this.#pending = payload;
    if (this.#running) return;
    this.#running = true;
    setImmediate(() => void this.#drain());
  }

  async #drain(): Promise<void> {
    for (let payload = this.#take(); payload !== undefined; payload = this.#take()) {
      try {
        await this.#handle(payload);
      } catch (error) {
        this.#logger.error({ err: error }, `desired config handling failed: ${(error as Error).message}`);
      }
    }
    this.#running = false;
  }

  #take(): Uint8Array | undefined {
    const payload = this.#pending;
    this.#pending = undefined;
    if (payload !== undefined && this.#skipped > 0) {
      this.#logger.info(
        { skipped: this.#skipped },
        `${this.#skipped} older desired config(s) skipped: the newest wins`,
      );
      this.#skipped = 0;
    }
    return payload;
  }
}
