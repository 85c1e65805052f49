// Soak: the built-in demo (or a clip) on two virtual outputs for a long time, in this
// process, sampling RSS and open fds. After a warm-up, RSS growth must stay under 2 % and the
// fd count flat. Not part of CI (an hour by default).
//
//   npm run bench:soak [-- --minutes 60 --source /path/clip.mp4]
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { loadAddon } from '../src/native/addon.ts';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '60' },
    source: { type: 'string', default: 'lavfi:testsrc2=size=1920x1080:rate=30' },
    'warmup-seconds': { type: 'string', default: '60' },
  },
});
const totalMs = Number(values.minutes) * 60_000;
const warmupMs = Math.min(Number(values['warmup-seconds']) * 1000, totalMs / 2);
const sampleMs = Math.max(1000, Math.min(10_000, totalMs / 60));

const rssKb = (): number => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1] ?? -1);
const fds = (): number => fs.readdirSync('/proc/self/fd').length;

const addon = loadAddon();
const decode = new addon.DecodeManager({});
const display = new addon.VirtualDisplay([
  { name: 'Virtual-1', width: 1920, height: 1080, refresh: 60 },
  { name: 'Virtual-2', width: 1920, height: 1080, refresh: 60 },
]);
for (const name of ['Virtual-1', 'Virtual-2']) {
  decode.acquire(name, { source: values.source });
  display.play(decode, name, [name]);
}

const started = Date.now();
const samples: Array<{ s: number; rssKb: number; fds: number }> = [];
while (Date.now() - started < totalMs) {
  await new Promise((r) => setTimeout(r, sampleMs));
  samples.push({ s: Math.round((Date.now() - started) / 1000), rssKb: rssKb(), fds: fds() });
}
const stats = display.stats();
const status = decode.status().decoders[0];
display.close();
decode.close();

const warm = samples.filter((x) => x.s * 1000 >= warmupMs);
const first = warm[0];
const last = warm.at(-1);
if (!first || !last) throw new Error('soak too short for a warm-up and samples');
const growth = (last.rssKb - first.rssKb) / first.rssKb;
const lines = [
  `soak: ${values.source} on 2 virtual 1080p60 outputs, ${values.minutes} min, warm-up ${warmupMs / 1000} s`,
  '',
  '| t (s) | RSS MB | fds |',
  '| --- | --- | --- |',
  ...samples
    .filter((_, i) => i % Math.max(1, Math.floor(samples.length / 12)) === 0 || i === samples.length - 1)
    .map((x) => `| ${x.s} | ${(x.rssKb / 1024).toFixed(1)} | ${x.fds} |`),
  '',
  `decoder: ${status?.frames} frames, ${status?.late} late, ${status?.fps.toFixed(1)} fps; outputs: ${stats
    .map((o) => `${o.name} ${o.frames} frames / ${o.vblanks} vblanks, ${o.dropped} dropped`)
    .join('; ')}`,
  `rss_growth_after_warmup=${(growth * 100).toFixed(2)}% fd_delta=${last.fds - first.fds} dropped=${stats.reduce((n, o) => n + o.dropped, 0)}`,
];
process.stdout.write(`${lines.join('\n')}\n`);
process.exitCode = growth < 0.02 && last.fds === first.fds ? 0 : 1;
