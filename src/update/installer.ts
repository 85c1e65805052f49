import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { symlinkReplaceAtomic } from '../fs/atomic.ts';
import { UpdateError } from './errors.ts';
import { versionCompare, versionValid } from './version.ts';

export type SlotState = 'good' | 'bad' | 'empty' | 'unknown';

/** The A/B slots as the status document shows them; what could not be found out is left out or `unknown`. */
export interface SlotsInfo {
  /** The running slot's name (a partition label), when the installer can tell. */
  readonly slot?: string;
  /** The other slot: the version installed there and whether it booted well. */
  readonly other?: { readonly version?: string; readonly state: SlotState };
}

/**
 * What writes a verified update into the inactive slot. On the appliance that is
 * systemd-sysupdate (`SysupdateInstaller`); tests give a fake. The supervisor never writes a
 * partition itself.
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
   * version's download directory just before sysupdate runs, so the transfer files need no
   * version in their path.
   */
  readonly sourceLink: string;
  readonly sysupdate?: string;
  readonly bootctl?: string;
  /** Writing a root image on a slow card takes minutes; a hung installer must still end. */
  readonly installTimeoutMs?: number;
}

interface Run {
  readonly code: number | string;
  readonly stdout: string;
  readonly stderr: string;
}

function run(file: string, args: string[], timeoutMs: number): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 4 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = (error as (Error & { code?: number | string }) | null)?.code;
      resolve({ code: error ? (code ?? 'failed') : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

const lastLine = (text: string): string => text.trim().split('\n').at(-1) ?? '';

/**
 * systemd-sysupdate as the installer: `update <version>` with the image's transfer files
 * (`/usr/lib/sysupdate.d`), which verify SHA256SUMS.gpg once more themselves and write the
 * root image and the UKI (with its boot counter) into the inactive slot. Slots come from
 * `systemd-sysupdate list` and `bootctl list` in JSON; output that cannot be read is reported
 * as unknown, never a crash.
 */
export class SysupdateInstaller implements Installer {
  readonly #o: Required<SysupdateOptions>;

  constructor(options: SysupdateOptions) {
    this.#o = {
      sysupdate: 'systemd-sysupdate',
      bootctl: 'bootctl',
      installTimeoutMs: 30 * 60_000,
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
    const version = await run(this.#o.sysupdate, ['--version'], 10_000);
    if (version.code === 'ENOENT') return `${this.#o.sysupdate} is not installed (Debian package systemd-container)`;
    return undefined;
  }

  async install(dir: string, version: string): Promise<void> {
    symlinkReplaceAtomic(dir, this.#o.sourceLink);
    const r = await run(
      this.#o.sysupdate,
      [`--definitions=${this.#o.definitions}`, 'update', version],
      this.#o.installTimeoutMs,
    );
    if (r.code !== 0) {
      throw new UpdateError(
        'ERR_UPDATE_INSTALL',
        `systemd-sysupdate update ${version} failed (${r.code}): ${lastLine(r.stderr) || lastLine(r.stdout)}`,
      );
    }
  }

  async slots(): Promise<SlotsInfo> {
    const [list, boot] = await Promise.all([
      run(this.#o.sysupdate, [`--definitions=${this.#o.definitions}`, 'list', '--json=short'], 30_000),
      run(this.#o.bootctl, ['list', '--json=short'], 30_000),
    ]);
    return slotsParse(list.code === 0 ? list.stdout : '', boot.code === 0 ? boot.stdout : '');
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
 * The other slot from `systemd-sysupdate list --json=short` (`{current, all}`: the running
 * version, and every version installed or offered by a source) and `bootctl list --json=short` (each entry's boot counter: no counter left is a
 * version that failed its tries; a counter still running is not judged yet). Anything missing or
 * of an unexpected shape is unknown.
 */
export function slotsParse(sysupdateJson: string, bootctlJson: string): SlotsInfo {
  const list = jsonOf(sysupdateJson) as Record<string, unknown> | undefined;
  if (!list || typeof list !== 'object') return { other: { state: 'unknown' } };
  // "current+pending": the running version while a newer one waits for its reboot (systemd 257+).
  const named = list.current ?? list['current+pending'];
  const current = typeof named === 'string' ? named : undefined;
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
