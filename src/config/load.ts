import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import convict from 'convict';
import {
  CONFIG_PATH_ENV,
  type Config,
  DEFAULT_CONFIG_PATH,
  isSetting,
  type SettingTree,
  schema,
  settingsFlat,
} from './schema.ts';

/** One thing wrong with the configuration, naming the key, the value and where it came from. */
export interface ConfigProblem {
  /** Dotted key ("mqtt.url"); empty when the problem is the whole file or layer. */
  readonly key: string;
  /** Absent when the key is sensitive or the problem is not about a value (unreadable file). */
  readonly value?: unknown;
  readonly rule: string;
  /** "/etc/multihead/config.json", "environment MULTIHEAD_HTTP_PORT", "MQTT desired state", "default". */
  readonly source: string;
}

export class ConfigError extends Error {
  readonly problems: readonly ConfigProblem[];

  constructor(problems: readonly ConfigProblem[]) {
    super(problemsLine(problems));
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

/** All problems as one line: the first in full, the rest by key, so a journal line stays readable. */
function problemsLine(problems: readonly ConfigProblem[]): string {
  const [first, ...rest] = problems;
  if (first === undefined) return 'invalid config';
  const value = 'value' in first ? ` = ${JSON.stringify(first.value)}` : '';
  const more = rest.length > 0 ? ` (and ${rest.length} more: ${rest.map((p) => p.key || p.source).join(', ')})` : '';
  const where = first.key === '' ? `${first.source}${value}` : `${first.key}${value} from ${first.source}`;
  return `invalid config: ${where}: ${first.rule}${more}`;
}

export interface ConfigLoadOptions {
  /** An explicit file (`--config`): it must exist. Without it, MULTIHEAD_CONFIG, then the default path if present. */
  readonly path?: string | undefined;
  /** Where to look when no path is given; tests point it at a scratch directory. */
  readonly defaultPath?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Apply environment variables (off for `config check FILE`, which judges the file alone). */
  readonly useEnv?: boolean;
  /** The fleet's desired state, the highest layer. */
  readonly desired?: unknown;
  readonly machineIdPath?: string;
  readonly hostname?: string;
}

export interface LoadedConfig {
  readonly config: Config;
  /** The file that was read, if any. */
  readonly file: string | undefined;
  /** Where each key's value came from. */
  readonly sources: ReadonlyMap<string, string>;
  /** The configuration as JSON with sensitive values masked, for display. */
  readonly masked: () => Record<string, unknown>;
}

const settings = settingsFlat();
const settingByKey = new Map(settings);

// Coercion of environment strings is done in configLoad, not by convict, so a file that
// writes "8080" where a number belongs is an error rather than silently converted.
for (const format of new Set(settings.map(([, setting]) => setting.format))) {
  convict.addFormat({ name: format.name, validate: (value: unknown) => format.validate(value) });
}

function convictSchema(tree: SettingTree): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(tree).map(([name, node]) => {
      if (!isSetting(node)) return [name, convictSchema(node)];
      // Env import stays ours (see configLoad), so the layer order is explicit.
      return [
        name,
        { doc: node.doc, format: node.format.name, default: node.default, sensitive: node.sensitive ?? false },
      ];
    }),
  );
}

/**
 * Builds the running configuration: defaults < file < environment < desired state.
 * Throws ConfigError listing every problem; nothing half-valid is returned.
 */
