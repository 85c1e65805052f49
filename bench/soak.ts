// Soak: the supervisor as the box runs it (bin/multihead): the built-in demo (or a clip) on two
// virtual 1080p60 outputs, previews, the HTTP status endpoint and MQTT connected to a local
// mosquitto the soak starts. Samples the supervisor's PSS (/proc/PID/smaps_rollup), RSS and
// open fds from outside. After a warm-up, RSS growth must stay under 2 % and the fd count
// flat. Not part of CI (an hour by default).
//
//   npm run bench:soak [-- --minutes 60 --warmup-seconds 60]
//
// Last line: pss_mb_idle=<median PSS after the warm-up> rss_mb_idle= rss_growth_after_warmup= fd_delta= dropped=
// cpu_pct=<the supervisor's CPU after the warm-up, % of one core>
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '60' },
    'warmup-seconds': { type: 'string', default: '60' },
    /** Seconds between previews (0: off), to tell their memory from the rest. */
    'preview-s': { type: 'string', default: '5' },
  },
});
const totalMs = Number(values.minutes) * 60_000;
const warmupMs = Math.min(Number(values['warmup-seconds']) * 1000, totalMs / 2);
const sampleMs = Math.max(1000, Math.min(10_000, totalMs / 60));
const repo = path.resolve(import.meta.dirname, '..');

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });

/** Lines of a child's stdout, and a wait for the first that matches. */
function linesOf(child: ChildProcess): {
  lines: string[];
  wait: (re: RegExp, ms: number, what: string) => Promise<string>;
} {
  const lines: string[] = [];
  let rest = '';
  const waiters = new Set<() => void>();
  const take = (chunk: Buffer): void => {
    const parts = (rest + chunk.toString('utf8')).split('\n');
    rest = parts.pop() ?? '';
    lines.push(...parts);
    for (const w of waiters) w();
  };
  child.stdout?.on('data', take);
  child.stderr?.on('data', take);
  const wait = (re: RegExp, ms: number, what: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const hit = lines.find((l) => re.test(l));
        if (hit === undefined) return;
        waiters.delete(check);
        clearTimeout(timer);
        resolve(hit);
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`no ${what} within ${ms / 1000} s; last lines:\n${lines.slice(-15).join('\n')}`));
      }, ms);
      waiters.add(check);
      child.once('exit', (code) =>
        reject(new Error(`exited (${code}) before ${what}:\n${lines.slice(-15).join('\n')}`)),
      );
      check();
    });
  return { lines, wait };
}

