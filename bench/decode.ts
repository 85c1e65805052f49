// Software decode, one 1080p30 clip on N = 1..4 outputs: our engine (one shared decoder) vs
// the peer baseline of N independent decoders (N x `ffmpeg -threads 1 -re -i clip -f null -`),
// run side by side for the same wall time. Prints CPU seconds, peak RSS and the ratios, as
// medians of several runs; the last line is machine-readable.
//
//   npm run bench:decode [-- --seconds 8 --runs 3]
//
// What it does not include: presentation (upload to scanout, display). This machine has no
// display; the VM suite measures that path's copies instead.
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
const repo = path.resolve(import.meta.dirname, '..');
const node = path.join(repo, 'node_modules', '.bin', 'node');
const cache = path.join(repo, '.cache', 'bench');
fs.mkdirSync(cache, { recursive: true });

const clip = path.join(cache, 'clip-1080p30.mp4');
if (!fs.existsSync(clip)) {
  process.stderr.write('bench: making a 20 s 1080p30 H.264 clip with ffmpeg\n');
  const tmp = `${clip}.tmp.mp4`;
  execFileSync('ffmpeg', [
    '-v',
    'error',
    '-y',
    '-f',
    'lavfi',
    '-i',
    'testsrc2=size=1920x1080:rate=30:duration=20',
    '-c:v',
    'libx264',
    '-preset',
    'veryfast',
    '-b:v',
    '6M',
    '-pix_fmt',
    'yuv420p',
    tmp,
  ]);
  fs.renameSync(tmp, clip);
}

interface Usage {
  cpu: number;
  rssKb: number;
  output: string;
}

/**
 * Runs the commands in parallel under one Python parent that reports its children's summed
 * CPU time and their summed peak RSS (getrusage cannot sum peaks, so each child is wrapped).
 */
function measure(commands: string[][]): Promise<Usage> {
  const script = `
import json, resource, subprocess, sys
cmds = json.loads(sys.argv[1])
def one(cmd):
    return subprocess.Popen(["python3", "-c", "import resource,subprocess,sys;p=subprocess.run(sys.argv[1:],stdout=subprocess.PIPE,stderr=subprocess.DEVNULL);r=resource.getrusage(resource.RUSAGE_CHILDREN);sys.stdout.write(p.stdout.decode());print('USAGE',r.ru_utime+r.ru_stime,r.ru_maxrss)", *cmd], stdout=subprocess.PIPE)
procs = [one(c) for c in cmds]
outs = [p.communicate()[0].decode() for p in procs]
print(json.dumps(outs))
`;
  return new Promise((resolve, reject) => {
    const child = spawn('python3', ['-c', script, JSON.stringify(commands)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.on('error', reject);
    child.on('close', () => {
      const outs = JSON.parse(out) as string[];
      let cpu = 0;
      let rssKb = 0;
      let output = '';
      for (const o of outs) {
        const m = /USAGE (\S+) (\d+)/.exec(o);
        if (!m) return reject(new Error(`no usage line in ${o}`));
        cpu += Number(m[1]);
        rssKb += Number(m[2]);
        output += o.replace(/USAGE .*\n?/, '');
      }
      resolve({ cpu, rssKb, output });
    });
  });
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
};

interface Row {
  n: number;
  ours: { cpu: number; rssKb: number; frames: number; decoders: number; copies: number };
  peer: { cpu: number; rssKb: number };
}

const rows: Row[] = [];
for (let n = 1; n <= 4; n++) {
  const ours: Array<{ cpu: number; rssKb: number; frames: number; decoders: number; copies: number }> = [];
  const peer: Array<{ cpu: number; rssKb: number }> = [];
  for (let r = 0; r < runs; r++) {
    // Side by side: both sides run at the same time, so machine noise hits both.
    const [a, b] = await Promise.all([
      measure([[node, path.join(repo, 'bench', 'decode-worker.ts'), clip, String(n), String(seconds)]]),
      measure(
        Array.from({ length: n }, () => [
          'ffmpeg',
          '-v',
          'error',
          '-threads',
          '1',
          '-re',
          '-t',
          String(seconds),
          '-i',
          clip,
          '-f',
          'null',
          '-',
        ]),
      ),
    ]);
    const status = JSON.parse(a.output.trim()) as {
      decoders: Array<{ frames: number; bytesCopiedPerFrame: number }>;
    };
    ours.push({
      cpu: a.cpu,
      rssKb: a.rssKb,
      frames: status.decoders.reduce((s, d) => s + d.frames, 0),
      decoders: status.decoders.length,
      copies: status.decoders[0]?.bytesCopiedPerFrame ?? 0,
    });
    peer.push({ cpu: b.cpu, rssKb: b.rssKb });
    process.stderr.write(
      `bench: N=${n} run ${r + 1}/${runs}: ours ${a.cpu.toFixed(2)} s, peer ${b.cpu.toFixed(2)} s\n`,
    );
  }
  rows.push({
    n,
    ours: {
      cpu: median(ours.map((o) => o.cpu)),
      rssKb: median(ours.map((o) => o.rssKb)),
      frames: median(ours.map((o) => o.frames)),
      decoders: median(ours.map((o) => o.decoders)),
      copies: median(ours.map((o) => o.copies)),
    },
    peer: { cpu: median(peer.map((p) => p.cpu)), rssKb: median(peer.map((p) => p.rssKb)) },
  });
}

const mb = (kb: number): string => (kb / 1024).toFixed(0);
const lines = [
  `decode bench: 1080p30 H.264, software, ${seconds} s wall per run, median of ${runs}; ${os.cpus().length} CPUs`,
  '',
  '| outputs | ours: decoders | ours: CPU s | ours: peak RSS MB | peer: CPU s | peer: peak RSS MB | CPU ours/peer |',
  '| --- | --- | --- | --- | --- | --- | --- |',
  ...rows.map(
    (r) =>
      `| ${r.n} | ${r.ours.decoders} | ${r.ours.cpu.toFixed(2)} | ${mb(r.ours.rssKb)} | ${r.peer.cpu.toFixed(2)} | ${mb(r.peer.rssKb)} | ${(r.ours.cpu / r.peer.cpu).toFixed(2)} |`,
  ),
];
const first = rows[0];
const last = rows[3];
if (!first || !last) throw new Error('missing rows');
const perFrameOurs = (first.ours.cpu / first.ours.frames) * 1000;
const perFramePeer = (first.peer.cpu / (seconds * 30)) * 1000;
lines.push(
  '',
  `decode CPU per frame (N=1): ours ${perFrameOurs.toFixed(2)} ms, ffmpeg CLI ${perFramePeer.toFixed(2)} ms (ours uses FFmpeg's frame threads and converts each frame to NV12 once)`,
  `cpu_ratio_4_1=${(last.ours.cpu / first.ours.cpu).toFixed(3)} rss_ratio_4_1=${(last.ours.rssKb / first.ours.rssKb).toFixed(3)} peer_cpu_ratio_4_1=${(last.peer.cpu / first.peer.cpu).toFixed(3)} copies_per_frame_sw=${last.ours.copies}`,
);
process.stdout.write(`${lines.join('\n')}\n`);
