// src/fs/atomic.ts: the one synchronous atomic write the supervisor (desired config, MQTT
// session counter) and first-boot provisioning (config, secrets) share. Power cuts against it
// are proven on a real ext4 data partition by test/image (check e); here its contract.
import fs from 'node:fs';
import path from 'node:path';
import test from 'ava';
import { dirFsync, fileWriteAtomic, symlinkReplaceAtomic, tempsRemoveStale } from '../src/fs/atomic.ts';
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
