import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MediaCache } from '../src/content/cache.ts';
import { contentValidate } from '../src/content/model.ts';
import { scheduleAt } from '../src/content/scheduler.ts';
import { mediaServerStart, randomMedia } from '../test/helpers/media-server.ts';

/**
 * Content speed: the scheduler (called at every boundary and by content.status) and the cache
 * (download + sha256 verify + atomic install of a local file). Targets: a typical scheduleAt
 * under 5 ms, the worst case (a year searched for a change that never comes) under 200 ms;
 * download+verify+install at least 100 MB/s from loopback.
 * Options: --runs 20 --megabytes 64
 */
const arg = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};
const runs = arg('runs', 20);
const megabytes = arg('megabytes', 64);

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
};

function timed(f: () => void): number {
  const start = performance.now();
  f();
  return performance.now() - start;
}

const base = {
  version: 1,
  media: [{ id: 'm', url: 'http://x.invalid/m', sha256: 'a'.repeat(64), size: 1, type: 'video' }],
  playlists: ['a', 'b', 'c'].map((id) => ({ id, items: [{ media: 'm' }] })),
};
const typical = contentValidate({
  ...base,
  schedules: [
    {
      id: 's',
      timezone: 'Europe/Berlin',
      default: 'a',
      windows: [
        { playlist: 'b', days: ['mon', 'tue', 'wed', 'thu', 'fri'], start: '08:00', end: '12:00', priority: 1 },
        { playlist: 'c', days: ['sat', 'sun'], start: '10:00', end: '18:00' },
        { playlist: 'c', start: '22:00', end: '02:00', from: '2024-12-01', until: '2024-12-31' },
      ],
    },
  ],
  outputs: [
    { output: 'HDMI-A-1', schedule: 's' },
    { output: 'HDMI-A-2', schedule: 's' },
  ],
});
// Every day the same window and playlist: the search for a change runs to the horizon.
const worst = contentValidate({
  ...base,
  schedules: [
    {
      id: 's',
      timezone: 'America/New_York',
      windows: [
        { id: 'w', playlist: 'a', start: '00:00', end: '24:00' },
        { playlist: 'b', start: '09:00', end: '17:00', priority: -1 },
      ],
    },
  ],
  outputs: [{ output: 'HDMI-A-1', schedule: 's' }],
});

const t0 = Date.parse('2024-10-26T12:00:00Z');
scheduleAt(t0, typical); // warm the Intl formatters
const typicalMs = median(Array.from({ length: runs }, (_, i) => timed(() => scheduleAt(t0 + i * 3_600_000, typical))));
const worstMs = median(
  Array.from({ length: Math.min(runs, 5) }, (_, i) => timed(() => scheduleAt(t0 + i * 86_400_000, worst))),
);

const server = await mediaServerStart();
const { data, sha256 } = randomMedia(megabytes * 1024 * 1024);
server.add('/big.bin', data);
const throughputs: number[] = [];
for (let i = 0; i < 3; i++) {
  const dir = mkdtempSync(join(tmpdir(), 'multihead-bench-cache-'));
  try {
    const cache = new MediaCache({ dir, maxBytes: 2 ** 40, concurrency: 1 });
    await cache.open();
    const start = performance.now();
    const [r] = await cache.ensure([{ id: 'big', url: server.url('/big.bin'), sha256, size: data.length }]);
    const seconds = (performance.now() - start) / 1000;
    if (!r?.ok) throw new Error(JSON.stringify(r));
    throughputs.push(megabytes / seconds);
    await cache.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
await server.close();
const mbps = median(throughputs);

console.log('| measure | median | target |');
console.log('| --- | --- | --- |');
console.log(`| scheduleAt, typical (2 outputs, 3 windows, Europe/Berlin) | ${typicalMs.toFixed(2)} ms | < 5 ms |`);
console.log(`| scheduleAt, worst (no change within ${370} days) | ${worstMs.toFixed(1)} ms | < 200 ms |`);
console.log(
  `| cache: download + sha256 + install, ${megabytes} MiB loopback | ${mbps.toFixed(0)} MiB/s | >= 100 MiB/s |`,
);
console.log(
  `schedule_typical_ms=${typicalMs.toFixed(3)} schedule_worst_ms=${worstMs.toFixed(1)} cache_mib_per_s=${mbps.toFixed(0)}`,
);
process.exitCode = typicalMs < 5 && worstMs < 200 && mbps >= 100 ? 0 : 1;
