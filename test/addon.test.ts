import { existsSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { loadAddon } from '../src/native/addon.ts';
import { scratchDir } from './helpers/tmp.ts';

const addon = loadAddon();

test('the addon loads and reports the version of native/Cargo.toml', (t) => {
  const cargo = readFileSync(new URL('../native/Cargo.toml', import.meta.url), 'utf8');
  const version = /^version = "([^"]+)"/m.exec(cargo)?.[1];
  t.truthy(version);
  t.is(addon.version(), version as string);
});

test('listDrmDevices() returns an array of well-formed entries on this machine', (t) => {
  const devices = addon.listDrmDevices();
  t.true(Array.isArray(devices));
  for (const device of devices) {
    t.regex(device.path, /^\/dev\/dri\/card\d+$/);
    t.is(typeof device.hasKms, 'boolean');
    t.is(typeof device.atomic, 'boolean');
  }
});

test('a directory without cards gives [] and no error', (t) => {
  t.deepEqual(addon.listDrmDevices('/nonexistent/dri'), []);
  t.deepEqual(addon.listDrmDevices(scratchDir(t)), []);
});

test('nodes that are not DRM devices are listed with a reason, in card order', (t) => {
  const dir = scratchDir(t);
  symlinkSync('/dev/null', join(dir, 'card10'));
  symlinkSync('/dev/null', join(dir, 'card2'));
  symlinkSync('/dev/null', join(dir, 'renderD128'));
  writeFileSync(join(dir, 'card3'), '');
  const devices = addon.listDrmDevices(dir);
  t.deepEqual(
    devices.map((d) => d.path),
    [join(dir, 'card2'), join(dir, 'card3'), join(dir, 'card10')],
  );
  const first = devices[0];
  t.is(first?.error, `${join(dir, 'card2')}: not a DRM device`);
  t.false(first?.hasKms);
  t.is(first?.driver, undefined);
  t.regex(devices[1]?.error ?? '', /card3: (not a DRM device|DRM version query failed)/);
});

test('an unreadable node is reported, not thrown', (t) => {
  const dir = scratchDir(t);
  symlinkSync(join(dir, 'missing-target'), join(dir, 'card0'));
  const [device] = addon.listDrmDevices(dir);
  t.regex(device?.error ?? '', /card0: cannot open: No such file or directory/);
});

const fdCount = (): number => readdirSync('/proc/self/fd').length;

test('KmsDevice.open refuses what is not a KMS card with a distinct code, and leaks no fd', (t) => {
  const before = fdCount();
  const noCard = addon.listDrmDevices().length === 0;
  if (noCard) {
    const e = t.throws(() => addon.KmsDevice.open('auto'));
    t.regex(e?.message ?? '', /^ERR_KMS_NO_DEVICE: no KMS device: no \/dev\/dri\/card\* nodes/);
  }
  const missing = t.throws(() => addon.KmsDevice.open('/nonexistent/card0'));
  t.regex(missing?.message ?? '', /^ERR_KMS_OPEN: \/nonexistent\/card0: cannot open: No such file or directory/);
  const notDrm = t.throws(() => addon.KmsDevice.open('/dev/null'));
  t.regex(notDrm?.message ?? '', /^ERR_KMS_OPEN: \/dev\/null: cannot open: /);
  t.is(fdCount(), before);
});

test('createUdmabuf explains itself where /dev/udmabuf is missing', (t) => {
  if (existsSync('/dev/udmabuf')) {
    const fd = addon.createUdmabuf(new Uint8Array(4096));
    t.true(fd > 2);
    addon.closeFd(fd);
    return;
  }
  const e = t.throws(() => addon.createUdmabuf(new Uint8Array(16)));
  t.regex(e?.message ?? '', /^ERR_KMS_BAD_BUFFER: bad buffer: udmabuf: .*\/dev\/udmabuf/);
});
