// Crash-safe file replacement for the data partition: after a power cut at any instant the
// file is either the old content or the new, never a mix or empty.
//
//   write a temp file in the same directory → fsync it → rename over the target → fsync the dir
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export interface AtomicOptions {
  /** Default 0600: what goes through here is configuration and secrets. */
  mode?: number;
  uid?: number;
  gid?: number;
}

const tempName = (file: string): string =>
  path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);

/** Makes a directory's entries (a rename, an unlink) durable. Some file systems refuse: then best effort. */
export function fsyncDir(dir: string): void {
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

export function writeFileAtomic(file: string, data: string | Uint8Array, options: AtomicOptions = {}): void {
  const mode = options.mode ?? 0o600;
  const tmp = tempName(file);
  const fd = fs.openSync(tmp, 'wx', mode);
  try {
    const buffer = typeof data === 'string' ? Buffer.from(data) : data;
    let written = 0;
    while (written < buffer.length) written += fs.writeSync(fd, buffer, written, buffer.length - written);
    if (options.uid !== undefined) fs.fchownSync(fd, options.uid, options.gid ?? -1);
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
  fsyncDir(path.dirname(file));
}

/** Points `link` at `target`, replacing what was there in one rename. */
export function symlinkAtomic(target: string, link: string): void {
  const tmp = tempName(link);
  fs.symlinkSync(target, tmp);
  fs.renameSync(tmp, link);
  fsyncDir(path.dirname(link));
}

/** Removes temp files an interrupted writeFileAtomic left next to `file`. Returns how many. */
export function removeStaleTemps(file: string): number {
  const prefix = `.${path.basename(file)}.tmp-`;
  const dir = path.dirname(file);
  let removed = 0;
  for (const name of fs.readdirSync(dir)) {
    if (!name.startsWith(prefix)) continue;
    fs.rmSync(path.join(dir, name), { force: true });
    removed++;
  }
  return removed;
}
