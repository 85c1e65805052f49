import { createHash } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { type ConfigLoadOptions, configLoad, type LoadedConfig } from '../config/load.ts';
import { dirFsync, fileWriteAtomic } from '../fs/atomic.ts';

/** The last good desired configuration: applied, and (if it changed connectivity) proven by a CONNACK. */
export const DESIRED_FILE = 'config-desired.json';
/** A desired configuration that changes how the box reaches the broker, waiting for its first CONNACK. */
export const TRIAL_FILE = 'config-desired.trial.json';
/** The newest trial that did not reach the broker, kept so its retained document is not tried again. */
export const ROLLED_BACK_FILE = 'config-desired.rolled-back.json';

/**
 * Keys that decide whether the box can reach the fleet at all. A desired config that changes
 * one of them is tried first and rolled back unless the broker answers (docs/mqtt.md).
 */
export const CONNECTIVITY_KEYS = [
  'mqtt.url',
  'mqtt.username',
  'mqtt.password',
  'mqtt.ca',
  'mqtt.cert',
  'mqtt.key',
  'mqtt.prefix',
  'device.id',
] as const;

/** Keys the desired layer may not set, and why (quoted in the rejection). */
export const REMOTE_FORBIDDEN: Readonly<Record<string, string>> = {
  dataDir:
    'cannot be set over MQTT: the data directory holds the desired config itself and its last good copy, so a wrong value could not be rolled back',
  'update.keyring':
    'cannot be set over MQTT: it is the trust root of firmware updates; whoever could point it at a file of their own (a media download) could sign firmware',
};

/** A trial started more often than this without a CONNACK (each start crashed or was cut short) is rolled back at boot. */
export const TRIAL_BOOTS_MAX = 3;

/** A desired document as saved. Version 0 stands for "no desired layer" (the fleet cleared it). */
export interface StoredDesired {
  readonly version: number;
  readonly config: Record<string, unknown>;
}

export interface StoredTrial extends StoredDesired {
  /** Starts of the supervisor with this trial so far. */
  readonly boots: number;
  readonly since: string;
}

export interface RolledBack {
  readonly version: number;
  /** desiredDigest of the rolled-back config: the same version with other content is a conflict. */
  readonly digest: string;
  readonly reason: string;
  readonly at: string;
}

