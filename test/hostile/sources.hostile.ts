// Attacks on what reaches FFmpeg (issue 11, point 2): `play` over MQTT and content media URLs
// against the real supervisor. Only media files inside the media directories and http(s)/rtsp(s)
// URLs may be opened; FFmpeg's other protocols, lavfi graphs and paths out are refused, and the
// refusal is checked where it shows: on the broker, on disk, on a socket, on a FIFO.
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import {
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { clipMake, counterClip, filesServe, hlsPlaylist, tsClip } from '../helpers/clips.ts';
import { dialCounter } from '../helpers/dial-counter.ts';
import { until } from '../helpers/supervisor.ts';
import { scratchDir } from '../helpers/tmp.ts';
import { HostileBox } from './box.ts';

interface Reply {
  ok: boolean;
  result?: Record<string, unknown>;
  error?: { code: string; message: string };
}

interface Decoder {
  source: string;
  consumers: string[];
  frames: number;
}

/** A v5 request with a fresh reply topic; the reply is taken on that topic or below it. */
async function ask(box: HostileBox, command: string, args: Record<string, unknown> = {}): Promise<Reply> {
  const replyTopic = `multihead/replies/fleet/${randomUUID()}`;
  await box.fleet.subscribe(replyTopic, `${replyTopic}/#`);
  await box.fleet.publish(`multihead/${box.id}/cmd/${command}`, JSON.stringify({ args }), {
    properties: { responseTopic: replyTopic },
  });
  const reply = await box.fleet.next(
    (m) => m.topic === replyTopic || m.topic.startsWith(`${replyTopic}/`),
    15_000,
    `reply to ${command}`,
  );
  return reply.json as Reply;
}

async function decoders(box: HostileBox): Promise<Decoder[]> {
  const reply = await ask(box, 'decode.status');
  if (!reply.ok) throw new Error(`decode.status failed: ${JSON.stringify(reply.error)}`);
  return (reply.result as unknown as { decoders: Decoder[] }).decoders;
}

/** Only the built-in demo decodes: nothing a refused source named reached a screen. */
async function onlyTheDemo(t: ExecutionContext, box: HostileBox): Promise<void> {
  const sources = (await decoders(box)).map((d) => d.source);
  t.true(sources.length > 0 && sources.every((s) => s.startsWith('pattern:testcard?')), JSON.stringify(sources));
}

async function refused(t: ExecutionContext, box: HostileBox, source: string): Promise<void> {
  const reply = await ask(box, 'play', { source });
  t.is(reply.ok, false, `${source} was played`);
  t.is(reply.error?.code, 'ERR_SOURCE_NOT_ALLOWED', `${source}: ${JSON.stringify(reply.error)}`);
  t.regex(reply.error?.message ?? '', /allowed: a media file name or a path inside .*http:\/\/ or https:\/\//, source);
}

/** The box with `<dataDir>/media` made. */
async function boxWithMedia(t: ExecutionContext): Promise<{ box: HostileBox; media: string }> {
  const dataDir = scratchDir(t);
  const media = join(dataDir, 'media');
  mkdirSync(media);
  return { box: await HostileBox.start(t, { dataDir }), media };
}

test('2 lavfi:movie= naming a secret file is refused over MQTT and the file never reaches a screen', async (t) => {
  const { box } = await boxWithMedia(t);
  const secret = clipMake(scratchDir(t), 'secret.png', [
    '-f',
    'lavfi',
    '-i',
    'color=c=white:size=64x64',
    '-frames:v',
    '1',
  ]);
  for (const source of [
    `lavfi:movie=${secret}`,
    `lavfi:movie=${secret},scale=1280:720`,
    `lavfi:testsrc2,movie=${secret}`,
    `lavfi:mov\\ie=${secret}`,
  ]) {
    await refused(t, box, source);
  }
  await onlyTheDemo(t, box);
});

test('2 lavfi psnr=stats_file= is refused and the named file is not created', async (t) => {
  const { box } = await boxWithMedia(t);
  // Where the supervisor may write: next to its state, config and secrets.
  const targets = ['psnr-a.log', 'psnr-b.log', 'ssim.log'].map((name) => box.path(name));
  await refused(t, box, `lavfi:testsrc2[a];testsrc2[b];[a][b]psnr=stats_file=${targets[0]}`);
  await refused(t, box, `lavfi:testsrc2,split[a][b];[a][b]psnr=stats_file=${targets[1]}`);
  await refused(t, box, `lavfi:testsrc2,split[a][b];[a][b]ssim=stats_file=${targets[2]}`);
  for (const target of targets) t.false(existsSync(target), `${target} was created`);
  await onlyTheDemo(t, box);
});

test('2 file:, concat:, subfile:, pipe:, tcp: and data: sources are refused and open nothing', async (t) => {
  const { box } = await boxWithMedia(t);
  const clip = counterClip(scratchDir(t), 'outside.mp4', '64x64');
  const { port, dialled } = await dialCounter(t);
  for (const source of [
    'file:/etc/passwd',
    `file:${clip}`,
    `concat:${clip}|${clip}`,
    `subfile,,start,0,end,0,,:${clip}`,
    'pipe:0',
    `tcp://127.0.0.1:${port}`,
    `data:video/mp2t;base64,${Buffer.from('x').toString('base64')}`,
  ]) {
    await refused(t, box, source);
  }
  t.is(dialled(), 0, 'the box dialled out');
  await onlyTheDemo(t, box);
});

test('2 paths out of the media directory are refused: absolute, "..", and a symlink out', async (t) => {
  const { box, media } = await boxWithMedia(t);
  const outside = counterClip(box.dataDir, 'outside.mp4', '64x64');
  symlinkSync(outside, join(media, 'link.mp4'));
  symlinkSync(box.dataDir, join(media, 'up'));
  for (const source of [
    outside,
    '/etc/passwd',
    '../outside.mp4',
    `${media}/../outside.mp4`,
    'link.mp4',
    join(media, 'link.mp4'),
    'up/outside.mp4',
  ]) {
    await refused(t, box, source);
  }
  await onlyTheDemo(t, box);
});

/** Plays `source` while watching whether anything opens `fifo` for reading (a blocked open counts). */
async function fifoOpenedDuring(
  box: HostileBox,
  fifo: string,
  source: string,
): Promise<{ reply: Reply; opened: boolean }> {
  let opened = false;
  let watching = true;
  const watch = (async () => {
    while (watching) {
      try {
        // Succeeds only while a reader has the FIFO open (or waits in open() for a writer).
        closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
        opened = true;
      } catch {
        // ENXIO: no reader.
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  })();
  const reply = await ask(box, 'play', { source });
  watching = false;
  await watch;
  return { reply, opened };
}

test('2 an HLS playlist whose segment is a file: URL (or a local path) does not read that file', async (t) => {
  const { box, media } = await boxWithMedia(t);
  const fifo = join(scratchDir(t), 'secret.ts');
  const made = spawnSync('mkfifo', [fifo]);
  t.is(made.status, 0, `mkfifo: ${made.stderr}`);
  const server = await filesServe(t, { '/live.m3u8': hlsPlaylist(`file:${fifo}`) });
  const remote = await fifoOpenedDuring(box, fifo, server.url('/live.m3u8'));
  t.true(server.requests.includes('/live.m3u8'), 'the playlist was fetched');
  t.false(remote.reply.ok, JSON.stringify(remote.reply));
  t.false(remote.opened, 'the file: segment of a remote playlist was opened');
  // The same list as a media file (or a downloaded one in the cache): a file is a plain container.
  writeFileSync(join(media, 'list.m3u8'), hlsPlaylist(fifo));
  const local = await fifoOpenedDuring(box, fifo, join(media, 'list.m3u8'));
  t.false(local.reply.ok, JSON.stringify(local.reply));
  t.false(local.opened, 'a segment of a local playlist was opened');
  await onlyTheDemo(t, box);
});

test('2 a content playlist with a file: media URL is refused, and nothing is fetched or saved', async (t) => {
  const { box } = await boxWithMedia(t);
  const content = (url: string) => ({
    version: 7,
    media: [{ id: 'm', url, sha256: 'a'.repeat(64), size: 100, type: 'video' }],
    playlists: [{ id: 'p', items: [{ media: 'm' }] }],
    outputs: [{ output: 'Virtual-1', playlist: 'p' }],
  });
  for (const url of ['file:///etc/passwd', 'http:///etc/passwd', 'ftp://host/a.mp4', 'HTTP://host/a.mp4']) {
    const reply = await ask(box, 'playlist.set', { content: content(url) });
    t.is(reply.ok, false, url);
    t.is(reply.error?.code, 'ERR_CONTENT_INVALID', `${url}: ${JSON.stringify(reply.error)}`);
    t.regex(reply.error?.message ?? '', /\$\.media\[0\]\.url: .*https?:\/\//, url);
  }
  t.false(existsSync(box.path('content.json')), 'refused content was saved');
  await onlyTheDemo(t, box);
});

test('2 the allowed kinds still play: a media name, an http URL and HLS over http', async (t) => {
  const { box, media } = await boxWithMedia(t);
  const named = counterClip(media, 'clip.mp4', '64x64');
  const server = await filesServe(t, {
    '/clip.ts': readFileSync(tsClip(scratchDir(t))),
    '/live.m3u8': hlsPlaylist('clip.ts'),
  });
  for (const [source, opened] of [
    ['clip.mp4', named],
    [server.url('/clip.ts'), server.url('/clip.ts')],
    [server.url('/live.m3u8'), server.url('/live.m3u8')],
  ] as const) {
    const reply = await ask(box, 'play', { source, outputs: ['Virtual-1'] });
    t.true(reply.ok, `${source}: ${JSON.stringify(reply.error)}`);
    t.is(reply.result?.source, opened);
    await until(
      async () => (await decoders(box)).find((d) => d.source === opened && d.frames > 0),
      `frames from ${source}`,
      10_000,
    );
  }
});
