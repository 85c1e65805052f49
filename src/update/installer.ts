import { randomUUID } from 'node:crypto';
import { access, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileWriteAtomic, symlinkReplaceAtomic } from '../fs/atomic.ts';
import { runDirFromEnv } from '../mqtt/reboot-request.ts';
import { UpdateError } from './errors.ts';
import { versionCompare, versionValid } from './version.ts';

export type SlotState = 'good' | 'bad' | 'empty' | 'unknown';

/** The A/B slots as the status document shows them; what could not be found out is left out or `unknown`. */
export interface SlotsInfo {
  /** The running slot: `A` (the disk's first root partition) or `B`, when root could tell (slots-root.json). */
  readonly slot?: string;
  /** The other slot: the version installed there and whether it booted well. */
  readonly other?: { readonly version?: string; readonly state: SlotState };
}

/**
 * What writes a verified update into the inactive slot. On the appliance that is
 * systemd-sysupdate, run by root on the supervisor's request (`SysupdateInstaller`); tests give
 * a fake. The supervisor never writes a partition itself.
 */
export interface Installer {
  /** Why this box cannot install updates (said plainly to the fleet), or undefined when it can. */
  unsupported(): Promise<string | undefined>;
  /** Installs `version` from the verified artefacts in `dir` into the inactive slot; throws ERR_UPDATE_INSTALL. */
  install(dir: string, version: string): Promise<void>;
  slots(): Promise<SlotsInfo>;
}

export interface SysupdateOptions {
  /** The image's transfer files. */
  readonly definitions: string;
  /**
   * The symlink the transfer files name as their regular-file source (`Path=`): pointed at the
   * version's download directory just before the install, so the transfer files need no
   * version in their path.
   */
  readonly sourceLink: string;
  /**
   * Where the install request is written: the supervisor's run directory (`/run/multihead`,
   * `$RUNTIME_DIRECTORY`), which root's `multihead-update-install.path` watches.
   */
  readonly requestDir?: string;
  /** Where root answers: `install-result.json`, `slots-sysupdate.json`, `slots-bootctl.json`, `slots-root.json`. */
  readonly resultDir?: string;
  /** The root unit that serves requests; without it nothing would ever answer. */
  readonly pathUnit?: string;
  /** Writing a root image on a slow card takes minutes; an install nobody answers must still end. */
  readonly installTimeoutMs?: number;
  readonly pollMs?: number;
}

/** The request file root's multihead-update-install.path watches for in the run directory. */
export const INSTALL_REQUEST_FILE = 'update-install-request';
export const INSTALL_RESULT_FILE = 'install-result.json';
export const RESULT_DIR_DEFAULT = '/run/multihead-update';
export const PATH_UNIT_DEFAULT = '/usr/lib/systemd/system/multihead-update-install.path';

/** Root's answer (systemd/update-install). */
interface InstallResult {
  readonly id?: unknown;
  readonly ok?: unknown;
  readonly exitCode?: unknown;
  readonly message?: unknown;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function textRead(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return '';
  }
}

/**
 * systemd-sysupdate as the installer, run by root on the supervisor's request: the supervisor
 * has no capabilities and no device access (DevicePolicy=closed), so it cannot write a partition
 * or the ESP, nor read the disk to list the slots. `install` points the source link at the
 * verified artefacts and writes `<runDir>/update-install-request` {id, version} atomically;
 * `multihead-update-install.path` starts root's `multihead-update-install.service`
 * (systemd/update-install), which checks SHA256SUMS.gpg against the image's key and the digests
 * once more, runs `systemd-sysupdate update <version>` with the image's transfer files
 * (`/usr/lib/sysupdate.d`: the root image into the other slot, the UKI with its boot counter
 * onto the ESP) and answers in `/run/multihead-update/install-result.json` with the same id.
 * Slots come from the JSON of `systemd-sysupdate list` and `bootctl list` that root writes
 * beside it at every boot and after every install; output that cannot be read is reported as
 * unknown, never a crash.
 */
export class SysupdateInstaller implements Installer {
  readonly #o: Required<SysupdateOptions>;