export interface DesiredState {
  readonly good?: StoredDesired;
  readonly trial?: StoredTrial;
  readonly rolledBack?: RolledBack;
  /** Files that were there but unreadable; each is ignored. */
  readonly problems: readonly string[];
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isVersion = (v: unknown, min: number): v is number => Number.isSafeInteger(v) && (v as number) >= min;

/** Content identity of a desired config, independent of key order and whitespace. */
export function desiredDigest(config: unknown): string {
  return createHash('sha256').update(canonicalJson(config)).digest('hex');
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (isObject(value)) {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** The problems of a desired layer that the config rules cannot see: keys that may not come from the fleet. */
export function remoteForbidden(layer: Record<string, unknown>): Array<{ key: string; message: string }> {
  return Object.keys(REMOTE_FORBIDDEN)
    .filter(
      (key) =>
        key.split('.').reduce<unknown>((node, name) => (isObject(node) ? node[name] : undefined), layer) !== undefined,
    )
    .map((key) => ({ key, message: `${key} ${REMOTE_FORBIDDEN[key]}` }));
}

function readJson(dataDir: string, name: string, problems: string[]): Record<string, unknown> | undefined {
  const path = join(dataDir, name);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      problems.push(`cannot read ${path}: ${(error as Error).message}`);
    }
    return undefined;
  }
  try {
    const data: unknown = JSON.parse(text);
    if (isObject(data)) return data;
  } catch {
    // Named below: a torn or foreign file is the same problem to the reader.
  }
  problems.push(`${path} is not JSON, or not a JSON object`);
  return undefined;
}

/** What the data directory holds of the desired layer; unreadable parts are named in `problems` and left out. */
export function desiredState(dataDir: string): DesiredState {
  const problems: string[] = [];
  const state: { good?: StoredDesired; trial?: StoredTrial; rolledBack?: RolledBack; problems: string[] } = {
    problems,
  };
  const good = readJson(dataDir, DESIRED_FILE, problems);
  if (good) {
    if (isVersion(good.version, 1) && isObject(good.config))
      state.good = { version: good.version, config: good.config };
    else problems.push(`${join(dataDir, DESIRED_FILE)} is not {version, config}`);
  }
  const trial = readJson(dataDir, TRIAL_FILE, problems);
  if (trial) {
    if (isVersion(trial.version, 0) && isObject(trial.config) && isVersion(trial.boots, 0)) {
      state.trial = { version: trial.version, config: trial.config, boots: trial.boots, since: String(trial.since) };
    } else problems.push(`${join(dataDir, TRIAL_FILE)} is not {version, config, boots}`);
  }
  const back = readJson(dataDir, ROLLED_BACK_FILE, problems);
  if (back && isVersion(back.version, 0) && typeof back.digest === 'string' && typeof back.reason === 'string') {
    state.rolledBack = { version: back.version, digest: back.digest, reason: back.reason, at: String(back.at) };
  }
  return state;
}

/** The saved desired config (the last good one), as before trials existed. */
export function desiredRead(dataDir: string): { stored?: StoredDesired; problem?: string } {
  const { good, problems } = desiredState(dataDir);
  return { ...(good ? { stored: good } : {}), ...(problems[0] ? { problem: problems[0] } : {}) };
}

const save = (dataDir: string, name: string, data: unknown): void =>
  fileWriteAtomic(join(dataDir, name), `${JSON.stringify(data, null, 2)}\n`);

function remove(dataDir: string, ...names: string[]): void {
  for (const name of names) rmSync(join(dataDir, name), { force: true });
  dirFsync(dataDir);
}

/** Saves a desired config as the last good one; a rolled-back trial it supersedes is forgotten. */
export function desiredWrite(dataDir: string, desired: StoredDesired): void {
  save(dataDir, DESIRED_FILE, { version: desired.version, config: desired.config });
  const { rolledBack } = desiredState(dataDir);
  if (rolledBack && rolledBack.version <= desired.version) remove(dataDir, ROLLED_BACK_FILE);
}

/** Saves a desired config to be tried at the next start; the last good one stays beside it. */
export function trialWrite(dataDir: string, trial: StoredTrial): void {
  save(dataDir, TRIAL_FILE, trial);
}

/**
 * The trial reached the broker: it becomes the last good config. Written before the trial file
 * goes, so a power cut in between leaves two equal documents, never none.
 */
export function trialPromote(dataDir: string): StoredDesired | undefined {
  const { trial } = desiredState(dataDir);
  if (!trial) return undefined;
  if (trial.version === 0) remove(dataDir, DESIRED_FILE);
  else save(dataDir, DESIRED_FILE, { version: trial.version, config: trial.config });
  remove(dataDir, TRIAL_FILE, ROLLED_BACK_FILE);
  return trial;
}

/** The trial failed: remembered (with why) so its retained document is not tried again, then dropped. */
export function trialRollBack(dataDir: string, reason: string): RolledBack | undefined {
  const { trial } = desiredState(dataDir);
  if (!trial) return undefined;
  const record: RolledBack = {
    version: trial.version,
    digest: desiredDigest(trial.config),
    reason,
    at: new Date().toISOString(),
  };
  save(dataDir, ROLLED_BACK_FILE, record);
  remove(dataDir, TRIAL_FILE);
  return record;
}

/** Drops the whole desired layer: last good, trial and rollback record (provisioning, or the fleet clearing it). */
export function desiredClear(dataDir: string): void {
  remove(dataDir, DESIRED_FILE, TRIAL_FILE, ROLLED_BACK_FILE);
}

export interface TrialAtBoot {
  readonly version: number;
  /** mqtt.trialS of the last good config: a config on trial cannot lengthen its own trial. */
  readonly seconds: number;
  readonly boots: number;
}

export type LoadedWithDesired = LoadedConfig & {
  desiredVersion: number | null;
  desiredProblem?: string;
  /** Set when this start runs a config on trial: it must reach the broker within `seconds`. */
  trial?: TrialAtBoot;
  /** Set when this start rolled a trial back before using it (it no longer loads, or kept failing). */
  rolledBack?: RolledBack;
};

/**
 * Loads the configuration with the desired layer on top, so the fleet's config applies at boot
 * without a broker: a pending trial if there is one (counted, and rolled back once it has had
 * TRIAL_BOOTS_MAX starts), else the last good one. The data directory comes from the lower
 * layers; a saved layer that no longer validates (after an upgrade) is skipped and reported in
 * `desiredProblem`, never a reason not to start.
 */
export function configLoadWithDesired(options: ConfigLoadOptions = {}): LoadedWithDesired {
  const base = configLoad(options);
  const dataDir = base.config.dataDir;
  const state = desiredState(dataDir);
  const good = layerLoad(options, state.good, base);
  const problem = good.problem ?? state.problems[0];
  const lastGood: LoadedWithDesired = {
    ...good.loaded,
    desiredVersion: good.loaded === base ? null : (state.good?.version ?? null),
    ...(problem ? { desiredProblem: problem } : {}),
  };
  const trial = state.trial;
  if (!trial) return lastGood;
  if (trial.boots >= TRIAL_BOOTS_MAX) {
    const rolledBack = trialRollBack(
      dataDir,
      `the configuration on trial was started ${trial.boots} times without reaching the broker`,
    );
    return { ...lastGood, ...(rolledBack ? { rolledBack } : {}) };
  }
  const tried = layerLoad(options, trial, base);
  if (tried.problem !== undefined) {
    const rolledBack = trialRollBack(dataDir, `the configuration on trial does not load: ${tried.problem}`);
    return { ...lastGood, ...(rolledBack ? { rolledBack } : {}) };
  }
  trialWrite(dataDir, { ...trial, boots: trial.boots + 1 });
  return {
    ...tried.loaded,
    desiredVersion: trial.version === 0 ? null : trial.version,
    trial: { version: trial.version, seconds: lastGood.config.mqtt.trialS, boots: trial.boots + 1 },
  };
}

function layerLoad(
  options: ConfigLoadOptions,
  layer: StoredDesired | undefined,
  base: LoadedConfig,
): { loaded: LoadedConfig; problem?: string } {
  if (!layer || layer.version === 0) return { loaded: base };
  const forbidden = remoteForbidden(layer.config);
  if (forbidden[0]) return { loaded: base, problem: forbidden[0].message };
  try {
    return { loaded: configLoad({ ...options, desired: layer.config }) };
  } catch (error) {
    return { loaded: base, problem: (error as Error).message };
  }
}
