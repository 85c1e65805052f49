import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import test from 'ava';
import { schemaMarkdown } from '../src/config/describe.ts';
import { scratchDir, writeJson } from './helpers/tmp.ts';

const BIN = new URL('../bin/multihead', import.meta.url).pathname;
const APP_VERSION = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version as string;

/** The environment the CLI sees: none of the caller's MULTIHEAD_* and no /etc config. */
function cleanEnv(t: Parameters<typeof scratchDir>[0], extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MULTIHEAD_')));
  const dir = scratchDir(t);
  return { ...env, MULTIHEAD_CONFIG: writeJson(dir, 'config.json', {}), MULTIHEAD_DATA_DIR: dir, ...extra };
}

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function collect(child: ChildProcess): Promise<Result> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d) => {
    stdout += d;
  });
  child.stderr?.on('data', (d) => {
    stderr += d;
  });
  return new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
}

function run(args: string[], env: NodeJS.ProcessEnv): Promise<Result> {
  return collect(spawn(BIN, args, { env }));
}

test('--version prints the app and addon versions', async (t) => {
  const r = await run(['--version'], cleanEnv(t));
  t.is(r.code, 0);
  t.regex(r.stdout, new RegExp(`^multihead ${APP_VERSION} \\(native addon \\d+\\.\\d+\\.\\d+, Node\\.js v24\\.`));
});

test('--help prints usage and exits 0', async (t) => {
  const r = await run(['--help'], cleanEnv(t));
  t.is(r.code, 0);
  t.regex(r.stdout, /^Usage: multihead/);
});

for (const args of [
  ['--bogus'],
  ['frobnicate'],
  ['config'],
  ['config', 'check'],
  ['config', 'schema', '--format', 'yaml'],
  ['run', 'extra'],
  ['--format', 'json'],
]) {
  test(`usage error exits 64: ${args.join(' ')}`, async (t) => {
    const r = await run(args, cleanEnv(t));
    t.is(r.code, 64);
    t.regex(r.stderr, /^multihead: .+\n\nUsage: multihead/);
    t.is(r.stdout, '');
  });
}

test('config check: a good file exits 0, a bad one 78 with one line naming key, value and rule', async (t) => {
  const dir = scratchDir(t);
  const good = writeJson(dir, 'good.json', {
    device: { name: 'Foyer' },
    outputs: [{ connector: 'HDMI-A-1', mode: 'preferred' }],
  });
  const bad = writeJson(dir, 'bad.json', { http: { port: 99999 } });
  const ok = await run(['config', 'check', good], cleanEnv(t));
  t.is(ok.code, 0);
  t.is(ok.stdout, `${good}: ok\n`);
  const fail = await run(['config', 'check', bad], cleanEnv(t, { MULTIHEAD_HTTP_PORT: '80' }));
  t.is(fail.code, 78);
  t.is(fail.stderr, `multihead: invalid config: http.port = 99999 from ${bad}: must be an integer from 0 to 65535\n`);
});

test('config schema prints JSON by default and the committed Markdown on request', async (t) => {
  const json = await run(['config', 'schema'], cleanEnv(t));
  t.is(json.code, 0);
  const schema = JSON.parse(json.stdout) as { settings: Array<{ key: string; env: string; doc: string }> };
  const port = schema.settings.find((s) => s.key === 'http.port');
  t.is(port?.env, 'MULTIHEAD_HTTP_PORT');
  const md = await run(['config', 'schema', '--format', 'markdown'], cleanEnv(t));
  t.is(md.code, 0);
  t.is(md.stdout, schemaMarkdown());
});

test('config show prints the effective config with secrets masked', async (t) => {
  const r = await run(
    ['config', 'show'],
    cleanEnv(t, { MULTIHEAD_MQTT_PASSWORD: 'hunter2', MULTIHEAD_HTTP_PORT: '9100' }),
  );
  t.is(r.code, 0);
  const shown = JSON.parse(r.stdout);
  t.is(shown.http.port, 9100);
  t.is(shown.mqtt.password, '[redacted]');
  t.false(r.stdout.includes('hunter2'));
});

test('run with an invalid config exits 78 with one line on stderr', async (t) => {
  const r = await run([], cleanEnv(t, { MULTIHEAD_LOG_LEVEL: 'chatty' }));
  t.is(r.code, 78);
  t.is(
    r.stderr,
    'multihead: invalid config: log.level = "chatty" from environment MULTIHEAD_LOG_LEVEL: must be one of fatal, error, warn, info, debug, trace, silent\n',
  );
});

test('run with a missing --config file exits 78', async (t) => {
  const r = await run(['--config', '/nonexistent/multihead.json'], cleanEnv(t));
  t.is(r.code, 78);
  t.is(r.stderr, 'multihead: invalid config: /nonexistent/multihead.json: cannot read config file: file not found\n');
});

