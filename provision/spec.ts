// The provisioning file (multihead-provision.json on the ESP): what it may hold, how it is
// checked, and the supervisor configuration it becomes. Shared by the host CLI (cli.ts) and
// the device's first-boot step (apply.ts), so both reject the same things with the same words.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { isIP } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as f from '../src/config/formats.ts';
import { configLoad } from '../src/config/load.ts';
import { scrubText } from '../src/log/redact.ts';

export const PROVISION_FILE = 'multihead-provision.json';
/** Where secrets go on the device (the data partition), one file each, mode 0600. */
export const SECRETS_DIR = '/var/lib/multihead/secrets';

export interface ProvisionNetwork {
  /** systemd-networkd [Match] Name= pattern; default every wired interface "en* eth*". */
  interface?: string;
  /** CIDR, e.g. 192.168.1.50/24 or 2001:db8::5/64. */
  address: string;
  gateway?: string;
  dns?: string[];
}

export interface ProvisionSpec {
  device: { name: string; id?: string; groups?: string[] };
  /** IANA zone, e.g. Europe/Berlin; default UTC. */
  timezone?: string;
  mqtt?: {
    url: string;
    username?: string;
    password?: string;
    prefix?: string;
    /** PEM texts (not paths): they are written to the data partition with mode 0600. */
    ca?: string;
    cert?: string;
    key?: string;
  };
  network?: ProvisionNetwork;
  /** Further supervisor settings (docs/config.md), checked by the supervisor's own loader. */
  config?: Record<string, unknown>;
}

