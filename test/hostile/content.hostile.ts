// Attacks on content and the clock (issue 11, points 11 and 13): content bigger than the data
// partition, a cache too small for the outgoing and the incoming item, partial downloads left
// behind by a crash, and a wall clock stepped under a running schedule.
import { randomUUID } from 'node:crypto';
import { existsSync, globSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { ContentSync } from '../../src/content/sync-job.ts';
import { loadAddon } from '../../src/native/addon.ts';
import { clipMake } from '../helpers/clips.ts';
import { type MediaServer, mediaServerStart, randomMedia } from '../helpers/media-server.ts';
import type { Received } from '../helpers/mosquitto.ts';
import { until } from '../helpers/supervisor.ts';
import { freeBytes, scratchDir, tmpfsMount } from '../helpers/tmp.ts';
import { HostileBox } from './box.ts';

const MiB = 1024 * 1024;

interface Reply<T> {
  ok: boolean;
  result: T;
  error?: { code: string; message: string };
}
interface ContentStatusLike {
  version: number | null;
  evaluatedAt: string | null;
  outputs: Record<string, { playlist: string | null; state: { kind: string; item?: string; playlist?: string } }>;
  cache: {
    bytes: number;
    limitBytes: number;
    reserveBytes: number;
    orphansCollected: { files: number; bytes: number };
  } | null;
  time: { synchronized: boolean | null; source: string; steps: number; lastStep?: { deltaMs: number } } | null;
}

async function serve(t: ExecutionContext): Promise<MediaServer> {
  const s = await mediaServerStart();
  t.teardown(() => s.close());
  return s;
}

async function playlistSet(box: HostileBox, content: unknown): Promise<Reply<{ version: number; jobId?: string }>> {
  return (await box.request('playlist.set', { args: { content } }, { timeoutMs: 15_000 })).json as Reply<{
    version: number;
    jobId?: string;
  }>;
}

async function contentStatus(box: HostileBox): Promise<ContentStatusLike> {
  const reply = (await box.request('content.status')).json as Reply<ContentStatusLike>;
  if (!reply.ok) throw new Error(`content.status: ${JSON.stringify(reply.error)}`);
  return reply.result;
}

/**
 * Polls content.status until `check` holds: each poll is a real MQTT round trip, 4 a second
 * (under the router's 5/s per command); a rate-limited answer just waits for the next poll.
 */
async function statusUntil(
  box: HostileBox,
  what: string,
  check: (s: ContentStatusLike) => boolean,
  timeoutMs = 15_000,
): Promise<ContentStatusLike> {
  const deadline = Date.now() + timeoutMs;
  let last: Reply<ContentStatusLike> | undefined;
  while (Date.now() < deadline) {
    last = (await box.request('content.status')).json as Reply<ContentStatusLike>;
    if (last.ok && check(last.result)) return last.result;
    if (!last.ok && last.error?.code !== 'ERR_RATE_LIMITED') break;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last content.status: ${JSON.stringify(last)})`);
}

function jobEnd(box: HostileBox, jobId: string): Promise<Received> {
  return box.fleet.next(
    (m) =>
      m.topic === `multihead/${box.id}/jobs/${jobId}` &&
      ['succeeded', 'failed'].includes((m.json as ContentSync)?.state ?? ''),
    20_000,
    `the end of job ${jobId}`,
  );
}

/** Unused media entries: a content document of about `bytes` (to make its own write need room). */
function padding(bytes: number): Array<Record<string, unknown>> {
  const one = 160;
  return Array.from({ length: Math.ceil(bytes / one) }, (_, i) => ({
    id: `pad-${i}`,
    url: `http://127.0.0.1:9/pad-${i}.mp4`,
    sha256: randomMedia(8).sha256,
    size: 1000 + i,
    type: 'video',
  }));
}

