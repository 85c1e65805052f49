import { chmodSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { UpdateError } from '../src/update/errors.ts';
import { SysupdateInstaller, slotsParse } from '../src/update/installer.ts';
import { runningVersionRead } from '../src/update/running-version.ts';
import { appVersion } from '../src/version.ts';
import { scratchDir } from './helpers/tmp.ts';

/**
 * Stand-ins for systemd-sysupdate and bootctl (which need an A/B disk and root): shell scripts
 * that log their arguments and answer what `answers` says. The installer is the unit under test.
 */
function stubs(t: ExecutionContext, answers: { update?: string; list?: string; bootctl?: string }) {
  const dir = scratchDir(t);
  const log = join(dir, 'calls.log');
  const script = (name: string, body: string): string => {
    const path = join(dir, name);
    writeFileSync(path, `#!/bin/sh\necho "${name} $*" >> ${log}\n${body}\n`);
    chmodSync(path, 0o755);
    return path;
  };
  const definitions = join(dir, 'sysupdate.d');
  mkdirSync(definitions);
  writeFileSync(join(definitions, '50-root.transfer'), '[Transfer]\n');
  const sysupdate = script(
    'sysupdate',
    `case "$2" in\n  update) ${answers.update ?? 'exit 0'} ;;\n  list) ${answers.list ?? 'exit 1'} ;;\n  *) echo 257 ;;\nesac`,
  );
  const bootctl = script('bootctl', answers.bootctl ?? 'exit 1');
  return {
    dir,
    definitions,
    sysupdate,
    bootctl,
    calls: () => readFileSync(log, 'utf8').trim().split('\n'),
  };
}

test('installer: update runs systemd-sysupdate for the version, its source link pointing at the verified directory', async (t) => {
  const s = stubs(t, {});
  const data = scratchDir(t);
  const dir = join(data, 'updates', '0.2.0');
  mkdirSync(dir, { recursive: true });
  const link = join(data, 'updates', 'current');
  const installer = new SysupdateInstaller({ definitions: s.definitions, sourceLink: link, sysupdate: s.sysupdate });
  t.is(await installer.unsupported(), undefined);
  await installer.install(dir, '0.2.0');
  t.is(readlinkSync(link), dir);
  t.deepEqual(s.calls().slice(-1), [`sysupdate --definitions=${s.definitions} update 0.2.0`]);
});

test('installer: a failing sysupdate is ERR_UPDATE_INSTALL with its last words', async (t) => {
  const s = stubs(t, { update: 'echo "Failed to acquire partition: No space left" >&2; exit 1' });
  const data = scratchDir(t);
  const installer = new SysupdateInstaller({
    definitions: s.definitions,
    sourceLink: join(data, 'current'),
    sysupdate: s.sysupdate,
  });
  const error = await t.throwsAsync(installer.install(data, '0.2.0'), { instanceOf: UpdateError });
  t.is(error?.code, 'ERR_UPDATE_INSTALL');
  t.regex(error?.message ?? '', /update 0\.2\.0 failed \(1\): Failed to acquire partition: No space left/);
});

test('installer: no transfer files or no sysupdate is said plainly', async (t) => {
  const empty = scratchDir(t);
  const none = new SysupdateInstaller({ definitions: empty, sourceLink: join(empty, 'current') });
  t.regex((await none.unsupported()) ?? '', /no update transfer files in .*: this is not an A\/B appliance image/);
  const s = stubs(t, {});
  const missing = new SysupdateInstaller({
    definitions: s.definitions,
    sourceLink: join(s.dir, 'current'),
    sysupdate: join(s.dir, 'nowhere'),
  });
  t.regex((await missing.unsupported()) ?? '', /is not installed \(Debian package systemd-container\)/);
});

test('installer: slots from sysupdate list and bootctl list, unknown where they do not say', async (t) => {
  const list = JSON.stringify({ current: '0.2.0', all: ['0.3.0', '0.2.0'], appstreamUrls: [] });
  const bootctl = JSON.stringify([
    { id: 'multihead_0.3.0+0-3.efi', version: '0.3.0', triesLeft: 0, triesDone: 3 },
    { id: 'multihead_0.2.0.efi', version: '0.2.0' },
  ]);
  const s = stubs(t, { list: `echo '${list}'`, bootctl: `echo '${bootctl}'` });
  const installer = new SysupdateInstaller({
    definitions: s.definitions,
    sourceLink: join(s.dir, 'current'),
    sysupdate: s.sysupdate,
    bootctl: s.bootctl,
  });
  t.deepEqual(await installer.slots(), { other: { version: '0.3.0', state: 'bad' } });
  // Shapes the parser must survive: nothing, garbage, no other version, a counter still running, no counter.
  t.deepEqual(slotsParse('', ''), { other: { state: 'unknown' } });
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
