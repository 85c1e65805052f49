import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import type { FileHandleLike, FileSystem } from './fs.ts';

/** Writes every byte, looping over short writes (a filling disk returns those before ENOSPC). */
export async function writeAll(handle: FileHandleLike, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await handle.write(data, done, data.length - done, null);
    if (bytesWritten <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
    done += bytesWritten;
  }
}

/** Makes a rename or a new file in `dir` survive power loss. */
export async function fsyncDir(fs: FileSystem, dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Replaces `path` so a reader (or a reboot) sees the old file or the new one, never half of
 * one: write a temporary file beside it, fsync it, rename it over, fsync the directory.
 */
export async function writeFileAtomic(fs: FileSystem, path: string, data: string | Uint8Array): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  try {
    const handle = await fs.open(tmp, 'w', 0o644);
    try {
      await writeAll(handle, bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, path);
  } catch (error) {
    await fs.unlink(tmp).catch(() => {});
    throw error;
  }
  await fsyncDir(fs, dirname(path));
}

/** Moves a finished file into place (same file system) and makes the move durable. */
export async function installAtomic(fs: FileSystem, from: string, to: string): Promise<void> {
  await fs.rename(from, to);
  await fsyncDir(fs, dirname(to));
  if (dirname(from) !== dirname(to)) await fsyncDir(fs, dirname(from));
}