const procKb = (pid: number, file: string, field: string): number => {
  const text = fs.readFileSync(`/proc/${pid}/${file}`, 'utf8');
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? Number.NaN);
};
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2
    ? (s[(s.length - 1) / 2] as number)
    : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
};

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'multihead-soak-'));
const [brokerPort, httpPort] = [await freePort(), await freePort()];
fs.writeFileSync(path.join(dir, 'mosquitto.conf'), `listener ${brokerPort} 127.0.0.1\nallow_anonymous true\n`);
const broker = spawn('mosquitto', ['-c', path.join(dir, 'mosquitto.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
await linesOf(broker).wait(/running|Opening ipv4 listen socket/, 10_000, 'mosquitto listening');

const config = {
  dataDir: path.join(dir, 'data'),
  device: { id: 'soak', name: 'soak' },
  outputs: [
    { connector: 'Virtual-1', mode: '1920x1080@60' },
    { connector: 'Virtual-2', mode: '1920x1080@60' },
  ],
  mqtt: { url: `mqtt://127.0.0.1:${brokerPort}`, telemetryIntervalS: 10 },
  http: { port: httpPort },
  preview: { intervalS: Number(values['preview-s']) },
  decode: { hardware: 'software' },
  playback: { demo: true },
  log: { level: 'info' },
};
fs.mkdirSync(config.dataDir);
fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
const supervisor = spawn(path.join(repo, 'bin/multihead'), ['--config', path.join(dir, 'config.json')], {
  stdio: ['ignore', 'pipe', 'pipe'],
});
const out = linesOf(supervisor);
const stopAll = (): void => {
  supervisor.kill('SIGTERM');
  broker.kill('SIGTERM');
};
process.on('exit', () => {
  stopAll();
  fs.rmSync(dir, { recursive: true, force: true });
});

const startedAt = Date.now();
await out.wait(/"msg":"supervisor running"/, 60_000, 'the supervisor running');
await out.wait(/"msg":"connected to MQTT broker/, 30_000, `a connection to mosquitto on ${brokerPort}`);
// The one health judgement: ok once both outputs show the demo and the broker is connected.
for (let tries = 0; ; tries++) {
  const healthz = await fetch(`http://127.0.0.1:${httpPort}/healthz`);
  const body = await healthz.text();
  if (healthz.ok) break;
  if (tries >= 600) throw new Error(`/healthz still answers ${healthz.status} after 60 s: ${body}`);
  await new Promise((r) => setTimeout(r, 100));
}
const readyS = (Date.now() - startedAt) / 1000;

const pid = supervisor.pid as number;
const fds = (): number => fs.readdirSync(`/proc/${pid}/fd`).length;
/** CPU seconds (user + system) the supervisor has used, from /proc/PID/stat (clock ticks of 1/100 s). */
const cpuS = (): number => {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) / 100;
};
const samples: Array<{ s: number; pssKb: number; rssKb: number; fds: number }> = [];
const t0 = Date.now();
let cpuWarm: { at: number; cpu: number } | undefined;
while (Date.now() - t0 < totalMs) {
  await new Promise((r) => setTimeout(r, sampleMs));
  if (supervisor.exitCode !== null) throw new Error(`the supervisor exited (${supervisor.exitCode}) during the soak`);
  if (!cpuWarm && Date.now() - t0 >= warmupMs) cpuWarm = { at: Date.now(), cpu: cpuS() };
  samples.push({
    s: Math.round((Date.now() - t0) / 1000),
    pssKb: procKb(pid, 'smaps_rollup', 'Pss'),
    rssKb: procKb(pid, 'status', 'VmRSS'),
    fds: fds(),
  });
}
const cpuPct = cpuWarm ? ((cpuS() - cpuWarm.cpu) / ((Date.now() - cpuWarm.at) / 1000)) * 100 : Number.NaN;
const metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
const metric = (name: string): number =>
  Number(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, 'm').exec(metrics)?.[1] ?? Number.NaN);
const dropped = [...metrics.matchAll(/^multihead_output_dropped_frames_total\{[^}]*\} ([0-9.]+)$/gm)].reduce(
  (n, m) => n + Number(m[1]),
  0,
);
stopAll();

const warm = samples.filter((x) => x.s * 1000 >= warmupMs);
const first = warm[0];
const last = warm.at(-1);
if (!first || !last) throw new Error('soak too short for a warm-up and samples');
const growth = (last.rssKb - first.rssKb) / first.rssKb;
const mb = (kb: number): string => (kb / 1024).toFixed(1);
const pssIdle = median(warm.map((x) => x.pssKb));
const rssIdle = median(warm.map((x) => x.rssKb));
const lines = [
  `soak: bin/multihead, the built-in demo on 2 virtual 1080p60 outputs, previews every ${values['preview-s']} s, HTTP, MQTT (mosquitto); ${values.minutes} min, warm-up ${warmupMs / 1000} s; both playing ${readyS.toFixed(1)} s after the start; load ${os.loadavg()[0]?.toFixed(2)}`,
  '',
  '| t (s) | PSS MB | RSS MB | fds |',
  '| --- | --- | --- | --- |',
  ...samples
    .filter((_, i) => i % Math.max(1, Math.floor(samples.length / 12)) === 0 || i === samples.length - 1)
    .map((x) => `| ${x.s} | ${mb(x.pssKb)} | ${mb(x.rssKb)} | ${x.fds} |`),
  '',
  `Node heap used ${(metric('multihead_nodejs_heap_size_used_bytes') / 1048576).toFixed(1)} MB of ${(metric('multihead_nodejs_heap_size_total_bytes') / 1048576).toFixed(1)} MB; external ${(metric('multihead_nodejs_external_memory_bytes') / 1048576).toFixed(1)} MB`,
  `pss_mb_idle=${mb(pssIdle)} rss_mb_idle=${mb(rssIdle)} rss_growth_after_warmup=${(growth * 100).toFixed(2)}% fd_delta=${last.fds - first.fds} dropped=${dropped} cpu_pct=${cpuPct.toFixed(1)}`,
];
process.stdout.write(`${lines.join('\n')}\n`);
process.exitCode = growth < 0.02 && last.fds === first.fds ? 0 : 1;
