import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import test from 'ava';
import { boxStart } from './helpers/box.ts';
import { until } from './helpers/supervisor.ts';
import { scratchDir, writeJson } from './helpers/tmp.ts';

const BIN = new URL('../bin/multihead', import.meta.url).pathname;

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cleanEnv(t: Parameters<typeof scratchDir>[0], config: Record<string, unknown> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MULTIHEAD_')));
  const dir = scratchDir(t);
  return { ...env, MULTIHEAD_CONFIG: writeJson(dir, 'config.json', config), MULTIHEAD_DATA_DIR: dir };
}

function collect(child: ChildProcess): Promise<Result> & { child: ChildProcess; out: () => string } {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d) => {
    stdout += d;
  });
  child.stderr?.on('data', (d) => {
    stderr += d;
  });
  const done = new Promise<Result>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  return Object.assign(done, { child, out: () => stdout });
}

const cli = (args: string[], env: NodeJS.ProcessEnv) => collect(spawn(BIN, args, { env }));

/** A port nothing listens on (bound, read, released). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

test('status, outputs and logs print tables from the running supervisor, and JSON with --json', async (t) => {
  const box = await boxStart(t);
  const port = Number(new URL(box.url).port);
  // The endpoint from the config file (http.port), as on the box; --url elsewhere.
  const env = cleanEnv(t, { http: { port } });
  await until(async () => (await fetch(`${box.url}/healthz`)).status === 200, 'the box to play');
  await until(async () => {
    const r = (await (await fetch(`${box.url}/outputs`)).json()) as { outputs: Array<{ preview: unknown }> };
    return r.outputs.every((o) => o.preview);
  }, 'previews');

  const status = await cli(['status'], env);
  t.is(status.code, 0, status.stderr);
  t.regex(status.stdout, /^Device +test-host \(/m);
  t.regex(status.stdout, /^Health +ok$/m);
  t.regex(status.stdout, /^Display +virtual outputs \(/m);
  t.regex(status.stdout, /^Broker +off$/m);
  t.regex(status.stdout, /^OUTPUT +MODE +DECODER +SOURCE$/m);
  t.regex(status.stdout, /^Virtual-1 +- +\d+ \(shared\) +pattern:testcard/m);
  t.regex(status.stdout, /^DECODER +PATH +PICTURE +OUTPUTS +STATE$/m);
  t.regex(status.stdout, /^\d+ +software +\w+ 1280x720 +Virtual-1, Virtual-2 +running$/m);

  const statusJson = await cli(['status', '--json', '--url', box.url], cleanEnv(t));
  t.is(statusJson.code, 0, statusJson.stderr);
  const parsed = JSON.parse(statusJson.stdout);
  t.like(parsed, { status: { supervisor: 'running' }, health: { healthy: true, state: 'ok' } });

  const outputs = await cli(['outputs'], env);
  t.is(outputs.code, 0, outputs.stderr);
  t.regex(outputs.stdout, /^OUTPUT +MODE +STATE +FRAMES +DROPPED +DECODER +PREVIEW +SOURCE$/m);
  t.regex(
    outputs.stdout,
    new RegExp(
      `^Virtual-2 +1280x720@60 +playing +\\d+ +\\d+ +\\d+ +http://127\\.0\\.0\\.1:${port}/outputs/Virtual-2/preview\\.jpg +pattern:testcard`,
      'm',
    ),
  );
  const outputsJson = JSON.parse((await cli(['outputs', '--json'], env)).stdout);
  t.deepEqual(
    outputsJson.map((o: { name: string }) => o.name),
    ['Virtual-1', 'Virtual-2'],
  );

  box.logger.warn({ component: 'test', output: 'Virtual-1' }, 'a warning to read back');
  const logs = await cli(['logs', '--level', 'warn', '--lines', '5'], env);
  t.is(logs.code, 0, logs.stderr);
  t.regex(logs.stdout, /^\d{4}-\d\d-\d\dT[\d:.]+Z WARN {2}test: a warning to read back \{"output":"Virtual-1"\}$/m);
  t.notRegex(logs.stdout, / INFO /);
  const logsJson = await cli(['logs', '--json', '--lines', '2'], env);
  const lines = logsJson.stdout.trim().split('\n');
  t.is(lines.length, 2);
  for (const line of lines) t.truthy(JSON.parse(line).time);
});

test('logs -f streams new lines until interrupted', async (t) => {
  const box = await boxStart(t, { preview: { intervalS: 0 } });
  const follow = cli(['logs', '-f', '--lines', '1', '--url', box.url], cleanEnv(t));
  await until(() => follow.out().length > 0, 'the first line');
  box.logger.info({ component: 'test' }, 'streamed while following');
  await until(() => follow.out().includes('streamed while following'), 'the live line');
  follow.child.kill('SIGINT');
  const r = await follow;
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /INFO {2}test: streamed while following$/m);
});

test('no supervisor: a clear error and exit 69', async (t) => {
  const port = await freePort();
  for (const verb of ['status', 'outputs', 'logs']) {
    const r = await cli([verb], cleanEnv(t, { http: { port } }));
    t.is(r.code, 69, verb);
    t.is(
      r.stderr,
      `multihead: the supervisor is not running, or its status endpoint is off (nothing listens on http://127.0.0.1:${port})\n`,
    );
    t.is(r.stdout, '');
  }
});

test('bad options are usage errors (64); a bad config is 78', async (t) => {
  for (const [args, message] of [
    [['logs', '--lines', 'lots'], '--lines must be an integer from 1 to 1000, not "lots"'],
    [['logs', '--level', 'loud'], '--level must be one of trace, debug, info, warn, error, fatal, not "loud"'],
    [['status', '--url', 'ftp://box'], '--url must be an http:// URL, got "ftp://box"'],
    [['status', '--follow'], '--follow, --level and --lines only apply to "logs"'],
    [['config', 'show', '--json'], '--json only applies to "status", "outputs", "logs" and "diagnose"'],
    [['config', 'show', '--url', 'http://box'], '--url only applies to "status", "outputs" and "logs"'],
    [['status', 'extra'], 'unknown command "status extra"'],
  ] as const) {
    const r = await cli([...args], cleanEnv(t));
    t.is(r.code, 64, args.join(' '));
    t.true(r.stderr.startsWith(`multihead: ${message}\n`), r.stderr);
  }
  const r = await cli(['status'], cleanEnv(t, { http: { port: 'eighty' } }));
  t.is(r.code, 78);
  t.regex(r.stderr, /http\.port/);
});
