import { randomUUID } from 'node:crypto';
import test, { type ExecutionContext } from 'ava';
import type { ContentSync } from '../src/content/sync-job.ts';
import { contentCreateWith } from '../src/extensions/content.ts';
import type { ExtensionDefinition } from '../src/supervisor/extension.ts';
import { assertEveryMessageValid } from './helpers/contract-check.ts';
import { type MediaServer, mediaServerStart, randomMedia } from './helpers/media-server.ts';
import { FleetClient, mosquittoStart, type Received } from './helpers/mosquitto.ts';
import { deviceStart } from './helpers/mqtt-device.ts';

/** The content extension with quick retries and frequent progress; no player (nothing to show on). */
const content: ExtensionDefinition = {
  name: 'content',
  create: (context) =>
    contentCreateWith(context, {
      playerCreate: () => undefined,
      retry: { attempts: 2, baseMs: 5, maxMs: 10 },
      syncProgressEveryMs: 50,
    }),
};

async function serve(t: ExecutionContext): Promise<MediaServer> {
  const s = await mediaServerStart();
  t.teardown(() => s.close());
  return s;
}

async function rig(t: ExecutionContext) {
  const broker = await mosquittoStart(t);
  const device = await deviceStart(t, { url: broker.url, before: [content] });
  const fleet = await FleetClient.connect(t, broker.url);
  await fleet.subscribe('multihead/#');
  await fleet.next((m) => m.topic === 'multihead/dev-1/state' && (m.json as { state: string }).state === 'online');
  return { broker, device, fleet };
}

async function playlistSet(fleet: FleetClient, doc: unknown): Promise<Received> {
  const replyTo = `multihead/replies/fleet/${randomUUID()}`;
  await fleet.publish('multihead/dev-1/cmd/playlist.set', JSON.stringify({ replyTo, args: { content: doc } }));
  return fleet.next((m) => m.topic === `${replyTo}/dev-1`, 5000, 'the playlist.set reply');
}

const jobDocs = (fleet: FleetClient, jobId: string): ContentSync[] =>
  fleet.on(`multihead/dev-1/jobs/${jobId}`).map((m) => m.json as ContentSync);

test('playlist.set starts a content sync job: accepted, in_progress with bytes, then succeeded, retained', async (t) => {
  const s = await serve(t);
  const a = randomMedia(64 * 1024);
  const b = randomMedia(200 * 1024);
  s.add('/a.mp4', a.data);
  // Slow enough for several progress documents.
  s.add('/b.mp4', b.data, [], { kind: 'slow', chunk: 16 * 1024, everyMs: 25 });
  const { broker, fleet } = await rig(t);
  const doc = {
    version: 4,
    media: [
      { id: 'a', url: s.url('/a.mp4'), sha256: a.sha256, size: a.data.length, type: 'video' },
      { id: 'b', url: s.url('/b.mp4'), sha256: b.sha256, size: b.data.length, type: 'video' },
    ],
    playlists: [{ id: 'main', items: [{ media: 'a' }, { media: 'b' }] }],
    outputs: [{ output: 'Virtual-1', playlist: 'main' }],
  };
  const reply = await playlistSet(fleet, doc);
  t.like(reply.json, { ok: true, result: { version: 4 } });
  const jobId = (reply.json as { result: { jobId: string } }).result.jobId;
  t.regex(jobId, /^content-4-[0-9a-f]{8}$/);
  const topic = `multihead/dev-1/jobs/${jobId}`;
  const done = await fleet.next(
    (m) => m.topic === topic && (m.json as ContentSync).state !== 'accepted' && !inProgress(m),
    10_000,
    'the end of the job',
  );
  t.like(done.json, {
    state: 'succeeded',
    operation: 'content.sync',
    version: 4,
    items: 2,
    itemsDone: 2,
    bytesDone: a.data.length + b.data.length,
    bytesTotal: a.data.length + b.data.length,
    percent: 100,
  });
  t.true(done.retain === false, 'a live subscriber gets it as a normal message');
  const docs = jobDocs(fleet, jobId);
  const states = docs.map((d) => d.state);
  t.is(states[0], 'accepted');
  t.is(states.at(-1), 'succeeded');
  t.is(states.filter((x) => x === 'succeeded' || x === 'failed').length, 1, 'a job ends exactly once');
  const progress = docs.filter((d) => d.state === 'in_progress');
  t.true(progress.length >= 2, `${progress.length} in_progress documents`);
  t.true(
    progress.some((d) => d.percent > 0 && d.percent < 100),
    'progress in between',
  );
  for (let i = 1; i < docs.length; i++) {
    t.true((docs[i]?.bytesDone ?? 0) >= (docs[i - 1]?.bytesDone ?? 0), 'bytes never go back');
  }
  // The job stays retained (with an expiry) for a dashboard that looks later.
  const late = await FleetClient.connect(t, broker.url);
  await late.subscribe('multihead/dev-1/jobs/+');
  const retained = await late.next((m) => m.topic === topic);
  t.true(retained.retain);
  t.like(retained.json, { state: 'succeeded' });
  t.true((retained.packet.properties?.messageExpiryInterval ?? 0) > 86_000, 'retained job documents expire');

  // The same content again: everything is cached, the job succeeds at once.
  const again = await playlistSet(fleet, { ...doc, version: 5 });
  const againId = (again.json as { result: { jobId: string } }).result.jobId;
  const quick = await fleet.next(
    (m) => m.topic === `multihead/dev-1/jobs/${againId}` && (m.json as ContentSync).state === 'succeeded',
  );
  t.like(quick.json, { version: 5, items: 2, itemsDone: 2, percent: 100 });
  t.deepEqual(
    jobDocs(fleet, againId).map((d) => d.state),
    ['accepted', 'succeeded'],
  );
  const counts = assertEveryMessageValid(t, fleet.received, { expect: ['State', 'Job', 'CommandReply'] });
  t.true((counts.Job ?? 0) >= 5);
});