test.serial(
  '11 content larger than the free space of a small data partition is refused; config and content writes still succeed',
  async (t) => {
    const dataDir = tmpfsMount(t, '16m', { lazy: true });
    const s = await serve(t);
    const reserve = 2 * MiB;
    const box = await HostileBox.start(t, { dataDir, file: { cache: { reserveBytes: reserve } } });

    const pad = padding(40 * 1024);
    type Doc = ReturnType<typeof randomMedia> | undefined;
    const doc = (version: number, nearlyAll?: Doc, huge?: Doc) => ({
      version,
      media: [
        ...(nearlyAll && huge
          ? [
              {
                id: 'nearly-all',
                url: s.url('/nearly-all.mp4'),
                sha256: nearlyAll.sha256,
                size: nearlyAll.data.length,
                type: 'video',
              },
              { id: 'huge', url: s.url('/huge.mp4'), sha256: huge.sha256, size: huge.data.length, type: 'video' },
            ]
          : []),
        ...pad,
      ],
      playlists: nearlyAll ? [{ id: 'big', items: [{ media: 'nearly-all' }, { media: 'huge' }] }] : [],
      outputs: nearlyAll ? [{ output: 'Virtual-1', playlist: 'big' }] : [],
    });
    // A content document of the same size is already saved, then the media is sized to fit the
    // partition while leaving too little for saving the next content document.
    const first = await playlistSet(box, doc(1));
    t.true(first.ok, JSON.stringify(first));
    const nearlyAll = randomMedia(freeBytes(dataDir) - 24 * 1024);
    const huge = randomMedia(20 * MiB);
    s.add('/nearly-all.mp4', nearlyAll.data);
    s.add('/huge.mp4', huge.data);

    let leastFree = freeBytes(dataDir);
    const sampler = setInterval(() => {
      leastFree = Math.min(leastFree, freeBytes(dataDir));
    }, 5);
    t.teardown(() => clearInterval(sampler));
    const set = await playlistSet(box, doc(2, nearlyAll, huge));
    t.true(set.ok, JSON.stringify(set));
    const end = (await jobEnd(box, set.result.jobId ?? '')).json as ContentSync;
    clearInterval(sampler);
    t.is(end.state, 'failed');
    t.is(end.error?.code, 'ERR_CACHE_LIMIT');
    t.regex(end.error?.message ?? '', /cache\.reserveBytes 2097152/);
    t.deepEqual((end.failures ?? []).map((f) => f.media).sort(), ['huge', 'nearly-all'], 'both refused');
    t.false(
      s.requests.some((r) => r.path === '/huge.mp4' || r.path === '/nearly-all.mp4'),
      'refused before a byte was fetched',
    );
    t.true(leastFree >= reserve, `free space fell to ${leastFree}, under the ${reserve} byte reserve`);

    // The partition is not full: a desired config and a new content document still save.
    const mark = box.fleet.received.length;
    await box.fleet.publish(
      `multihead/${box.id}/config/desired`,
      JSON.stringify({ version: 1, config: { mqtt: { telemetryIntervalS: 30 } } }),
      { retain: true },
    );
    const reported = await until(
      () =>
        box.fleet.received
          .slice(mark)
          .find(
            (m) => m.topic === `multihead/${box.id}/config/reported` && (m.json as { version?: number })?.version === 1,
          ),
      'config/reported for version 1',
      20_000,
    );
    t.not((reported.json as { outcome: string }).outcome, 'rejected', JSON.stringify(reported.json));
    t.true(existsSync(join(dataDir, 'config-desired.json')), 'the desired config is saved on the data partition');
    const again = await playlistSet(box, doc(3));
    t.true(again.ok, JSON.stringify(again));
    t.is(JSON.parse(readFileSync(join(dataDir, 'content.json'), 'utf8')).version, 3);
    const st = await contentStatus(box);
    t.like(st.cache, { reserveBytes: reserve });
    t.true((st.cache?.limitBytes ?? Number.POSITIVE_INFINITY) <= 16 * MiB - reserve);
  },
);