  constructor(options: SysupdateOptions) {
    this.#o = {
      requestDir: runDirFromEnv(),
      resultDir: RESULT_DIR_DEFAULT,
      pathUnit: PATH_UNIT_DEFAULT,
      installTimeoutMs: 30 * 60_000,
      pollMs: 1000,
      ...options,
    };
  }

  async unsupported(): Promise<string | undefined> {
    let transfers: string[];
    try {
      transfers = (await readdir(this.#o.definitions)).filter((n) => n.endsWith('.transfer'));
    } catch {
      transfers = [];
    }
    if (transfers.length === 0) {
      return `no update transfer files in ${this.#o.definitions}: this is not an A/B appliance image (running from a checkout or an image without update slots); nothing can be installed`;
    }
    try {
      await access(this.#o.pathUnit);
    } catch {
      return `${this.#o.pathUnit} is missing: nothing in this image would install a version for the supervisor`;
    }
    try {
      await access(this.#o.requestDir);
    } catch {
      return `no run directory ${this.#o.requestDir} (systemd RuntimeDirectory=multihead) to ask root for the install in`;
    }
    return undefined;
  }

  async install(dir: string, version: string): Promise<void> {
    symlinkReplaceAtomic(dir, this.#o.sourceLink);
    const id = randomUUID();
    const request = join(this.#o.requestDir, INSTALL_REQUEST_FILE);
    try {
      fileWriteAtomic(request, `${JSON.stringify({ id, version, requestedAt: new Date().toISOString() })}\n`, {
        mode: 0o644,
      });
    } catch (error) {
      throw new UpdateError(
        'ERR_UPDATE_INSTALL',
        `cannot ask root to install ${version}: ${request}: ${(error as Error).message}`,
      );
    }
    const resultFile = join(this.#o.resultDir, INSTALL_RESULT_FILE);
    const deadline = Date.now() + this.#o.installTimeoutMs;
    for (;;) {
      const result = jsonOf(await textRead(resultFile)) as InstallResult | undefined;
      if (result && typeof result === 'object' && result.id === id) {
        if (result.ok === true) return;
        throw new UpdateError(
          'ERR_UPDATE_INSTALL',
          `systemd-sysupdate update ${version} failed (${String(result.exitCode)}): ${String(result.message ?? '')}`,
        );
      }
      if (Date.now() >= deadline) {
        throw new UpdateError(
          'ERR_UPDATE_INSTALL',
          `no answer to the install request for ${version} in ${resultFile} within ${Math.round(this.#o.installTimeoutMs / 1000)} s (multihead-update-install.service)`,
        );
      }
      await sleep(this.#o.pollMs);
    }
  }

  async slots(): Promise<SlotsInfo> {
    const [list, boot, root] = await Promise.all([
      textRead(join(this.#o.resultDir, 'slots-sysupdate.json')),
      textRead(join(this.#o.resultDir, 'slots-bootctl.json')),
      textRead(join(this.#o.resultDir, 'slots-root.json')),
    ]);
    return slotsParse(list, boot, root);
  }
}

function jsonOf(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

const strings = (value: unknown): string[] =>
  Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string' && versionValid(v)) : [];

/**
 * The other slot from `systemd-sysupdate list --json=short` (`{current, all}`: every version
 * installed or offered by a source) and `bootctl list --json=short` (each entry's boot counter:
 * no counter left is a version that failed its tries; a counter still running is not judged
 * yet). The running version is the one root booted from (slots-root.json: the label of the
 * mounted root partition, `multihead_<version>`): sysupdate's `current` is the newest version
 * installed, which after a rollback is the bad one, not the one running. Anything missing or of
 * an unexpected shape is unknown.
 */
export function slotsParse(sysupdateJson: string, bootctlJson: string, rootJson = ''): SlotsInfo {
  const root = jsonOf(rootJson) as { slot?: unknown; label?: unknown } | undefined;
  const named = root?.slot;
  const slot = typeof named === 'string' && /^[A-Z0-9]{1,2}$/.test(named) ? { slot: named } : {};
  const booted = typeof root?.label === 'string' ? /^multihead_(.+)$/.exec(root.label)?.[1] : undefined;
  return { ...slot, ...slotsOther(sysupdateJson, bootctlJson, booted) };
}

function slotsOther(sysupdateJson: string, bootctlJson: string, booted: string | undefined): SlotsInfo {
  const list = jsonOf(sysupdateJson) as Record<string, unknown> | undefined;
  if (!list || typeof list !== 'object') return { other: { state: 'unknown' } };
  // "current+pending": the newest installed while it waits for its reboot (systemd 257+).
  const named = list.current ?? list['current+pending'];
  const current = booted ?? (typeof named === 'string' ? named : undefined);
  const installed = strings(list.installed ?? list.all).filter((v) => v !== current);
  if (current === undefined) return { other: { state: 'unknown' } };
  // Two slots: whatever else is installed is in the other one (the newest, should there be more).
  const other = installed.sort(versionCompare).at(-1);
  if (other === undefined) return { other: { state: 'empty' } };
  const entries = jsonOf(bootctlJson);
  const entry = Array.isArray(entries)
    ? entries.find(
        (e: Record<string, unknown>) =>
          e &&
          typeof e === 'object' &&
          (e.version === other || (typeof e.id === 'string' && e.id.includes(`_${other}`))),
      )
    : undefined;
  if (!entry) return { other: { version: other, state: 'unknown' } };
  const left = (entry as Record<string, unknown>).triesLeft;
  const state: SlotState = left === undefined ? 'good' : left === 0 ? 'bad' : 'unknown';
  return { other: { version: other, state } };
}

/** The default source link: `<dataDir>/updates/current`. */
export const sourceLinkOf = (dataDir: string): string => join(dataDir, 'updates', 'current');
