import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { scratchDir, writeJson } from './helpers/tmp.ts';

// `multihead diagnose` on machines without a GPU (this build machine has no /dev/dri): it must
// say so and exit 72, never crash. The real-kernel side is test/vm/cases-diagnose.ts.

const BIN = new URL('../bin/multihead', import.meta.url).pathname;

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(t: Parameters<typeof scratchDir>[0], args: string[]): Promise<Result> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MULTIHEAD_')));
  const dir = scratchDir(t);
  const child: ChildProcess = spawn(BIN, args, {
    env: { ...env, MULTIHEAD_CONFIG: writeJson(dir, 'config.json', {}), MULTIHEAD_DATA_DIR: dir },
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d) => {
    stdout += d;
  });
  child.stderr?.on('data', (d) => {
    stderr += d;
  });
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

test('without a DRM directory it says so and exits 72', async (t) => {
  const r = await run(t, ['diagnose', '/nonexistent/dri']);
  t.is(r.code, 72, r.stderr);
  t.is(r.stderr, '');
  t.regex(r.stdout, /^No DRM devices: \/nonexistent\/dri does not exist \(no GPU driver loaded/);
  t.regex(r.stdout, /virtual outputs only/);
});

test('--json gives the same finding as data, with the same exit code', async (t) => {
  const r = await run(t, ['diagnose', '--json', '/nonexistent/dri']);
  t.is(r.code, 72);
  t.like(JSON.parse(r.stdout), { driDir: '/nonexistent/dri', driPresent: false, cards: [], renderNodes: [] });
});

test('a directory with no usable card: each node is named with what is wrong, exit 72', async (t) => {
  const dir = join(scratchDir(t), 'dri');
  mkdirSync(dir);
  symlinkSync('/dev/null', join(dir, 'card0'));
  symlinkSync('/dev/null', join(dir, 'renderD128'));
  const r = await run(t, ['diagnose', dir]);
  t.is(r.code, 72, r.stdout + r.stderr);
  t.regex(r.stdout, new RegExp(`== ${dir}/card0\\n {2}cannot inspect: ${dir}/card0: not a DRM device`));
  t.regex(r.stdout, new RegExp(`== ${dir}/renderD128\\n {2}VAAPI: `));
  const empty = join(scratchDir(t), 'empty');
  mkdirSync(empty);
  const none = await run(t, ['diagnose', empty]);
  t.is(none.code, 72);
  t.regex(none.stdout, /^No DRM card nodes in .*empty: no display controller/);
});

test('diagnose takes one directory at most, and no --url', async (t) => {
  const two = await run(t, ['diagnose', '/a', '/b']);
  t.is(two.code, 64);
  t.regex(two.stderr, /unknown command "diagnose \/a \/b"/);
  const url = await run(t, ['diagnose', '--url', 'http://x']);
  t.is(url.code, 64);
  t.regex(url.stderr, /--url only applies to/);
});