test.serial('11 the item on screen is not evicted while the next one waits for room', async (t) => {
  const s = await serve(t);
  const clips = scratchDir(t);
  // Incompressible frames (different per seed): about 0.55 MiB each, so two never fit a 1 MiB cache.
  const noise = (name: string, seed: number): Buffer =>
    readFileSync(
      clipMake(clips, name, [
        '-f',
        'lavfi',
        '-i',
        `color=c=black:size=128x128:rate=30:duration=0.75,geq=lum='mod(random(1)*255+${seed}*77,256)':cb=128:cr=128`,
        '-c:v',
        'libx264',
        '-preset',
        'ultrafast',
        '-qp',
        '0',
        '-pix_fmt',
        'yuv420p',
      ]),
    );
  const a = s.add('/a.mp4', noise('a.mp4', 1));
  const b = s.add('/b.mp4', noise('b.mp4', 2));
  t.true(a.size + b.size > MiB && a.size < MiB && b.size < MiB, `clips of ${a.size} and ${b.size} bytes`);
  t.not(a.sha256, b.sha256);
  const box = await HostileBox.start(t, { file: { cache: { maxBytes: MiB } } });
  const item = (id: string, f: typeof a) => ({
    id,
    url: s.url(`/${id}.mp4`),
    sha256: f.sha256,
    size: f.size,
    type: 'video',
  });

  const v1 = await playlistSet(box, {
    version: 1,
    media: [item('a', a)],
    playlists: [{ id: 'first', items: [{ media: 'a' }] }],
    outputs: [{ output: 'Virtual-1', playlist: 'first' }],
  });
  t.true(v1.ok, JSON.stringify(v1));
  await statusUntil(box, 'a on Virtual-1', (st) => st.outputs['Virtual-1']?.state.kind === 'playing');
  const aPath = join(box.dataDir, 'cache', 'media', a.sha256);
  t.true(existsSync(aPath));

  // The next content no longer mentions `a`: only the screen still needs it.
  const v2 = await playlistSet(box, {
    version: 2,
    media: [item('b', b)],
    playlists: [{ id: 'second', items: [{ media: 'b' }] }],
    outputs: [{ output: 'Virtual-1', playlist: 'second' }],
  });
  t.true(v2.ok, JSON.stringify(v2));
  const end = (await jobEnd(box, v2.result.jobId ?? '')).json as ContentSync;
  t.is(end.state, 'failed', JSON.stringify(end));
  t.is(end.error?.code, 'ERR_CACHE_LIMIT');
  t.regex(end.error?.message ?? '', /media on screen/);
  t.true(existsSync(aPath), 'the file on screen is still on disk');
  t.is(statSync(aPath).size, a.size);
  const st = await statusUntil(box, 'Virtual-1 waiting for b', (x) => x.outputs['Virtual-1']?.state.kind === 'waiting');
  t.is(st.outputs['Virtual-1']?.state.playlist, 'second');
  // What content shows is still `a`'s file: its decoder runs (frames advance) for the item `a`.
  const decoderOfA = async (): Promise<{ source: string; consumers: string[]; frames: number } | undefined> => {
    const decode = (await box.request('decode.status')).json as Reply<{
      decoders: Array<{ source: string; consumers: string[]; frames: number }>;
    }>;
    if (!decode.ok) throw new Error(JSON.stringify(decode));
    return decode.result.decoders.find((d) => d.source === aPath);
  };
  const first = await decoderOfA();
  t.truthy(first, 'a decoder still reads the file on screen');
  t.true(
    first?.consumers.some((c) => c.endsWith(':a')),
    JSON.stringify(first),
  );
  await until(
    async () => ((await decoderOfA())?.frames ?? 0) > (first?.frames ?? 0),
    'frames of a still advancing',
    5000,
  );
});

