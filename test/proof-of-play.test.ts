import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { configLoad } from '../src/config/load.ts';
import type { PlayProof } from '../src/content/proof-log.ts';
import { ScreensPlayer } from '../src/content/screens-player.ts';
import { virtualScreens } from '../src/display/screens.ts';
import { contentCreateWith } from '../src/extensions/content.ts';
import { loggingCreate } from '../src/log/logger.ts';
import { loadAddon } from '../src/native/addon.ts';
import { EventBus } from '../src/supervisor/bus.ts';
import { CommandRegistry } from '../src/supervisor/commands.ts';
import { clipMake, counterClip } from './helpers/clips.ts';
import { mediaServerStart } from './helpers/media-server.ts';
import { FleetClient, mosquittoStart } from './helpers/mosquitto.ts';
import { tcpProxyStart } from './helpers/tcp-proxy.ts';
import { scratchDir, writeJson } from './helpers/tmp.ts';

const BIN = new URL('../bin/multihead', import.meta.url).pathname;

const addon = loadAddon();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const SIZE = 64;
const FRAME_MS = 1000 / 60;
/**
 * How late an item may end here. Never short is the rule; late is how far JavaScript's switch
 * (a timer for an image, a 40 ms look at the decoder's loop count for a video) falls behind on
 * a machine this loaded: 0-17 ms on a quiet one, up to 67 ms seen under a load of 8 while CI
 * built images beside it. An item shown twice as long (a missed switch) still fails.
 */
const LATE_MS = 250;

const clipDir = mkdtempSync(join(tmpdir(), 'multihead-proof-clips-'));
test.after.always(() => rmSync(clipDir, { recursive: true, force: true }));
// 30 frames at 30 fps: one second.
const clip = readFileSync(counterClip(clipDir, 'clip.mp4', `${SIZE}x${SIZE}`, '64+2*N'));
const still = readFileSync(
  clipMake(clipDir, 'still.png', ['-f', 'lavfi', '-i', `color=c=gray:size=${SIZE}x${SIZE}`, '-frames:v', '1']),
);

/** The content extension on one 64x64 virtual output at 60 Hz, its data under a scratch directory. */
function rig(t: ExecutionContext) {
  const dataDir = scratchDir(t);
  const outputs = [{ connector: 'Virtual-1', mode: `${SIZE}x${SIZE}@60` }];
  const config = configLoad({
    env: { MULTIHEAD_DATA_DIR: dataDir, MULTIHEAD_OUTPUTS: JSON.stringify(outputs) },
    defaultPath: '/nonexistent/config.json',
  }).config;
  const logging = loggingCreate({ level: 'info', ringSize: 100, sink: { write: () => {} } });
  const commands = new CommandRegistry();
  const decode = new addon.DecodeManager({});
  const display = new addon.VirtualDisplay([{ name: 'Virtual-1', width: SIZE, height: SIZE }]);
  const extension = contentCreateWith(
    { config, logger: logging.logger, bus: new EventBus(() => {}), commands, addon, logRing: logging.ring },
    {
      playerCreate: () =>
        new ScreensPlayer({
          decode,
          screens: virtualScreens(display, [{ name: 'Virtual-1', width: SIZE, height: SIZE, refresh: 60 }]),
          deviceName: 'lobby',
          prerollTimeoutMs: 20_000,
        }),
    },
  );
  t.teardown(async () => {
    await extension.stop();
    display.close();
    decode.close();
  });
  const get = async (args: Record<string, unknown>) => {
    const reply = await commands.invoke('proofOfPlay.get', args, { transport: 'internal' });
    if (!reply.ok) throw new Error(`${reply.error.code}: ${reply.error.message}`);
    return reply.result as { plays: PlayProof[]; more: boolean; seq: number };
  };
  return { extension, commands, get, dataDir };
}

