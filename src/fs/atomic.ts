// Crash-safe file replacement, for everything the box keeps on its data partition (desired
// config, session counter, provisioning, secrets): after a power cut at any instant the file
// is the old content or the new, never a mix or empty.
//
//   write a temp file in the same directory → fsync it → rename over the target → fsync the dir
//
// Synchronous on purpose: these are small files written rarely, and a caller that returns has
// its data on disk. The media cache writes large files asynchronously through its own
// fault-injectable file system (src/content/atomic-file.ts), with the same steps.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export interface AtomicOptions {
  /** Default 0600: what goes through here is configuration and secrets. */
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
}

const TEMP_MARK = '.tmp-';
const tempName = (file: string): string =>
  path.join(
    path.dirname(file),
    `.${path.basename(file)}${TEMP_MARK}${process.pid}-${crypto.randomBytes(4).toString('hex')}`,
  );

/** Makes a directory's entries (a rename, an unlink) durable. Some file systems refuse: then best effort. */
export function dirFsync(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'EISDIR' && code !== 'EPERM') throw e;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** Replaces `file` with `data` atomically and durably (its directory is created if missing). */
export function fileWriteAtomic(file: string, data: string | Uint8Array, options: AtomicOptions = {}): void {
  const mode = options.mode ?? 0o600;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = tempName(file);
  const fd = fs.openSync(tmp, 'wx', mode);
  try {
    const buffer = typeof data === 'string' ? Buffer.from(data) : data;
    let written = 0;
    while (written < buffer.length) written += fs.writeSync(fd, buffer, written, buffer.length - written);
    if (options.uid !== undefined) fs.fchownSync(fd, options.uid, options.gid ?? -1);
    // The umask may have narrowed the mode given to open.
    fs.fchmodSync(fd, mode);
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  try {
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  dirFsync(path.dirname(file));
}

/** Points `link` at `target`, replacing what was there in one rename. */
export function symlinkReplaceAtomic(target: string, link: string): void {
  const tmp = tempName(link);
  fs.symlinkSync(target, tmp);
  fs.renameSync(tmp, link);
  dirFsync(path.dirname(link));
}

/** Removes the temp files that writes of `file` cut short (a power cut) left beside it. Returns how many. */
export function tempsRemoveStale(file: string): number {
  const prefix = `.${path.basename(file)}${TEMP_MARK}`;
  const dir = path.dirname(file);
  let removed = 0;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw e;
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    fs.rmSync(path.join(dir, name), { force: true });
    removed++;
  }
  return removed;
}
