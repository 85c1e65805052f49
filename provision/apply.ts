// The device's side of provisioning (run as root by multihead-boot, before the network and
// the supervisor start):
//
//   node apply.ts apply /efi/multihead-provision.json
//       Applies the file exactly once: everything is checked first, then secrets and the
//       configuration go to the data partition (mode 0600, owned by the multihead user, each
//       written atomically), the fleet's desired layer is dropped (the technician on site wins),
//       and the file is overwritten and removed from the FAT ESP. A file whose digest was already
//       applied (a power cut after applying but before the removal, or the same file put back)
//       drops the desired layer and is removed unapplied. A file that fails validation is
//       replaced by multihead-provision.errors.txt holding only the reasons.
//   node apply.ts write-config < config.json
//       Replaces the supervisor's configuration atomically after the supervisor's own check.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { dirFsync, fileWriteAtomic, symlinkReplaceAtomic, tempsRemoveStale } from '../src/fs/atomic.ts';
import { scrubText } from '../src/log/redact.ts';
import { desiredClear } from '../src/mqtt/desired-store.ts';
import {
  configProblems,
  hostnameFor,
  networkUnit,
  ProvisionError,
  provisionConfig,
  provisionRead,
  provisionSecrets,
} from './spec.ts';

const DATA = process.env.MULTIHEAD_DATA_DIR ?? '/var/lib/multihead';
const CONFIG = path.join(DATA, 'config.json');
const SYSTEM = path.join(DATA, 'system');
const MARKER = path.join(SYSTEM, 'provisioned.json');
const NETWORK = path.join(SYSTEM, 'network', '10-multihead-static.network');
const ZONEINFO = process.env.MULTIHEAD_ZONEINFO ?? '/usr/share/zoneinfo';

const say = (line: string): void => {
  process.stdout.write(`multihead-provision: ${line}\n`);
};

function owner(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const line = fs
    .readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('multihead:'));
  const [, , uid, gid] = line?.split(':') ?? [];
  return uid && gid ? { uid: Number(uid), gid: Number(gid) } : undefined;
}

function readJson(file: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** Provisioned keys override, others (set later over MQTT or by hand) stay. */
function merge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    const isObj = (x: unknown): x is Record<string, unknown> =>
      typeof x === 'object' && x !== null && !Array.isArray(x);
    out[k] = isObj(b) && isObj(v) ? merge(b, v) : v;
  }
  return out;
}

/**
 * Overwrites a file on the ESP in place, then deletes it. FAT keeps a deleted file's clusters
 * readable until they are reused, so the password and key inside must be gone first.
 */
function espShred(file: string): void {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r+');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  try {
    const size = fs.fstatSync(fd).size;
    const zeros = Buffer.alloc(Math.min(Math.max(size, 1), 1 << 16));
    for (let at = 0; at < size; at += zeros.length) fs.writeSync(fd, zeros, 0, Math.min(zeros.length, size - at), at);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.rmSync(file, { force: true });
  dirFsync(path.dirname(file));
}

/** A plain durable write: FAT has no modes to set, so the atomic writer's chmod would fail there. */
function espWrite(file: string, text: string): void {
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  dirFsync(path.dirname(file));
}

/** The rejected file leaves only its reasons behind (never a secret: they are scrubbed). */
function reject(file: string, error: ProvisionError): number {
  const reasons = scrubText(error.message);
  say(`REJECTED ${reasons}`);
  const base = file.replace(/\.json$/, '');
  espWrite(`${base}.errors.txt`, `${reasons}\n`);
  espShred(file);
  // Left by earlier versions, which kept the rejected file whole.
  espShred(`${base}.rejected.json`);
  return 1;
}

/** The data directory the supervisor will use, where its desired layer lives. */
function dataDirOf(config: Record<string, unknown>): string {
  return typeof config.dataDir === 'string' && path.isAbsolute(config.dataDir) ? config.dataDir : DATA;
}

/** The technician on site wins: what the fleet set over MQTT no longer sits above this file. */
function desiredDrop(config: Record<string, unknown>): void {
  const dir = dataDirOf(config);
  desiredClear(dir);
  say(`dropped the fleet's desired config in ${dir}`);
}

