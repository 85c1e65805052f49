// Decode to screen, end to end: one H.264 clip (720p30 and 1080p30, software decode) on
// N = 1..4 outputs, three ways, each for one pass of the clip:
//   shared     our playback path (bench/decode-worker.ts: DecodeManager + VirtualDisplay, the
//              code the appliance runs on virtual outputs), one decoder for all N outputs;
//   exclusive  the same with decode.shared off: N decoders (the seed RFC's "before");
//   peer       N independent `ffmpeg -threads 1 -re -i clip -f null -` (decode only: a lower
//              bound for any player that decodes once per output).
// Every output of ours must show at least 95 % of the clip's frames, or the run fails. CPU is
// what the kernel accounted: for ours the playing window (getrusage in the worker, every thread;
// Node's start and the addon's loading, the same on every side, left out and shown apart), for
// the peer the whole process (wait4), memory is PSS summed over the processes (beside RSS), as
// medians of several runs; the sides take turns in one run so the machine's noise hits each.
// The last line is machine-readable.
//
//   npm run bench:decode [-- --seconds 8 --runs 3]
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { seconds: { type: 'string', default: '8' }, runs: { type: 'string', default: '3' } },
});
const seconds = Number(values.seconds);
const runs = Number(values.runs);
if (!(seconds >= 2 && seconds <= 120) || !(runs >= 1 && runs <= 20)) {
  console.error('bench:decode: --seconds must be 2..120 and --runs 1..20');
  process.exit(64);
}
const FPS = 30;
const clipFrames = seconds * FPS;
/** Below this share of the clip's frames on any output, the run fails. */
const SHOWN_MIN = 0.95;
const repo = path.resolve(import.meta.dirname, '..');
const node = path.join(repo, 'node_modules', '.bin', 'node');
const cache = path.join(repo, '.cache', 'bench');
fs.mkdirSync(cache, { recursive: true });

interface Format {
  name: string;
  width: number;
  height: number;
  bitrate: string;
  clip: string;
}
const formats: Format[] = [
  { name: '720p30', width: 1280, height: 720, bitrate: '3M', clip: '' },
  { name: '1080p30', width: 1920, height: 1080, bitrate: '6M', clip: '' },
];
for (const f of formats) {
  f.clip = path.join(cache, `clip-${f.name}-${seconds}s.mp4`);
  if (fs.existsSync(f.clip)) continue;
  process.stderr.write(`bench: making a ${seconds} s ${f.name} H.264 clip with ffmpeg\n`);
  const tmp = `${f.clip}.tmp.mp4`;
  execFileSync('ffmpeg', [
    ...['-v', 'error', '-y', '-f', 'lavfi'],
    ...['-i', `testsrc2=size=${f.width}x${f.height}:rate=${FPS}:duration=${seconds}`],
    ...['-c:v', 'libx264', '-preset', 'veryfast', '-b:v', f.bitrate, '-pix_fmt', 'yuv420p', tmp],
  ]);
  fs.renameSync(tmp, f.clip);
}

interface Measured {
  cpuS: number;
  pssKb: number;
  rssKb: number;
  outputs: string[];
}

/** Runs the commands side by side under bench/measure.py: what the kernel accounted to them. */
function measure(commands: string[][]): Promise<Measured> {
  return new Promise((resolve, reject) => {
    const child = spawn('python3', [path.join(repo, 'bench', 'measure.py'), JSON.stringify(commands)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`bench/measure.py exited ${code}`));
      const m = JSON.parse(out) as {
        cpu_s: number;
        pss_kb_peak: number;
        rss_kb_peak: number;
        exit_codes: number[];
        outputs: string[];
      };
      const bad = m.exit_codes.findIndex((c) => c !== 0);
      if (bad >= 0) return reject(new Error(`${commands[bad]?.join(' ')} exited ${m.exit_codes[bad]}`));
      resolve({ cpuS: m.cpu_s, pssKb: m.pss_kb_peak, rssKb: m.rss_kb_peak, outputs: m.outputs });
    });
  });
}

type Side = 'shared' | 'exclusive' | 'peer';
const SIDES: Side[] = ['shared', 'exclusive', 'peer'];