test.serial('11 orphaned partial downloads left in the cache before start are collected and counted', async (t) => {
  const dataDir = scratchDir(t);
  const partial = join(dataDir, 'cache', 'partial');
  mkdirSync(partial, { recursive: true });
  const orphan = join(partial, `${randomMedia(8).sha256}.part`);
  writeFileSync(orphan, Buffer.alloc(512 * 1024, 7));
  const stray = join(partial, `${randomUUID()}.tmp`);
  writeFileSync(stray, 'x'.repeat(100));
  const box = await HostileBox.start(t, { dataDir });
  const line = await box.logLine(/orphaned partial download/, 'the collection log line');
  t.like(JSON.parse(line), { orphansCollected: 2, orphanBytesCollected: 512 * 1024 + 100 });
  t.false(existsSync(orphan), 'the orphaned partial is gone');
  t.false(existsSync(stray), 'the stray file is gone');
  const st = await contentStatus(box);
  t.deepEqual(st.cache?.orphansCollected, { files: 2, bytes: 512 * 1024 + 100 });
});

/** libfaketime's multi-threaded preload library (Debian's faketime package). */
function faketimeLibrary(): string {
  const found = globSync('/usr/lib/*/faketime/libfaketimeMT.so.1');
  if (found.length === 0) throw new Error('libfaketimeMT.so.1 not found: install Debian\'s "faketime" package');
  return found[0] as string;
}

const hhmmss = (ms: number): string => new Date(ms).toISOString().slice(11, 19);

test.serial('13 a clock step reschedules at once and status reports the time-sync state', async (t) => {
  const s = await serve(t);
  // The box's wall clock (only its own: libfaketime preloaded) follows the offset in this file;
  // monotonic clocks stay real, as a real step leaves them.
  const offsetFile = join(scratchDir(t), 'faketime');
  writeFileSync(offsetFile, '+0\n');
  const box = await HostileBox.start(t, {
    env: {
      LD_PRELOAD: faketimeLibrary(),
      FAKETIME_TIMESTAMP_FILE: offsetFile,
      FAKETIME_CACHE_DURATION: '1',
      FAKETIME_DONT_FAKE_MONOTONIC: '1',
    },
  });
  const clip = s.add('/lo.mp4', randomMedia(4096).data);
  const clip2 = s.add('/hi.mp4', randomMedia(4096).data);
  const now = Date.now();
  const set = await playlistSet(box, {
    version: 1,
    media: [
      { id: 'lo', url: s.url('/lo.mp4'), sha256: clip.sha256, size: clip.size, type: 'video' },
      { id: 'hi', url: s.url('/hi.mp4'), sha256: clip2.sha256, size: clip2.size, type: 'video' },
    ],
    playlists: [
      { id: 'default', items: [{ media: 'lo' }] },
      { id: 'later', items: [{ media: 'hi' }] },
    ],
    schedules: [
      {
        id: 'day',
        timezone: 'UTC',
        default: 'default',
        windows: [{ id: 'later', playlist: 'later', start: hhmmss(now + 30 * 60_000), end: hhmmss(now + 90 * 60_000) }],
      },
    ],
    outputs: [{ output: 'Virtual-1', schedule: 'day' }],
  });
  t.true(set.ok, JSON.stringify(set));
  const before = await statusUntil(box, 'the default playlist', (x) => x.outputs['Virtual-1']?.playlist === 'default');
  t.like(before.time, { steps: 0, source: 'adjtimex' });
  // The box reports what the kernel says (read here through the same adjtimex call).
  t.is(before.time?.synchronized, loadAddon().clockState().synchronized);

  writeFileSync(offsetFile, '+40m\n'); // into the window; its timer is still 30 minutes away
  const after = await statusUntil(
    box,
    'the window playlist right after the step',
    (x) => x.outputs['Virtual-1']?.playlist === 'later',
    8000,
  );
  t.is(after.time?.steps, 1);
  t.true(Math.abs((after.time?.lastStep?.deltaMs ?? 0) - 40 * 60_000) < 5000, JSON.stringify(after.time));
  await box.logLine(/the clock was stepped by \d+ ms: schedules re-evaluated/, 'the step log line');
  // The retained status document carries it too.
  const status = await box.fleet.next(
    (m) =>
      m.topic === `multihead/${box.id}/status` && ((m.json as { time?: { steps: number } })?.time?.steps ?? 0) >= 1,
    10_000,
    'a status document with the step',
  );
  t.like((status.json as { time: object }).time, { source: 'adjtimex', steps: 1 });
});