/** Everything checked, nothing written: the spec and the configuration it merges into. */
function validated(file: string): { spec: ReturnType<typeof provisionRead>['spec']; config: Record<string, unknown> } {
  const { spec } = provisionRead(file);
  const config = merge(readJson(CONFIG) ?? {}, provisionConfig(spec));
  const problems = configProblems(config);
  if (problems.length > 0) {
    throw new ProvisionError(file, [`the merged configuration does not load: ${problems.join('; ')}`]);
  }
  return { spec, config };
}

function apply(file: string): number {
  const text = fs.readFileSync(file);
  const digest = crypto.createHash('sha256').update(text).digest('hex');
  const marker = readJson(MARKER);
  if (marker?.sha256 === digest) {
    say(`${file} was already applied at ${String(marker.appliedAt)}; removing it without applying it again`);
    desiredDrop(readJson(CONFIG) ?? {});
    espShred(file);
    return 0;
  }
  let checked: ReturnType<typeof validated>;
  try {
    checked = validated(file);
  } catch (e) {
    if (!(e instanceof ProvisionError)) throw e;
    return reject(file, e);
  }
  const { spec, config } = checked;
  const ids = owner();
  const opts = { mode: 0o600, ...(ids ? { uid: ids.uid, gid: ids.gid } : {}) };
  // On the device this is SECRETS_DIR, the path the configuration names.
  const secretsDir = path.join(DATA, 'secrets');
  fs.mkdirSync(secretsDir, { recursive: true, mode: 0o700 });
  if (ids) fs.chownSync(secretsDir, ids.uid, ids.gid);
  for (const [name, pem] of provisionSecrets(spec)) {
    fileWriteAtomic(path.join(secretsDir, name), pem.endsWith('\n') ? pem : `${pem}\n`, opts);
    say(`wrote ${path.join(secretsDir, name)} (0600)`);
  }
  fileWriteAtomic(CONFIG, `${JSON.stringify(config, null, 2)}\n`, opts);
  say(`wrote ${CONFIG} (0600): device ${spec.device.name}${spec.mqtt ? `, broker ${scrubText(spec.mqtt.url)}` : ''}`);
  desiredDrop(config);

  fs.mkdirSync(path.dirname(NETWORK), { recursive: true, mode: 0o755 });
  fileWriteAtomic(path.join(SYSTEM, 'hostname'), `${hostnameFor(spec.device.id ?? spec.device.name)}\n`, {
    mode: 0o644,
  });
  const zone = spec.timezone ?? 'UTC';
  if (!fs.existsSync(path.join(ZONEINFO, zone))) say(`WARNING: ${zone} is not in ${ZONEINFO}; the clock stays UTC`);
  symlinkReplaceAtomic(path.join(ZONEINFO, zone), path.join(SYSTEM, 'localtime'));
  if (spec.network) {
    fileWriteAtomic(NETWORK, networkUnit(spec.network), { mode: 0o644 });
    say(`static network ${spec.network.address}`);
  } else if (fs.existsSync(NETWORK)) {
    fs.rmSync(NETWORK);
    dirFsync(path.dirname(NETWORK));
  }
  fileWriteAtomic(
    MARKER,
    `${JSON.stringify({ sha256: digest, appliedAt: new Date().toISOString(), device: spec.device.name })}\n`,
    {
      mode: 0o644,
    },
  );
  // Only now, with everything durable on the data partition, do the secrets leave the ESP.
  espShred(file);
  say(`applied and removed ${file}`);
  return 0;
}

async function writeConfig(): Promise<number> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  let config: unknown;
  try {
    config = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (e) {
    say(`stdin is not valid JSON: ${(e as Error).message}`);
    return 65;
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    say('stdin must be a JSON object of settings');
    return 65;
  }
  const problems = configProblems(config as Record<string, unknown>);
  if (problems.length > 0) {
    say(`refused: ${problems.join('; ')}`);
    return 78;
  }
  const ids = owner();
  tempsRemoveStale(CONFIG);
  fileWriteAtomic(CONFIG, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600, ...(ids ?? {}) });
  return 0;
}

const [verb, arg] = process.argv.slice(2);
if (verb === 'apply' && arg) process.exitCode = apply(arg);
else if (verb === 'write-config' && !arg) process.exitCode = await writeConfig();
else {
  process.stderr.write('usage: apply.ts apply FILE | apply.ts write-config < config.json\n');
  process.exitCode = 64;
}