export function configLoad(options: ConfigLoadOptions = {}): LoadedConfig {
  const env = options.env ?? process.env;
  const store = convict<Config>(convictSchema(schema) as convict.Schema<Config>, { env: {}, args: [] });
  const sources = new Map<string, string>(settings.map(([key]) => [key, 'default']));
  const problems: ConfigProblem[] = [];

  const explicit = options.path ?? (options.useEnv === false ? undefined : env[CONFIG_PATH_ENV] || undefined);
  const file = explicit ?? options.defaultPath ?? DEFAULT_CONFIG_PATH;
  const fileData = readConfigFile(file, explicit !== undefined, problems);
  const fileUsed = fileData === undefined ? undefined : file;
  if (fileData !== undefined) applyLayer(store, fileData, file, sources, problems);

  if (options.useEnv !== false) {
    for (const [key, setting] of settings) {
      const raw = env[setting.env];
      if (raw === undefined) continue;
      store.set(key as never, (setting.format.coerce ? setting.format.coerce(raw) : raw) as never);
      sources.set(key, `environment ${setting.env}`);
    }
  }

  if (options.desired !== undefined) applyLayer(store, options.desired, 'MQTT desired state', sources, problems);

  for (const [key, setting] of settings) {
    const value: unknown = store.get(key as never);
    try {
      setting.format.validate(value);
    } catch (error) {
      problems.push(problem(key, value, (error as Error).message, sources.get(key) ?? 'default'));
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const config = store.getProperties();
  deriveDefaults(config, options);
  return {
    config,
    file: fileUsed,
    sources,
    masked: () => configMasked(config),
  };
}

/** A copy safe to print: sensitive values that are set become "[redacted]". */
export function configMasked(config: Config): Record<string, unknown> {
  const copy = structuredClone(config) as unknown as Record<string, unknown>;
  for (const [key, setting] of settings) {
    if (!setting.sensitive) continue;
    const path = key.split('.');
    const leaf = path.pop() as string;
    const parent = path.reduce((node, name) => node[name] as Record<string, unknown>, copy);
    if (parent[leaf] !== '') parent[leaf] = '[redacted]';
  }
  return copy;
}

function problem(key: string, value: unknown, rule: string, source: string): ConfigProblem {
  return settingByKey.get(key)?.sensitive ? { key, rule, source } : { key, value, rule, source };
}

function readConfigFile(path: string, required: boolean, problems: ConfigProblem[]): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !required) return undefined;
    const why =
      code === 'ENOENT' ? 'file not found' : code === 'EACCES' ? 'permission denied' : (error as Error).message;
    problems.push({ key: '', rule: `cannot read config file: ${why}`, source: path });
    return undefined;
  }
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text);
  } catch (error) {
    problems.push({ key: '', rule: `not valid JSON: ${(error as Error).message}`, source: path });
    return undefined;
  }
}

/** Copies a layer's known leaves into the store; unknown or misshapen keys become problems. */
function applyLayer(
  store: convict.Config<Config>,
  data: unknown,
  source: string,
  sources: Map<string, string>,
  problems: ConfigProblem[],
): void {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    problems.push({ key: '', value: data, rule: 'must be a JSON object of settings', source });
    return;
  }
  const walk = (node: Record<string, unknown>, prefix: string): void => {
    for (const [name, value] of Object.entries(node)) {
      const key = prefix + name;
      if (settingByKey.has(key)) {
        store.set(key as never, value as never);
        sources.set(key, source);
      } else if (settings.some(([known]) => known.startsWith(`${key}.`))) {
        if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
          walk(value as Record<string, unknown>, `${key}.`);
        } else {
          const children = settings.filter(([k]) => k.startsWith(`${key}.`)).map(([k]) => k.slice(key.length + 1));
          problems.push({ key, value, rule: `must be an object with keys ${children.join(', ')}`, source });
        }
      } else {
        const near = closestKey(key);
        problems.push({ key, rule: `unknown key${near ? ` (did you mean "${near}"?)` : ''}`, source });
      }
    }
  };
  walk(data as Record<string, unknown>, '');
}

function closestKey(key: string): string | undefined {
  let best: { key: string; distance: number } | undefined;
  for (const [known] of settings) {
    const distance = editDistance(key.toLowerCase(), known.toLowerCase());
    if (distance <= 3 && (best === undefined || distance < best.distance)) best = { key: known, distance };
  }
  return best?.key;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

/** Empty id/name mean "derive from this machine", so one image can be flashed to a whole fleet. */
function deriveDefaults(config: Config, options: ConfigLoadOptions): void {
  const host = options.hostname ?? hostname();
  if (config.device.id === '') {
    let machineId = '';
    try {
      machineId = readFileSync(options.machineIdPath ?? '/etc/machine-id', 'utf8').trim();
    } catch {
      // Containers and fresh images may lack a machine-id; the hostname is the next stable name.
    }
    config.device.id = /^[0-9a-f]{32}$/.test(machineId)
      ? `mh-${machineId.slice(0, 12)}`
      : `mh-${host.replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 61)}`;
  }
  if (config.device.name === '') config.device.name = host.slice(0, 64);
}