const inProgress = (m: Received): boolean => (m.json as ContentSync).state === 'in_progress';

test('a job whose media cannot be fetched fails with the cache error code and every failed item', async (t) => {
  const s = await serve(t);
  const good = randomMedia(10_000);
  s.add('/good.mp4', good.data);
  const missing = randomMedia(5000);
  const corrupt = randomMedia(6000);
  s.add('/corrupt.mp4', corrupt.data, [], { kind: 'corrupt' });
  const { fleet } = await rig(t);
  const reply = await playlistSet(fleet, {
    version: 2,
    media: [
      { id: 'good', url: s.url('/good.mp4'), sha256: good.sha256, size: good.data.length, type: 'video' },
      { id: 'gone', url: s.url('/gone.mp4'), sha256: missing.sha256, size: missing.data.length, type: 'video' },
      { id: 'bad', url: s.url('/corrupt.mp4'), sha256: corrupt.sha256, size: corrupt.data.length, type: 'video' },
    ],
    playlists: [{ id: 'main', items: [{ media: 'good' }, { media: 'gone' }, { media: 'bad' }] }],
    outputs: [{ output: 'Virtual-1', playlist: 'main' }],
  });
  t.like(reply.json, { ok: true });
  const jobId = (reply.json as { result: { jobId: string } }).result.jobId;
  const failed = await fleet.next(
    (m) => m.topic === `multihead/dev-1/jobs/${jobId}` && (m.json as ContentSync).state === 'failed',
    10_000,
    'the failed job',
  );
  const body = failed.json as ContentSync;
  t.like(body, { items: 3, itemsDone: 1, bytesTotal: good.data.length + missing.data.length + corrupt.data.length });
  t.regex(body.error?.code ?? '', /^ERR_CACHE_/);
  t.regex(body.error?.message ?? '', /^2 of 3 media not cached; first: /);
  t.deepEqual((body.failures ?? []).map((f) => [f.media, f.code]).sort(), [
    ['bad', 'ERR_CACHE_CHECKSUM'],
    ['gone', 'ERR_CACHE_NOT_FOUND'],
  ]);
  t.is(
    jobDocs(fleet, jobId).filter((d) => d.state === 'failed' || d.state === 'succeeded').length,
    1,
    'a job ends exactly once',
  );
  assertEveryMessageValid(t, fleet.received, { expect: ['State', 'Job', 'CommandReply'] });
});

test('job documents made while the broker is away are published after reconnecting (newest per job)', async (t) => {
  const s = await serve(t);
  const m = randomMedia(4096);
  s.add('/m.mp4', m.data);
  const { broker, device, fleet } = await rig(t);
  await broker.stop();
  const reply = await device.controller.commands.invoke(
    'playlist.set',
    {
      content: {
        version: 9,
        media: [{ id: 'm', url: s.url('/m.mp4'), sha256: m.sha256, size: m.data.length, type: 'video' }],
        playlists: [{ id: 'p', items: [{ media: 'm' }] }],
        outputs: [{ output: 'Virtual-1', playlist: 'p' }],
      },
    },
    { transport: 'internal' },
  );
  t.true(reply.ok);
  const jobId = (reply as { result: { jobId: string } }).result.jobId;
  await new Promise((r) => setTimeout(r, 300));
  await broker.start();
  const late = await FleetClient.connect(t, broker.url);
  await late.subscribe('multihead/#');
  const doc = await late.next((x) => x.topic === `multihead/dev-1/jobs/${jobId}`, 5000, 'the job after reconnect');
  t.like(doc.json, { state: 'succeeded', version: 9, itemsDone: 1 });
  t.is(late.on(`multihead/dev-1/jobs/${jobId}`).length, 1, 'only the newest document of the job waited');
  assertEveryMessageValid(t, [...fleet.received, ...late.received], { expect: ['State', 'Job'] });
});