export class ProvisionError extends Error {
  readonly problems: readonly string[];
  constructor(source: string, problems: readonly string[]) {
    // The project's one redaction: a problem may quote a value, and values here hold credentials.
    const scrubbed = problems.map(scrubText);
    super(`${source}: ${scrubbed.length} problem(s):\n${scrubbed.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ProvisionError';
    this.problems = scrubbed;
  }
}

const ALLOWED: Record<string, readonly string[]> = {
  '': ['device', 'timezone', 'mqtt', 'network', 'config', '$schema'],
  device: ['name', 'id', 'groups'],
  mqtt: ['url', 'username', 'password', 'prefix', 'ca', 'cert', 'key'],
  network: ['interface', 'address', 'gateway', 'dns'],
};

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Checks a parsed provisioning file; returns it typed, or throws ProvisionError naming every problem. */
export function provisionValidate(input: unknown, source = PROVISION_FILE): ProvisionSpec {
  const problems: string[] = [];
  const check = (key: string, value: unknown, format: f.Format): void => {
    try {
      format.validate(value);
    } catch (e) {
      problems.push(`${key}: ${(e as Error).message}${secretKey(key) ? '' : ` (got ${JSON.stringify(value)})`}`);
    }
  };
  if (!isObject(input)) throw new ProvisionError(source, ['must be a JSON object']);
  for (const [section, keys] of Object.entries(ALLOWED)) {
    const node = section === '' ? input : input[section];
    if (!isObject(node)) continue;
    for (const k of Object.keys(node)) {
      if (!keys.includes(k))
        problems.push(`${section ? `${section}.` : ''}${k}: unknown key (allowed: ${keys.join(', ')})`);
    }
  }

  const device = input.device;
  if (!isObject(device)) problems.push('device: required, an object with name (and optionally id, groups)');
  else {
    if (typeof device.name !== 'string' || device.name === '')
      problems.push('device.name: required, a non-empty string');
    else check('device.name', device.name, f.displayName);
    if (device.id !== undefined) {
      if (device.id === '') problems.push('device.id: must not be empty (leave it out to derive it from the machine)');
      else check('device.id', device.id, f.deviceId);
    }
    if (device.groups !== undefined) check('device.groups', device.groups, f.groupList);
  }

  if (input.timezone !== undefined) {
    const tz = input.timezone;
    if (typeof tz !== 'string' || !/^[A-Za-z0-9_+-]+(\/[A-Za-z0-9_+-]+)*$/.test(tz) || !timezoneKnown(tz)) {
      problems.push(`timezone: must be an IANA time zone such as Europe/Berlin or UTC (got ${JSON.stringify(tz)})`);
    }
  }

  if (input.mqtt !== undefined) {
    const m = input.mqtt;
    if (!isObject(m))
      problems.push('mqtt: must be an object with url (and optionally username, password, prefix, ca, cert, key)');
    else {
      if (typeof m.url !== 'string' || m.url === '') problems.push('mqtt.url: required when mqtt is given');
      else check('mqtt.url', m.url, f.mqttUrl);
      if (m.username !== undefined) check('mqtt.username', m.username, f.text);
      if (m.password !== undefined) check('mqtt.password', m.password, f.text);
      if (m.prefix !== undefined) check('mqtt.prefix', m.prefix, f.topicPrefix);
      let cert: crypto.X509Certificate | undefined;
      for (const k of ['ca', 'cert'] as const) {
        const v = m[k];
        if (v === undefined) continue;
        if (typeof v !== 'string' || !v.includes('-----BEGIN CERTIFICATE-----')) {
          problems.push(`mqtt.${k}: must be a PEM certificate (the text, "-----BEGIN CERTIFICATE-----...")`);
          continue;
        }
        try {
          const parsed = new crypto.X509Certificate(v);
          if (k === 'cert') cert = parsed;
        } catch (e) {
          problems.push(`mqtt.${k}: not a readable PEM certificate: ${(e as Error).message}`);
        }
      }
      if (m.key !== undefined) {
        if (typeof m.key !== 'string' || !/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(m.key)) {
          problems.push('mqtt.key: must be a PEM private key (the text, "-----BEGIN PRIVATE KEY-----...")');
        } else {
          try {
            const key = crypto.createPrivateKey(m.key);
            if (cert && !cert.checkPrivateKey(key)) problems.push('mqtt.key: does not belong to mqtt.cert');
          } catch (e) {
            problems.push(`mqtt.key: not a readable PEM private key: ${(e as Error).message}`);
          }
        }
      }
      if ((m.cert === undefined) !== (m.key === undefined))
        problems.push('mqtt.cert and mqtt.key: give both or neither');
    }
  }

  if (input.network !== undefined) {
    const n = input.network;
    if (!isObject(n)) problems.push('network: must be an object with address (and optionally interface, gateway, dns)');
    else {
      if (typeof n.address !== 'string' || !cidrValid(n.address)) {
        problems.push(
          `network.address: must be an address with prefix length, e.g. 192.168.1.50/24 (got ${JSON.stringify(n.address)})`,
        );
      }
      if (n.gateway !== undefined && (typeof n.gateway !== 'string' || isIP(n.gateway) === 0)) {
        problems.push(`network.gateway: must be an IP address (got ${JSON.stringify(n.gateway)})`);
      }
      if (
        n.dns !== undefined &&
        (!Array.isArray(n.dns) || !n.dns.every((d) => typeof d === 'string' && isIP(d) !== 0))
      ) {
        problems.push(`network.dns: must be a list of IP addresses (got ${JSON.stringify(n.dns)})`);
      }
      if (
        n.interface !== undefined &&
        (typeof n.interface !== 'string' || !/^[A-Za-z0-9*?_.:-]+( [A-Za-z0-9*?_.:-]+)*$/.test(n.interface))
      ) {
        problems.push(
          `network.interface: must be interface names or patterns such as "enp1s0" or "en*" (got ${JSON.stringify(n.interface)})`,
        );
      }
    }
  }

  if (input.config !== undefined && !isObject(input.config))
    problems.push('config: must be an object of supervisor settings');
  if (problems.length > 0) throw new ProvisionError(source, problems);

  const spec = input as unknown as ProvisionSpec;
  // The resulting supervisor configuration must load as well (config's own rules, unknown keys).
  const problemsConfig = configProblems(provisionConfig(spec));
  if (problemsConfig.length > 0) throw new ProvisionError(source, problemsConfig);
  return spec;
}

/** Keys whose values are never quoted in a problem: secrets, and the broker URL, whose user:password may not even parse as a URL. */
const secretKey = (key: string): boolean => /password|key$|^mqtt\.url$/.test(key);

function timezoneKnown(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

function cidrValid(value: string): boolean {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(value);
  if (!m) return false;
  const family = isIP(m[1] ?? '');
  const bits = Number(m[2]);
  return (family === 4 && bits >= 1 && bits <= 32) || (family === 6 && bits >= 1 && bits <= 128);
}

/** Secret and certificate files the spec asks for: name in SECRETS_DIR → PEM text. */
export function provisionSecrets(spec: ProvisionSpec): Map<string, string> {
  const files = new Map<string, string>();
  if (spec.mqtt?.ca) files.set('mqtt-ca.pem', spec.mqtt.ca);
  if (spec.mqtt?.cert) files.set('mqtt-client.pem', spec.mqtt.cert);
  if (spec.mqtt?.key) files.set('mqtt-client.key', spec.mqtt.key);
  return files;
}

/** The supervisor settings the spec stands for (the config file's content, before merging). */
export function provisionConfig(spec: ProvisionSpec): Record<string, unknown> {
  const config: Record<string, unknown> = structuredClone(spec.config ?? {});
  const section = (name: string): Record<string, unknown> => {
    const existing = config[name];
    const node = isObject(existing) ? existing : {};
    config[name] = node;
    return node;
  };
  const device = section('device');
  device.name = spec.device.name;
  if (spec.device.id !== undefined) device.id = spec.device.id;
  if (spec.device.groups !== undefined) device.groups = spec.device.groups;
  if (spec.mqtt) {
    const mqtt = section('mqtt');
    mqtt.url = spec.mqtt.url;
    for (const k of ['username', 'password', 'prefix'] as const) {
      const v = spec.mqtt[k];
      if (v !== undefined) mqtt[k] = v;
    }
    if (spec.mqtt.ca) mqtt.ca = path.join(SECRETS_DIR, 'mqtt-ca.pem');
    if (spec.mqtt.cert) mqtt.cert = path.join(SECRETS_DIR, 'mqtt-client.pem');
    if (spec.mqtt.key) mqtt.key = path.join(SECRETS_DIR, 'mqtt-client.key');
  }
  return config;
}

/** The supervisor's own verdict on a configuration object: one line per problem, none when it loads. */
export function configProblems(config: Record<string, unknown>): string[] {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'multihead-provision-'));
  const file = path.join(dir, 'config.json');
  try {
    fs.writeFileSync(file, JSON.stringify(config), { mode: 0o600 });
    configLoad({ path: file, useEnv: false, machineIdPath: '/nonexistent', hostname: 'provisioning' });
    return [];
  } catch (e) {
    const problems = (e as { problems?: Array<{ key: string; rule: string }> }).problems;
    if (!problems) return [`config: ${(e as Error).message}`];
    return problems.map((p) => `config${p.key ? `.${p.key}` : ''}: ${p.rule}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** systemd-networkd unit for a static address. */
export function networkUnit(n: ProvisionNetwork): string {
  const lines = [
    '# Written by multihead provisioning.',
    '[Match]',
    `Name=${n.interface ?? 'en* eth*'}`,
    '',
    '[Network]',
  ];
  lines.push(`Address=${n.address}`);
  if (n.gateway) lines.push(`Gateway=${n.gateway}`);
  for (const d of n.dns ?? []) lines.push(`DNS=${d}`);
  lines.push('IPv6AcceptRA=no', '');
  return lines.join('\n');
}

/** Reads and checks a provisioning file from disk (JSON syntax errors named with the file). */
export function provisionRead(file: string): { spec: ProvisionSpec; text: string } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ProvisionError(file, [`cannot read: ${(e as Error).message}`]);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    // JSON.parse quotes the text around the error, which may be a password: only where it is.
    const where = /at position \d+( \(line \d+ column \d+\))?/.exec((e as Error).message)?.[0];
    throw new ProvisionError(file, [`not valid JSON${where ? ` (${where})` : ''}`]);
  }
  return { spec: provisionValidate(data, file), text };
}

/** A valid hostname (and image file name) from a device id or name: "Lobby left #2" → "lobby-left-2". */
export function hostnameFor(name: string): string {
  const h = name
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63)
    .replace(/-+$/, '');
  return h || 'multihead';
}
