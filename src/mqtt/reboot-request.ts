// The supervisor runs without capabilities, logind or D-Bus: it cannot reboot the box. It asks
// root instead, by writing a request file into its systemd RuntimeDirectory (/run/multihead),
// which systemd/multihead-reboot.path watches; multihead-reboot.service then reboots.
import fs from 'node:fs';
import path from 'node:path';
import { fileWriteAtomic } from '../fs/atomic.ts';
import { CommandError } from '../supervisor/commands.ts';

/** The name multihead-reboot.path watches for in the run directory. */
export const REBOOT_REQUEST_FILE = 'reboot-request';
/** multihead.service's RuntimeDirectory=multihead, for a process systemd did not start. */
const RUN_DIR_DEFAULT = '/run/multihead';

/** What a request says (the reboot service copies it into the journal). */
export interface RebootRequest {
  readonly requestedAt: string;
  readonly transport: string;
  readonly from?: string;
}

/**
 * The run directory: systemd passes RuntimeDirectory= as RUNTIME_DIRECTORY (several are
 * ':'-separated; the unit has one). Tests point it elsewhere the same way.
 */
export function runDirFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  return env.RUNTIME_DIRECTORY?.split(':')[0] || RUN_DIR_DEFAULT;
}

/**
 * Writes `<runDir>/reboot-request` atomically (a watcher never sees half a file) and returns
 * its path. The directory must already exist: systemd creates it for the service, and a
 * request written where no path unit watches would be a reboot promised and never done.
 * Throws ERR_REBOOT_UNAVAILABLE naming the directory and the reason.
 */
export function rebootRequestWrite(runDir: string, request: RebootRequest): string {
  const file = path.join(runDir, REBOOT_REQUEST_FILE);
  const unavailable = (why: string): CommandError =>
    new CommandError(
      'ERR_REBOOT_UNAVAILABLE',
      `cannot request a reboot: ${why}; the run directory ${runDir} (systemd RuntimeDirectory=multihead, watched by multihead-reboot.path) must exist and be writable`,
    );
  let isDir: boolean;
  try {
    isDir = fs.statSync(runDir).isDirectory();
  } catch (error) {
    throw unavailable(`${runDir}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  if (!isDir) throw unavailable(`${runDir} is not a directory`);
  try {
    fileWriteAtomic(file, `${JSON.stringify(request)}\n`, { mode: 0o600 });
  } catch (error) {
    throw unavailable(
      `${file} could not be written (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`,
    );
  }
  return file;
}
