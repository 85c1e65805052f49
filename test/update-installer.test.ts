import { existsSync, mkdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { UpdateError } from '../src/update/errors.ts';
import { INSTALL_REQUEST_FILE, INSTALL_RESULT_FILE, SysupdateInstaller, slotsParse } from '../src/update/installer.ts';
import { bootIdRead, runningVersionRead } from '../src/update/running-version.ts';
import { appVersion } from '../src/version.ts';
import { scratchDir } from './helpers/tmp.ts';

/**
 * The image's side stood in for: a transfer file, the path unit's file, the run directory the
 * request goes to, root's answer directory, and a fake root that answers each request the way
 * systemd/update-install does (`answer` decides; undefined: never answers).
 */
function box(t: ExecutionContext, answer?: (request: { id: string; version: string }) => object | undefined) {
  const dir = scratchDir(t);
  const definitions = join(dir, 'sysupdate.d');
  const runDir = join(dir, 'run-multihead');
  const resultDir = join(dir, 'run-multihead-update');
  const pathUnit = join(dir, 'multihead-update-install.path');
  for (const d of [definitions, runDir, resultDir]) mkdirSync(d);
  writeFileSync(join(definitions, '50-root.transfer'), '[Transfer]\n');
  writeFileSync(pathUnit, '[Path]\n');
  const requests: Array<{ id: string; version: string }> = [];
  const request = join(runDir, INSTALL_REQUEST_FILE);
  const root = setInterval(() => {
    if (!existsSync(request)) return;
    const body = JSON.parse(readFileSync(request, 'utf8')) as { id: string; version: string };
    rmSync(request);
    requests.push(body);
    const reply = answer?.(body);
    if (reply) writeFileSync(join(resultDir, INSTALL_RESULT_FILE), JSON.stringify({ id: body.id, ...reply }));
  }, 20);
  t.teardown(() => clearInterval(root));
  const installer = (extra: { installTimeoutMs?: number } = {}) =>
    new SysupdateInstaller({
      definitions,
      sourceLink: join(dir, 'updates', 'current'),
      requestDir: runDir,
      resultDir,
      pathUnit,
      pollMs: 20,
      ...extra,
    });
  return { dir, definitions, runDir, resultDir, pathUnit, requests, installer };
}

test('installer: asks root to install the version, its source link pointing at the verified directory', async (t) => {
  const b = box(t, () => ({ ok: true, exitCode: 0, message: 'done' }));
  const dir = join(b.dir, 'updates', '0.2.0');
  mkdirSync(dir, { recursive: true });
  // An answer to an earlier request is not this one's.
  writeFileSync(join(b.resultDir, INSTALL_RESULT_FILE), JSON.stringify({ id: 'old', ok: false, exitCode: 1 }));
  const installer = b.installer();
  t.is(await installer.unsupported(), undefined);
  await installer.install(dir, '0.2.0');
  t.is(readlinkSync(join(b.dir, 'updates', 'current')), dir);
  t.is(b.requests.length, 1);
  t.is(b.requests[0]?.version, '0.2.0');
  t.regex(b.requests[0]?.id ?? '', /^[0-9a-f-]{36}$/);
});

test("installer: a failed install is ERR_UPDATE_INSTALL with root's last words; no answer at all ends too", async (t) => {
  const b = box(t, ({ version }) =>
    version === '0.2.0' ? { ok: false, exitCode: 1, message: 'Failed to acquire partition: No space left' } : undefined,
  );
  const data = join(b.dir, 'updates', '0.2.0');
  mkdirSync(data, { recursive: true });
  const error = await t.throwsAsync(b.installer().install(data, '0.2.0'), { instanceOf: UpdateError });
  t.is(error?.code, 'ERR_UPDATE_INSTALL');
  t.regex(error?.message ?? '', /update 0\.2\.0 failed \(1\): Failed to acquire partition: No space left/);
  // Root never answers this one (only the old answer, of another id, is there).
  const silent = await t.throwsAsync(b.installer({ installTimeoutMs: 200 }).install(data, '0.3.0'), {
    instanceOf: UpdateError,
  });
  t.is(silent?.code, 'ERR_UPDATE_INSTALL');
  t.regex(silent?.message ?? '', /no answer to the install request for 0\.3\.0 .* within 0 s/);
});

test('installer: no transfer files, no root unit or no run directory is said plainly', async (t) => {
  const empty = scratchDir(t);
  const none = new SysupdateInstaller({ definitions: empty, sourceLink: join(empty, 'current') });
  t.regex((await none.unsupported()) ?? '', /no update transfer files in .*: this is not an A\/B appliance image/);
  const b = box(t);
  const noUnit = new SysupdateInstaller({
    definitions: b.definitions,
    sourceLink: join(b.dir, 'current'),
    requestDir: b.runDir,
    pathUnit: join(b.dir, 'nowhere.path'),
  });
  t.regex((await noUnit.unsupported()) ?? '', /nowhere\.path is missing: nothing in this image would install/);
  const noRun = new SysupdateInstaller({
    definitions: b.definitions,
    sourceLink: join(b.dir, 'current'),
    requestDir: join(b.dir, 'no-run'),
    pathUnit: b.pathUnit,
  });
  t.regex((await noRun.unsupported()) ?? '', /no run directory .*no-run/);
});

test('installer: slots from the sysupdate list and bootctl list root wrote, unknown where they do not say', async (t) => {
  const list = JSON.stringify({ current: '0.2.0', all: ['0.3.0', '0.2.0'], appstreamUrls: [] });
  const bootctl = JSON.stringify([
    { id: 'multihead_0.3.0+0-3.efi', version: '0.3.0', triesLeft: 0, triesDone: 3 },
    { id: 'multihead_0.2.0.efi', version: '0.2.0' },
  ]);
  const b = box(t);
  t.deepEqual(await b.installer().slots(), { other: { state: 'unknown' } });
  writeFileSync(join(b.resultDir, 'slots-sysupdate.json'), `${list}\n`);
  writeFileSync(join(b.resultDir, 'slots-bootctl.json'), `${bootctl}\n`);
  t.deepEqual(await b.installer().slots(), { other: { version: '0.3.0', state: 'bad' } });
  // The running slot, from root's slots-root.json; a name that is not a slot's is left out.
  writeFileSync(
    join(b.resultDir, 'slots-root.json'),
    '{"slot":"B","partition":"/dev/vda3","label":"multihead_0.2.0"}\n',
  );
  t.deepEqual(await b.installer().slots(), { slot: 'B', other: { version: '0.3.0', state: 'bad' } });
  t.deepEqual(slotsParse(list, bootctl, '{"slot":"../etc"}'), { other: { version: '0.3.0', state: 'bad' } });
  t.deepEqual(slotsParse(list, bootctl, 'null'), { other: { version: '0.3.0', state: 'bad' } });
  // After a rollback sysupdate calls the newest installed version (the bad one) current; the
  // version that runs is the one root booted from (what the VM's ota-rollback saw).
  const afterRollback = JSON.stringify({ current: '0.3.0', all: ['0.3.0', '0.2.0'] });
  t.deepEqual(slotsParse(afterRollback, bootctl, '{"slot":"B","partition":"/dev/vda3","label":"multihead_0.2.0"}'), {
    slot: 'B',
    other: { version: '0.3.0', state: 'bad' },
  });
  // Shapes the parser must survive: nothing, garbage, no other version, a counter still running, no counter.
  t.deepEqual(slotsParse('', ''), { other: { state: 'unknown' } });
  t.deepEqual(slotsParse('null', 'null'), { other: { state: 'unknown' } });
  t.deepEqual(slotsParse('{"current": 7}', '[]'), { other: { state: 'unknown' } });
  t.deepEqual(slotsParse('[1, 2]', 'null'), { other: { state: 'unknown' } });
  t.deepEqual(slotsParse('{"current":"0.2.0","all":["0.2.0"]}', ''), { other: { state: 'empty' } });
  t.deepEqual(slotsParse('{"current+pending":"0.2.0","all":["0.2.0","0.3.0"]}', ''), {
    other: { version: '0.3.0', state: 'unknown' },
  });
  t.deepEqual(slotsParse(list, 'not json'), { other: { version: '0.3.0', state: 'unknown' } });
  t.deepEqual(slotsParse(list, JSON.stringify([{ version: '0.3.0', triesLeft: 2 }])), {
    other: { version: '0.3.0', state: 'unknown' },
  });
  t.deepEqual(slotsParse(list, JSON.stringify([{ version: '0.3.0' }, null, 5])), {
    other: { version: '0.3.0', state: 'good' },
  });
});

test('running version: IMAGE_VERSION of os-release, else the app version', (t) => {
  const dir = scratchDir(t);
  const osRelease = join(dir, 'os-release');
  writeFileSync(osRelease, 'ID=debian\nIMAGE_ID=multihead\nIMAGE_VERSION="2026.12.1"\n');
  t.deepEqual(runningVersionRead([osRelease]), { version: '2026.12.1', source: 'os-release' });
  writeFileSync(osRelease, 'ID=debian\n');
  t.deepEqual(runningVersionRead([osRelease, join(dir, 'none')]), { version: appVersion, source: 'app' });
});

test('boot id: from the unit (MULTIHEAD_BOOT_ID=%b) when /proc/sys is hidden, else the kernel file; the same form either way', (t) => {
  const dir = scratchDir(t);
  const hidden = join(dir, 'no-such-boot_id');
  // What systemd puts for %b (no dashes) and what the kernel file holds (with them) name the same boot.
  t.is(
    bootIdRead(hidden, { MULTIHEAD_BOOT_ID: '2f0c6a1e9b2d4c7e8a1b2c3d4e5f6a7b' }),
    '2f0c6a1e9b2d4c7e8a1b2c3d4e5f6a7b',
  );
  const file = join(dir, 'boot_id');
  writeFileSync(file, '2f0c6a1e-9b2d-4c7e-8a1b-2c3d4e5f6a7b\n');
  t.is(bootIdRead(file, {}), '2f0c6a1e9b2d4c7e8a1b2c3d4e5f6a7b');
  t.is(bootIdRead(hidden, { MULTIHEAD_BOOT_ID: '%b' }), 'unknown', 'an unexpanded specifier is not an id');
  // This machine's own: two reads in one boot agree, and it is an id.
  t.regex(bootIdRead(), /^[0-9a-f]{32}$/);
  t.is(bootIdRead(), bootIdRead());
});