interface Sample {
  /** Ours: the playing window (the worker's own getrusage, every thread); peer: the whole process. */
  cpuS: number;
  /** The whole process tree, from wait4: ours with Node's start and the addon's loading. */
  processCpuS: number;
  pssKb: number;
  rssKb: number;
  /** Frames shown, summed over the outputs (peer: frames decoded, N x the clip). */
  frames: number;
  /** The lowest share of the clip's frames one output showed (peer: 1, it shows nothing). */
  shownMin: number;
  decoders: number;
}

interface WorkerReport {
  playCpuS: number;
  decoders: number;
  failures: string[];
  outputs: Array<{ name: string; frames: number; dropped: number; lateTicks: number }>;
}

async function sideRun(side: Side, f: Format, n: number): Promise<Sample> {
  if (side === 'peer') {
    const m = await measure(
      Array.from({ length: n }, () => [
        'ffmpeg',
        '-v',
        'error',
        '-threads',
        '1',
        '-re',
        '-i',
        f.clip,
        '-f',
        'null',
        '-',
      ]),
    );
    return {
      cpuS: m.cpuS,
      processCpuS: m.cpuS,
      pssKb: m.pssKb,
      rssKb: m.rssKb,
      frames: n * clipFrames,
      shownMin: 1,
      decoders: n,
    };
  }
  const worker = [node, path.join(repo, 'bench', 'decode-worker.ts'), f.clip, String(n), String(clipFrames), side];
  const m = await measure([[...worker, String(f.width), String(f.height)]]);
  const report = JSON.parse(m.outputs[0]?.trim() ?? '') as WorkerReport;
  if (report.failures.length > 0) throw new Error(`${side} N=${n} ${f.name}: ${report.failures.join('; ')}`);
  // A few frames of the next loop can be on show when the worker stops (it looks every 5 ms).
  const shown = report.outputs.map((o) => Math.min(o.frames, clipFrames));
  if (!(report.playCpuS > 0 && report.playCpuS <= m.cpuS)) {
    throw new Error(
      `${side} N=${n} ${f.name}: playing-window CPU ${report.playCpuS} s is not within the process's ${m.cpuS} s`,
    );
  }
  return {
    cpuS: report.playCpuS,
    processCpuS: m.cpuS,
    pssKb: m.pssKb,
    rssKb: m.rssKb,
    frames: shown.reduce((a, b) => a + b, 0),
    shownMin: Math.min(...shown) / clipFrames,
    decoders: report.decoders,
  };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
};

const samples = new Map<string, Sample[]>();
const key = (f: Format, n: number, side: Side): string => `${f.name}/${n}/${side}`;
const load = (): string => os.loadavg()[0]?.toFixed(2) ?? '?';
const loadAtStart = load();
const t0 = Date.now();
for (let r = 0; r < runs; r++) {
  for (const f of formats) {
    for (let n = 1; n <= 4; n++) {
      // The sides take turns, starting with a different one each run.
      for (let i = 0; i < SIDES.length; i++) {
        const side = SIDES[(i + r + n) % SIDES.length] as Side;
        const s = await sideRun(side, f, n);
        samples.set(key(f, n, side), [...(samples.get(key(f, n, side)) ?? []), s]);
        process.stderr.write(
          `bench: run ${r + 1}/${runs} ${f.name} N=${n} ${side}: ${s.cpuS.toFixed(2)} s CPU, PSS ${(s.pssKb / 1024).toFixed(0)} MB, shown min ${(s.shownMin * 100).toFixed(1)} %\n`,
        );
      }
    }
  }
}

interface Row {
  cpuS: number;
  processCpuS: number;
  pssKb: number;
  rssKb: number;
  msPerFrame: number;
  shownMin: number;
  decoders: number;
}
const row = (f: Format, n: number, side: Side): Row => {
  const xs = samples.get(key(f, n, side)) ?? [];
  return {
    cpuS: median(xs.map((x) => x.cpuS)),
    processCpuS: median(xs.map((x) => x.processCpuS)),
    pssKb: median(xs.map((x) => x.pssKb)),
    rssKb: median(xs.map((x) => x.rssKb)),
    msPerFrame: median(xs.map((x) => (x.cpuS * 1000) / x.frames)),
    // Not a median: the worst output of any run is what the target is about.
    shownMin: Math.min(...xs.map((x) => x.shownMin)),
    decoders: median(xs.map((x) => x.decoders)),
  };
};

