import { readFileSync } from 'node:fs';
import { appVersion } from '../version.ts';
import { versionValid } from './version.ts';

/** systemd's os-release; /usr/lib/os-release is the copy a read-only /usr carries. */
export const OS_RELEASE_PATHS = ['/etc/os-release', '/usr/lib/os-release'];

/**
 * The firmware version running now: `IMAGE_VERSION=` of os-release, the key systemd-sysupdate
 * itself reads as the current version (the image build writes it), so the supervisor and the
 * installer cannot disagree on what runs. Outside an image (a checkout) there is none: the
 * app's own version stands in, and `source` says so.
 */
export function runningVersionRead(paths: readonly string[] = OS_RELEASE_PATHS): {
  version: string;
  source: 'os-release' | 'app';
} {
  for (const path of paths) {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      continue;
    }
    const m = /^IMAGE_VERSION=["']?([^"'\n]*)["']?$/m.exec(text);
    if (m && versionValid(m[1] as string)) return { version: m[1] as string, source: 'os-release' };
    break;
  }
  return { version: appVersion, source: 'app' };
}

/**
 * The kernel's id of this boot: a new one after every reboot, the same across supervisor
 * restarts. Under the image's sandbox (ProcSubset=pid) /proc/sys cannot be read, so the unit
 * hands it over as MULTIHEAD_BOOT_ID=%b (systemd's boot id specifier); the file is for a
 * supervisor started by hand. Found by the image's update proof: with neither, every start
 * looked like the same boot and a finished update waited for its reboot forever.
 */
export function bootIdRead(path = '/proc/sys/kernel/random/boot_id', env: NodeJS.ProcessEnv = process.env): string {
  const given = env.MULTIHEAD_BOOT_ID?.trim().replaceAll('-', '').toLowerCase();
  if (given && /^[0-9a-f]{32}$/.test(given)) return given;
  try {
    return readFileSync(path, 'utf8').trim().replaceAll('-', '').toLowerCase();
  } catch {
    return 'unknown';
  }
}