async function until<T>(what: string, check: () => Promise<T | undefined>, ms = 45_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const found = await check();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

test.serial(
  'a looping playlist of an image and a video: every pass of each item is recorded from its own vblanks, for its full length',
  async (t) => {
    const server = await mediaServerStart();
    t.teardown(() => server.close());
    const v = server.add('/clip.mp4', clip);
    const s = server.add('/still.png', still);
    const r = rig(t);
    await r.extension.start();
    const reply = await r.commands.invoke(
      'playlist.set',
      {
        content: {
          version: 1,
          media: [
            { id: 'clip', url: server.url('/clip.mp4'), sha256: v.sha256, size: v.size, type: 'video' },
            {
              id: 'still',
              url: server.url('/still.png'),
              sha256: s.sha256,
              size: s.size,
              type: 'image',
              duration: 2,
            },
          ],
          playlists: [{ id: 'loop', items: [{ media: 'still' }, { media: 'clip' }] }],
          outputs: [{ output: 'Virtual-1', playlist: 'loop' }],
        },
      },
      { transport: 'internal' },
    );
    t.true(reply.ok, JSON.stringify(reply));
    // Four passes of each. The image shows 2 s: long enough for the clip after it to be
    // prerolled on a loaded machine (under a load of 8, a 0.5 s image stayed 717 ms while the
    // clip's first frame was still being decoded: an item is never cut, it waits).
    const { plays } = await until('8 records', async () => {
      const got = await r.get({});
      return got.plays.length >= 8 ? got : undefined;
    });
    t.deepEqual(
      plays.map((p) => p.seq),
      plays.map((_, i) => i + 1),
      'numbered 1, 2, 3, ... with no gap',
    );
    const late = plays.map((p) => p.durationMs - (p.media === 'still' ? 2000 : 1000));
    t.log(`ends late by ${late.map((l) => l.toFixed(1)).join(', ')} ms`);
    for (const [i, p] of plays.entries()) {
      const what = `record ${p.seq} (${p.media}, ${p.durationMs} ms, ${p.frames} frames, ${p.end})`;
      t.is(p.output, 'Virtual-1');
      t.is(p.playlist, 'loop');
      t.is(p.media, i % 2 === 0 ? 'still' : 'clip', `${what}: items alternate`);
      t.true(p.complete, `${what} ran to its end`);
      t.is(p.end, 'replaced', what);
      t.true(Date.parse(p.endedAt) >= Date.parse(p.startedAt), what);
      if (p.media === 'still') {
        t.is(p.digest, s.sha256);
        t.true(p.durationMs >= 2000 - FRAME_MS - 0.1, `${what}: never short of 2000 ms by more than a frame`);
        t.true(p.durationMs <= 2000 + LATE_MS, `${what}: not over 2000 ms by more than ${LATE_MS} ms`);
      } else {
        t.is(p.digest, v.sha256);
        // ± one frame, as its length: a vblank thread held up by this machine skips one.
        t.true(p.frames >= 29 && p.frames <= 30, `${what}: the clip's 30 frames, ± one`);
        t.true(p.durationMs >= 1000 - FRAME_MS - 0.1, `${what}: never short of 1000 ms by more than a frame`);
        t.true(p.durationMs <= 1000 + LATE_MS, `${what}: not over 1000 ms by more than ${LATE_MS} ms`);
      }
      const next = plays[i + 1];
      if (next) {
        // Gapless: the next item's first vblank is the one after this one's last.
        const gap = Date.parse(next.startedAt) - Date.parse(p.endedAt);
        t.true(Math.abs(gap - FRAME_MS) <= 2, `${what}: next starts ${gap} ms after its last vblank`);
      }
    }
  },
);

test('proofOfPlay.get names a bad argument', async (t) => {
  const r = rig(t);
  await r.extension.start();
  for (const [args, pattern] of [
    [{ from: 'yesterday' }, /from: "yesterday" is not an ISO 8601 time/],
    [{ afterSeq: -1 }, /afterSeq: -1 is not a whole number/],
    [{ limit: 5000 }, /limit: 5000 is not a whole number from 1 to 1000/],
    [{ afterSeq: 1, from: '2026-01-01T00:00:00Z' }, /either afterSeq or from\/to/],
    [{ to: '2026-01-01T00:00:00Z', from: '2026-02-01T00:00:00Z' }, /to must be later than from/],
    [{ path: '/etc' }, /unknown argument "path"/],
  ] as const) {
    const reply = await r.commands.invoke('proofOfPlay.get', { ...args }, { transport: 'internal' });
    t.false(reply.ok, JSON.stringify(args));
    if (!reply.ok) {
      t.is(reply.error.code, 'ERR_BAD_ARGUMENT');
      t.regex(reply.error.message, pattern);
    }
  }
  t.deepEqual(await r.get({}), { plays: [], more: false, seq: 0, oldestSeq: null } as never);
});

/**
 * The real supervisor process against a real broker behind a proxy: the network goes away,
 * the process is killed with SIGKILL while it has records the fleet never got, and it starts
 * again with the network back. The fleet must get every record, in order, once its `seq` is
 * taken into account.
 */
test.serial(
  'proof of play across a broker outage and kill -9: every played item reaches the fleet, in order, none lost; an interrupt survives the kill',
  async (t) => {
    const broker = await mosquittoStart(t);
    const proxy = await tcpProxyStart(t, broker.port);
    const server = await mediaServerStart();
    t.teardown(() => server.close());
    const v = server.add('/clip.mp4', clip);
    const s = server.add('/still.png', still);
    const dataDir = scratchDir(t);
    writeJson(dataDir, 'content.json', {
      version: 1,
      media: [
        { id: 'clip', url: server.url('/clip.mp4'), sha256: v.sha256, size: v.size, type: 'video' },
        { id: 'still', url: server.url('/still.png'), sha256: s.sha256, size: s.size, type: 'image', duration: 0.4 },
      ],
      playlists: [{ id: 'loop', items: [{ media: 'still' }, { media: 'clip' }] }],
      outputs: [{ output: 'Virtual-1', playlist: 'loop' }],
    });
    const env = {
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MULTIHEAD_'))),
      MULTIHEAD_CONFIG: writeJson(dataDir, 'config.json', {}),
      MULTIHEAD_DATA_DIR: dataDir,
      MULTIHEAD_DISPLAY_DEVICE: '/dev/dri/card99',
      MULTIHEAD_DEVICE_ID: 'pop-box',
      MULTIHEAD_MQTT_URL: proxy.url,
    };
    const fleet = await FleetClient.connect(t, broker.url);
    await fleet.subscribe('multihead/pop-box/proofOfPlay', 'multihead/replies/test/#');
    const received = (): PlayProof[] =>
      fleet.received.flatMap((m) => (m.json as { plays: PlayProof[] } | undefined)?.plays ?? []);
    const newest = (): number => Math.max(0, ...received().map((p) => p.seq));
    const logFile = join(dataDir, 'proof-of-play', 'log.jsonl');
    const onDisk = (): PlayProof[] =>
      existsSync(logFile)
        ? readFileSync(logFile, 'utf8')
            .split('\n')
            .filter((l) => l !== '')
            .map((l) => JSON.parse(l) as PlayProof)
        : [];

    const spawnBox = () => {
      const child = spawn(BIN, [], { env, stdio: 'ignore' });
      t.teardown(() => child.kill('SIGKILL'));
      return child;
    };
    const first = spawnBox();
    await until('4 records at the fleet', async () => (newest() >= 4 ? true : undefined));
    // A message on the output the content does not use, for ten minutes: it must outlive the kill.
    await fleet.publish(
      'multihead/pop-box/cmd/interrupt',
      JSON.stringify({
        id: 'i1',
        replyTo: 'multihead/replies/test/1',
        args: { text: 'Evacuate', outputs: ['Virtual-2'], id: 'fire', durationS: 600 },
      }),
    );
    const answer = await fleet.next((m) => m.topic === 'multihead/replies/test/1/pop-box', 30_000, 'the reply');
    t.true((answer.json as { ok: boolean }).ok, answer.text);
    await until('the interrupt on screen, saved as on screen', async () =>
      readFileSync(join(dataDir, 'proof-of-play', 'open.json'), 'utf8').includes('"interrupt":"fire"')
        ? true
        : undefined,
    );

    proxy.cut();
    const cutAt = onDisk().length;
    await until('4 more records on the box while the broker is away', async () =>
      onDisk().length >= cutAt + 4 ? true : undefined,
    );
    t.true(newest() < onDisk().length, 'records the fleet has not got are waiting on the box');
    const killed = new Promise((resolve) => first.once('exit', resolve));
    first.kill('SIGKILL');
    await killed;
    const atKill = onDisk().length;

    proxy.restore();
    const second = spawnBox();
    await until(`the fleet to get records past ${atKill + 3}`, async () => (newest() >= atKill + 3 ? true : undefined));
    // The interrupt is back after the kill, shown again from the box's own records.
    await until('the interrupt on screen again', async () =>
      readFileSync(join(dataDir, 'proof-of-play', 'open.json'), 'utf8').includes('"interrupt":"fire"')
        ? true
        : undefined,
    );
    const stopped = new Promise((resolve) => second.once('exit', resolve));
    second.kill('SIGTERM');
    t.is(await stopped, 0);
    const fire = onDisk().filter((p) => p.interrupt === 'fire');
    t.deepEqual(
      fire.map((p) => [p.output, p.media, p.end]),
      [
        ['Virtual-2', 'text', 'restart'],
        ['Virtual-2', 'text', 'stopped'],
      ],
      'the interrupt: cut by the kill, shown again until the stop',
    );

    const fleetPlays = received();
    const bySeq = new Map<number, PlayProof>();
    for (const p of fleetPlays) {
      const seen = bySeq.get(p.seq);
      if (seen) t.deepEqual(p, seen, `seq ${p.seq} sent twice must be the same record`);
      bySeq.set(p.seq, p);
    }
    const seqs = [...bySeq.keys()].sort((a, b) => a - b);
    t.deepEqual(
      seqs,
      seqs.map((_, i) => i + 1),
      'every seq from 1 on, no gap',
    );
    // Everything the box recorded up to the fleet's newest reached it.
    const disk = onDisk().filter((p) => p.seq <= (seqs.at(-1) ?? 0));
    t.deepEqual(
      disk.map((p) => bySeq.get(p.seq)),
      disk,
    );
    const ordered = seqs.map((q) => bySeq.get(q) as PlayProof);
    // In order: on each output, each play started after the one before it ended.
    for (const output of ['Virtual-1', 'Virtual-2']) {
      const on = ordered.filter((p) => p.output === output);
      for (const [i, p] of on.entries()) {
        const before = on[i - 1];
        if (before)
          t.true(
            Date.parse(p.startedAt) >= Date.parse(before.endedAt),
            `${output}: seq ${p.seq} started after seq ${before.seq} ended`,
          );
      }
    }
    // What was on screen at the kill is there, ended by the restart, not complete: an item of
    // the playlist and the interrupt.
    const cut = ordered.filter((p) => p.end === 'restart');
    t.deepEqual(cut.map((p) => p.output).sort(), ['Virtual-1', 'Virtual-2'], JSON.stringify(cut));
    t.true(cut.every((p) => !p.complete));
    t.true(
      ordered.filter((p) => p.end === 'replaced' && p.output === 'Virtual-1').every((p) => p.complete),
      'every other play of the playlist ran to its end',
    );
    t.log(
      `records ${seqs.length}, sent twice ${fleetPlays.length - bySeq.size}, recorded during the outage ${atKill - cutAt}`,
    );
  },
);
