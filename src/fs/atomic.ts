// Crash-safe file replacement, for everything the box keeps on its data partition (desired
// config, session counter, provisioning, secrets): after a power cut at any instant the file
// is the old content or the new, never a mix or empty.
//
//   write a temp file in the same directory → fsync it → rename over the target → fsync the dir
//
// The one atomic writer of the supervisor. `fileWriteAtomic` is synchronous on purpose: small
// files written rarely, and a caller that returns has its data on disk. The content code
// (media index, schedules) uses `writeFileAtomic`, the same steps asynchronously through its
// fault-injectable file system. Both take the file system as a parameter, so tests can count
// the calls and prove that no step (the file fsync, the directory fsync) is missing.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/** The synchronous calls `fileWriteAtomic` makes; node:fs by default. */
export type SyncFs = Pick<
  typeof fs,
  | 'mkdirSync'
  | 'openSync'
  | 'writeSync'
  | 'fchownSync'
  | 'fchmodSync'
  | 'fsyncSync'
  | 'closeSync'
  | 'renameSync'
  | 'rmSync'
>;

export interface AtomicOptions {
  /** Default 0600: what goes through here is configuration and secrets. */
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
  /** Tests inject one to count or fail calls. */
  readonly fs?: SyncFs;
}

const TEMP_MARK = '.tmp-';
const tempName = (file: string): string =>
  path.join(
    path.dirname(file),
    // Ends in .tmp too: the media cache sweeps `*.tmp` from its directories at start.
    `.${path.basename(file)}${TEMP_MARK}${process.pid}-${crypto.randomBytes(4).toString('hex')}.tmp`,
  );

/** Makes a directory's entries (a rename, an unlink) durable. Some file systems refuse: then best effort. */
export function dirFsync(dir: string, io: SyncFs = fs): void {
  let fd: number | undefined;
  try {
    fd = io.openSync(dir, 'r');
    io.fsyncSync(fd);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'EISDIR' && code !== 'EPERM') throw e;
  } finally {
    if (fd !== undefined) io.closeSync(fd);
  }
}

/** Replaces `file` with `data` atomically and durably (its directory is created if missing). */
export function fileWriteAtomic(file: string, data: string | Uint8Array, options: AtomicOptions = {}): void {
  const mode = options.mode ?? 0o600;
  const io = options.fs ?? fs;
  io.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = tempName(file);
  const fd = io.openSync(tmp, 'wx', mode);
  try {
    const buffer = typeof data === 'string' ? Buffer.from(data) : data;
    let written = 0;
    while (written < buffer.length) written += io.writeSync(fd, buffer, written, buffer.length - written);
    if (options.uid !== undefined) io.fchownSync(fd, options.uid, options.gid ?? -1);
    // The umask may have narrowed the mode given to open.
    io.fchmodSync(fd, mode);
    io.fsyncSync(fd);
  } catch (e) {
    io.closeSync(fd);
    io.rmSync(tmp, { force: true });
    throw e;
  }
  io.closeSync(fd);
  try {
    io.renameSync(tmp, file);
  } catch (e) {
    io.rmSync(tmp, { force: true });
    throw e;
  }
  dirFsync(path.dirname(file), io);
}

/** An open file as the asynchronous writer uses it (a `fs/promises` FileHandle, or a test's). */
export interface AsyncFileHandle {
  write(data: Uint8Array, offset: number, length: number, position: null): Promise<{ bytesWritten: number }>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

/** The asynchronous calls `writeFileAtomic` and `installAtomic` make (`fs/promises` has them). */
export interface AsyncFs {
  open(path: string, flags: string, mode?: number): Promise<AsyncFileHandle>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
}

/** Writes every byte, looping over short writes (a filling disk returns those before ENOSPC). */
export async function writeAll(handle: AsyncFileHandle, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await handle.write(data, done, data.length - done, null);
    if (bytesWritten <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
    done += bytesWritten;
  }
}

/** Makes a rename or a new file in `dir` survive power loss (asynchronous `dirFsync`). */
export async function fsyncDir(io: AsyncFs, dir: string): Promise<void> {
  const handle = await io.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * `fileWriteAtomic`'s steps, asynchronously through `io`, for content (media index, schedules):
 * not secrets, so 0644 unless `mode` says otherwise. The directory must exist.
 */
export async function writeFileAtomic(
  io: AsyncFs,
  file: string,
  data: string | Uint8Array,
  options: { mode?: number } = {},
): Promise<void> {
  const tmp = tempName(file);
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  try {
    const handle = await io.open(tmp, 'wx', options.mode ?? 0o644);
    try {
      await writeAll(handle, bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await io.rename(tmp, file);
  } catch (error) {
    await io.unlink(tmp).catch(() => {});
    throw error;
  }
  await fsyncDir(io, path.dirname(file));
}

/** Moves a finished file into place (same file system) and makes the move durable. */
export async function installAtomic(io: AsyncFs, from: string, to: string): Promise<void> {
  await io.rename(from, to);
  await fsyncDir(io, path.dirname(to));
  if (path.dirname(from) !== path.dirname(to)) await fsyncDir(io, path.dirname(from));
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
