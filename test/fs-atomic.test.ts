// src/fs/atomic.ts: the one atomic writer: synchronous for the supervisor (desired config, MQTT
// session counter) and first-boot provisioning (config, secrets), asynchronous for content.
// Power cuts against it are proven on a real ext4 data partition by test/image (check e); here
// its contract, and through an injected file system the exact order of the calls that make it
// durable (a missing fsync leaves the file correct on a running machine, so only counting shows it).
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import test from 'ava';
import {
  type AsyncFs,
  dirFsync,
  fileWriteAtomic,
  installAtomic,
  type SyncFs,
  symlinkReplaceAtomic,
  tempsRemoveStale,
  writeFileAtomic,
} from '../src/fs/atomic.ts';
import { scratchDir } from './helpers/tmp.ts';

const leftovers = (dir: string): string[] => fs.readdirSync(dir).filter((n) => n.includes('.tmp-'));

test('fileWriteAtomic replaces the content whole, 0600 by default, creating the directory', (t) => {
  const dir = path.join(scratchDir(t), 'data', 'nested');
  const file = path.join(dir, 'config.json');
  fileWriteAtomic(file, '{"a":1}\n');
  t.is(fs.readFileSync(file, 'utf8'), '{"a":1}\n');
  t.is(fs.statSync(file).mode & 0o777, 0o600);
  const big = Buffer.alloc(3 * 1048576, 7);
  fileWriteAtomic(file, big, { mode: 0o644 });
  t.true(fs.readFileSync(file).equals(big));
  t.is(fs.statSync(file).mode & 0o777, 0o644);
  t.deepEqual(leftovers(dir), []);
});

test('fileWriteAtomic: the mode is exact whatever the umask', (t) => {
  const dir = scratchDir(t);
  const old = process.umask(0o077);
  try {
    fileWriteAtomic(path.join(dir, 'shared'), 'x', { mode: 0o644 });
  } finally {
    process.umask(old);
  }
  t.is(fs.statSync(path.join(dir, 'shared')).mode & 0o777, 0o644);
});

test('fileWriteAtomic that cannot rename keeps the old target and leaves no temp file', (t) => {
  const dir = scratchDir(t);
  const target = path.join(dir, 'busy');
  fs.mkdirSync(target);
  fs.writeFileSync(path.join(target, 'inside'), 'kept');
  const error = t.throws(() => fileWriteAtomic(target, 'new'));
  t.regex(String((error as NodeJS.ErrnoException).code), /EISDIR|ENOTEMPTY|EEXIST/);
  t.is(fs.readFileSync(path.join(target, 'inside'), 'utf8'), 'kept');
  t.deepEqual(leftovers(dir), []);
});

test('fileWriteAtomic names the path it could not write', (t) => {
  const dir = scratchDir(t);
  fs.writeFileSync(path.join(dir, 'file'), '');
  // A file where a directory should be: the error names it.
  const error = t.throws(() => fileWriteAtomic(path.join(dir, 'file', 'config.json'), 'x'));
  t.regex(error?.message ?? '', /file/);
});

test('tempsRemoveStale removes only the temps of that file; a missing directory is 0', (t) => {
  const dir = scratchDir(t);
  const file = path.join(dir, 'config.json');
  fileWriteAtomic(file, 'v1');
  // What a power cut between the temp's write and the rename leaves.
  fs.writeFileSync(path.join(dir, '.config.json.tmp-123-abcd'), 'half');
  fs.writeFileSync(path.join(dir, '.config.json.tmp-124-beef'), '');
  fs.writeFileSync(path.join(dir, '.other.json.tmp-1-aaaa'), 'not ours');
  t.is(tempsRemoveStale(file), 2);
  t.deepEqual(fs.readdirSync(dir).sort(), ['.other.json.tmp-1-aaaa', 'config.json']);
  t.is(fs.readFileSync(file, 'utf8'), 'v1');
  t.is(tempsRemoveStale(path.join(dir, 'missing', 'x.json')), 0);
});

test('symlinkReplaceAtomic swaps a link in one step; dirFsync accepts a directory', (t) => {
  const dir = scratchDir(t);
  const link = path.join(dir, 'localtime');
  symlinkReplaceAtomic('/usr/share/zoneinfo/UTC', link);
  t.is(fs.readlinkSync(link), '/usr/share/zoneinfo/UTC');
  symlinkReplaceAtomic('/usr/share/zoneinfo/Europe/Berlin', link);
  t.is(fs.readlinkSync(link), '/usr/share/zoneinfo/Europe/Berlin');
  t.deepEqual(leftovers(dir), []);
  t.notThrows(() => dirFsync(dir));
});