/** Starts the supervisor and resolves once it logs that it is running. */
async function startSupervisor(t: Parameters<typeof scratchDir>[0], env: Record<string, string> = {}) {
  const child = spawn(BIN, [], { env: cleanEnv(t, env) });
  const result = collect(child);
  const entries: Array<Record<string, unknown>> = [];
  await new Promise<void>((resolve, reject) => {
    let buffer = '';
    child.stdout.on('data', (chunk: Buffer) => {
      buffer += chunk;
      let newline = buffer.indexOf('\n');
      while (newline >= 0) {
        const entry = JSON.parse(buffer.slice(0, newline)) as Record<string, unknown>;
        entries.push(entry);
        buffer = buffer.slice(newline + 1);
        if (entry.msg === 'supervisor running') resolve();
        newline = buffer.indexOf('\n');
      }
    });
    child.on('close', (code) => reject(new Error(`supervisor exited early with ${code}`)));
  });
  return { child, result, entries };
}

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`run stays up without a KMS device and stops in order on ${signal} within 2 s with exit 0`, async (t) => {
    // A card that cannot exist makes the no-KMS path independent of the machine's GPUs.
    const { child, result, entries } = await startSupervisor(t, { MULTIHEAD_DISPLAY_DEVICE: '/dev/dri/card99' });
    const noKms = entries.filter((e) => e.msg === 'no KMS device found; running with virtual outputs');
    t.is(noKms.length, 1);
    t.is(noKms[0]?.component, 'display');
    t.is(noKms[0]?.reason, '/dev/dri/card99 does not exist');

    // Nothing to play and the demo off by default: the installer screen on both outputs.
    const installer = entries.find((e) => typeof e.msg === 'string' && e.msg.startsWith('installer screen on'));
    t.deepEqual(installer?.outputs, ['Virtual-1', 'Virtual-2']);

    // Still up a moment later: nothing to play is not a reason to exit.
    await new Promise((resolve) => setTimeout(resolve, 300));
    t.is(child.exitCode, null);

    const sent = Date.now();
    child.kill(signal);
    const r = await result;
    const elapsed = Date.now() - sent;
    t.is(r.code, 0);
    t.true(elapsed < 2000, `stopped in ${elapsed} ms`);
    const messages = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).msg as string);
    t.deepEqual(messages.slice(-2), [
      `supervisor stopping (received ${signal})`,
      `supervisor stopped (received ${signal})`,
    ]);
  });
}

test('run logs secrets from the environment only in redacted form', async (t) => {
  const { child, result } = await startSupervisor(t, {
    MULTIHEAD_MQTT_PASSWORD: 'hunter2',
    MULTIHEAD_LOG_LEVEL: 'debug',
    MULTIHEAD_DEVICE_NAME: 'Foyer',
  });
  child.kill('SIGTERM');
  const r = await result;
  t.is(r.code, 0);
  t.true(r.stdout.includes('"deviceName":"Foyer"'));
  t.false(r.stdout.includes('hunter2'));
  t.false(r.stderr.includes('hunter2'));
});

test('without a KMS device the run command plays the built-in demo on 2 virtual outputs from one decoder', async (t) => {
  const { child, result, entries } = await startSupervisor(t, {
    MULTIHEAD_DISPLAY_DEVICE: '/dev/dri/card99',
    MULTIHEAD_PLAYBACK_DEMO: '1',
  });
  const playing = entries.find((e) => typeof e.msg === 'string' && e.msg.startsWith('playing the built-in demo'));
  t.deepEqual(playing?.outputs, ['Virtual-1', 'Virtual-2']);
  t.is(playing?.component, 'playback');
  // The first decoder status comes 2 s in.
  const deadline = Date.now() + 8000;
  let decoder: Record<string, unknown> | undefined;
  while (!decoder && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    decoder = entries.find((e) => typeof e.msg === 'string' && e.msg.startsWith('decoder 1 ('));
  }
  t.truthy(decoder, 'a decoder status line');
  t.deepEqual(decoder?.consumers, ['Virtual-1', 'Virtual-2'], 'one decoder, both outputs');
  t.true(Number(decoder?.frames) > 10);
  const fallback = entries.filter((e) => /^decoder 1 decodes in software: /.test(String(e.msg)));
  t.is(fallback.length, 1, 'the software fallback is said once');
  if (!existsSync('/dev/dri')) t.is(fallback[0]?.msg, 'decoder 1 decodes in software: no /dev/dri on this machine');
  const outputLines = entries.filter((e) => /^output Virtual-\d: \d+ frames/.test(String(e.msg)));
  t.is(outputLines.length, 2);
  // Where the start went, once, at the first frame: Node, modules, then each step in order.
  const startups = entries.filter((e) => String(e.msg).startsWith('start-up: first frame '));
  t.is(startups.length, 1, 'one start-up line');
  const steps = (startups[0]?.steps ?? []) as Array<{ step: string; ms: number }>;
  const names = steps.map((s) => s.step);
  t.deepEqual(names.slice(0, 4), ['node', 'modules', 'config', 'addon']);
  t.true(names.indexOf('playback') < names.indexOf('display'), names.join(', '));
  t.is(names.at(-1), 'first frame');
  // What the screens do not need starts after their first frames, in a line of its own.
  for (const later of ['mqtt', 'http', 'update', 'systemd']) t.false(names.includes(later), names.join(', '));
  const rest = entries.find((e) => String(e.msg).startsWith('start-up: every extension running '));
  const restNames = ((rest?.steps ?? []) as Array<{ step: string }>).map((s) => s.step);
  t.deepEqual(restNames.slice(-4), ['mqtt', 'http', 'update', 'systemd'], String(rest?.msg));
  // Content starts before the fleet's extensions; the demo's first frame may come while it loads.
  t.is([...names, ...restNames].filter((n) => n === 'content').length, 1, `${names} / ${restNames}`);
  t.true(
    steps.every((s) => Number.isInteger(s.ms) && s.ms >= 0),
    JSON.stringify(steps),
  );
  const sum = steps.reduce((n, s) => n + s.ms, 0);
  t.true(
    Math.abs(sum - Number(startups[0]?.startupMs)) <= steps.length,
    `steps add up to ${sum}, total ${startups[0]?.startupMs}`,
  );
  child.kill('SIGTERM');
  t.is((await result).code, 0);
});