const mb = (kb: number): string => (kb / 1024).toFixed(0);
const pct = (x: number): string => `${(x * 100).toFixed(1)} %`;
const lines = [
  `decode bench: H.264 software decode, one ${seconds} s pass of the clip per run (${clipFrames} frames), median of ${runs}; ${os.cpus().length} CPUs, load ${loadAtStart} at the start and ${load()} at the end, ${((Date.now() - t0) / 1000).toFixed(0)} s`,
];
for (const f of formats) {
  lines.push(
    '',
    `${f.name} (outputs ${f.width}x${f.height}@60):`,
    '',
    '| outputs | shared: CPU s | (process) | ms/frame shown | PSS MB | RSS MB | shown min | exclusive: decoders | CPU s | (process) | PSS MB | shown min | peer: CPU s | PSS MB | RSS MB |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  );
  for (let n = 1; n <= 4; n++) {
    const s = row(f, n, 'shared');
    const e = row(f, n, 'exclusive');
    const p = row(f, n, 'peer');
    lines.push(
      `| ${n} | ${s.cpuS.toFixed(2)} | ${s.processCpuS.toFixed(2)} | ${s.msPerFrame.toFixed(2)} | ${mb(s.pssKb)} | ${mb(s.rssKb)} | ${pct(s.shownMin)} | ${e.decoders} | ${e.cpuS.toFixed(2)} | ${e.processCpuS.toFixed(2)} | ${mb(e.pssKb)} | ${pct(e.shownMin)} | ${p.cpuS.toFixed(2)} | ${mb(p.pssKb)} | ${mb(p.rssKb)} |`,
    );
  }
}

// The ratios are each the worse of the two formats; pss_mb_1 is the 1080p30 figure.
const worst = (fn: (f: Format) => number, pick: (a: number, b: number) => number): number =>
  formats.map(fn).reduce((a, b) => pick(a, b));
const cpuRatio = worst((f) => row(f, 4, 'shared').cpuS / row(f, 1, 'shared').cpuS, Math.max);
const exclusiveRatio = worst((f) => row(f, 4, 'exclusive').cpuS / row(f, 4, 'shared').cpuS, Math.min);
const peerRatio = worst((f) => row(f, 4, 'peer').cpuS / row(f, 1, 'peer').cpuS, Math.min);
const pssRatio = worst((f) => row(f, 4, 'shared').pssKb / row(f, 1, 'shared').pssKb, Math.max);
const shownMin = Math.min(
  ...formats.flatMap((f) =>
    [1, 2, 3, 4].flatMap((n) => [row(f, n, 'shared').shownMin, row(f, n, 'exclusive').shownMin]),
  ),
);
const big = formats.at(-1) as Format;
const pssMb1 = row(big, 1, 'shared').pssKb / 1024;
const targets = [
  { ok: cpuRatio <= 1.1, text: `cpu_ratio_4_1 ${cpuRatio.toFixed(3)} ≤ 1.10` },
  { ok: pssRatio <= 1.1, text: `pss_ratio_4_1 ${pssRatio.toFixed(3)} ≤ 1.10` },
  { ok: shownMin >= SHOWN_MIN, text: `shown_min ${shownMin.toFixed(3)} ≥ ${SHOWN_MIN}` },
  { ok: exclusiveRatio >= 3, text: `exclusive_cpu_ratio_4_1 ${exclusiveRatio.toFixed(3)} ≥ 3` },
];
lines.push(
  '',
  `targets: ${targets.map((t) => `${t.ok ? 'met' : 'MISSED'} ${t.text}`).join('; ')}`,
  `cpu_ratio_4_1=${cpuRatio.toFixed(3)} exclusive_cpu_ratio_4_1=${exclusiveRatio.toFixed(3)} peer_cpu_ratio_4_1=${peerRatio.toFixed(3)} shown_min=${shownMin.toFixed(3)} pss_mb_1=${pssMb1.toFixed(1)} pss_ratio_4_1=${pssRatio.toFixed(3)}`,
);
process.stdout.write(`${lines.join('\n')}\n`);
// Fewer frames shown than the clip has is a failed run, not a number to read past.
if (shownMin < SHOWN_MIN) process.exitCode = 1;