/** node:fs, recording each durable step: which call, and on the file or the directory. */
function recordingSyncFs(dir: string, file: string): { io: SyncFs; calls: string[] } {
  const calls: string[] = [];
  const what = new Map<number, string>();
  const name = (p: string): string => (p === dir ? 'dir' : p === file ? 'file' : 'temp');
  const io: SyncFs = {
    ...fs,
    mkdirSync: fs.mkdirSync,
    openSync: ((p: string, flags: string, mode?: number) => {
      const fd = fs.openSync(p, flags, mode);
      what.set(fd, name(p));
      calls.push(`open ${name(p)}`);
      return fd;
    }) as SyncFs['openSync'],
    writeSync: ((fd: number, buffer: Uint8Array, offset: number, length: number) => {
      calls.push(`write ${what.get(fd)}`);
      return fs.writeSync(fd, buffer, offset, length);
    }) as SyncFs['writeSync'],
    fsyncSync: (fd: number) => {
      calls.push(`fsync ${what.get(fd)}`);
      fs.fsyncSync(fd);
    },
    renameSync: (from, to) => {
      calls.push(`rename ${name(String(from))} ${name(String(to))}`);
      fs.renameSync(from, to);
    },
    closeSync: (fd: number) => {
      calls.push(`close ${what.get(fd)}`);
      fs.closeSync(fd);
    },
  };
  return { io, calls };
}

/** What an atomic write must do, in this order: the temp file durable before it replaces the file, then the rename. */
const WRITE_STEPS = [
  'open temp',
  'write temp',
  'fsync temp',
  'close temp',
  'rename temp file',
  'open dir',
  'fsync dir',
  'close dir',
];

test('fileWriteAtomic: open temp, write, fsync temp, rename over the file, fsync the directory, in that order', (t) => {
  const dir = scratchDir(t);
  const file = path.join(dir, 'config.json');
  const { io, calls } = recordingSyncFs(dir, file);
  fileWriteAtomic(file, '{"a":1}\n', { fs: io });
  t.is(fs.readFileSync(file, 'utf8'), '{"a":1}\n');
  t.deepEqual(calls, WRITE_STEPS);
});

/** fs/promises, recording the same steps for the asynchronous writer. */
function recordingAsyncFs(dir: string, file: string): { io: AsyncFs; calls: string[] } {
  const calls: string[] = [];
  const name = (p: string): string => (p === dir ? 'dir' : p === file ? 'file' : 'temp');
  const io: AsyncFs = {
    async open(p, flags, mode) {
      const handle = await fsp.open(p, flags, mode);
      calls.push(`open ${name(p)}`);
      return {
        write: async (data, offset, length, position) => {
          calls.push(`write ${name(p)}`);
          return handle.write(data, offset, length, position);
        },
        sync: async () => {
          calls.push(`fsync ${name(p)}`);
          await handle.sync();
        },
        close: async () => {
          calls.push(`close ${name(p)}`);
          await handle.close();
        },
      };
    },
    async rename(from, to) {
      calls.push(`rename ${name(from)} ${name(to)}`);
      await fsp.rename(from, to);
    },
    unlink: (p) => fsp.unlink(p),
  };
  return { io, calls };
}

test('writeFileAtomic (async, content): the same steps in the same order', async (t) => {
  const dir = scratchDir(t);
  const file = path.join(dir, 'index.json');
  const { io, calls } = recordingAsyncFs(dir, file);
  await writeFileAtomic(io, file, 'x'.repeat(10));
  t.is(fs.readFileSync(file, 'utf8'), 'x'.repeat(10));
  t.deepEqual(calls, WRITE_STEPS);
  t.deepEqual(leftovers(dir), []);
});

test('installAtomic fsyncs the directory it moved into', async (t) => {
  const dir = scratchDir(t);
  const from = path.join(dir, 'partial');
  const file = path.join(dir, 'media');
  fs.writeFileSync(from, 'm');
  const { io, calls } = recordingAsyncFs(dir, file);
  await installAtomic(io, from, file);
  t.deepEqual(calls, ['rename temp file', 'open dir', 'fsync dir', 'close dir']);
});

test('writeFileAtomic (async) that cannot write leaves the old file and no temp', async (t) => {
  const dir = scratchDir(t);
  const file = path.join(dir, 'index.json');
  fs.writeFileSync(file, 'old');
  const { io } = recordingAsyncFs(dir, file);
  const full: AsyncFs = {
    ...io,
    open: async (p, flags, mode) => {
      const handle = await io.open(p, flags, mode);
      if (p === dir) return handle;
      return { ...handle, write: async () => ({ bytesWritten: 0 }) };
    },
  };
  await t.throwsAsync(writeFileAtomic(full, file, 'new'), { message: /no progress/ });
  t.is(fs.readFileSync(file, 'utf8'), 'old');
  t.deepEqual(leftovers(dir), []);
});
