// Issue 12, points 1 and 3 on the supervisor side, each unit against fakes of its neighbours (a
// decode manager and screens that only record): a source is switched to only once it has a
// picture, a failure later is told once (bus, MQTT event, health, status) and the outputs get
// something else after the hold, never black.
import test from 'ava';
import { configLoad } from '../src/config/load.ts';
import type { Screens } from '../src/display/screens.ts';
import { VideoEvents } from '../src/display/video-events.ts';
import { loggingCreate } from '../src/log/logger.ts';
import { type DeviceEvent, eventSourcesAttach } from '../src/mqtt/events.ts';
import type { DecodeManager, DecoderInfo, DisplayEvent } from '../src/native/addon.ts';
import { PlaybackExtension } from '../src/playback/extension.ts';
import { acquireFirstPicture, NO_PICTURE } from '../src/playback/first-picture.ts';
import { RateLimiter } from '../src/rate-limit.ts';
import { HealthTracker } from '../src/status/health.ts';
import { StatusTracker } from '../src/status/status.ts';
import { type BusEvents, EventBus } from '../src/supervisor/bus.ts';
import { CommandRegistry } from '../src/supervisor/commands.ts';

type Behaviour =
  /** Decodes: a frame at once. */
  | 'ok'
  /** The addon's preroll rejects (no picture). */
  | 'reject'
  /** Resolves at open, then fails before any frame (an addon that does not wait for the frame). */
  | 'failBeforeFrame'
  /** Resolves at open and never decodes a frame. */
  | 'silent';

/** A decode manager that only keeps books: decoders by source, their consumers and counters. */
class FakeDecode {
  readonly decoders: Array<{
    id: number;
    source: string;
    consumers: string[];
    frames: number;
    failure?: string;
    failureCode?: string;
  }> = [];
  readonly behaviours = new Map<string, Behaviour>();
  readonly released: string[] = [];
  #next = 0;

  acquire(consumer: string, request: { source: string }): { decoder: number; created: boolean } {
    const existing = this.decoders.find((d) => d.source === request.source && !d.failure);
    if (existing) {
      existing.consumers.push(consumer);
      return { decoder: existing.id, created: false };
    }
    const behaviour = this.behaviours.get(request.source) ?? 'ok';
    const d = { id: ++this.#next, source: request.source, consumers: [consumer], frames: behaviour === 'ok' ? 1 : 0 };
    this.decoders.push(d);
    if (behaviour === 'failBeforeFrame') {
      setTimeout(
        () => Object.assign(d, { failure: 'read failed: Input/output error', failureCode: 'ERR_DECODE_READ' }),
        30,
      );
    }
    return { decoder: d.id, created: true };
  }

  async acquireAsync(consumer: string, request: { source: string }): Promise<{ decoder: number; created: boolean }> {
    await new Promise((r) => setTimeout(r, 5));
    if (this.behaviours.get(request.source) === 'reject') {
      throw Object.assign(new Error(`ERR_DECODE_NO_PICTURE: ${request.source}: read failed`), {
        code: 'ERR_DECODE_NO_PICTURE',
      });
    }
    return this.acquire(consumer, request);
  }

  release(consumer: string): void {
    this.released.push(consumer);
    for (const d of this.decoders) d.consumers = d.consumers.filter((c) => c !== consumer);
    for (let i = this.decoders.length - 1; i >= 0; i--)
      if (this.decoders[i]?.consumers.length === 0) this.decoders.splice(i, 1);
  }

  fail(source: string, code: string, failure: string): void {
    for (const d of this.decoders) if (d.source === source) Object.assign(d, { failure, failureCode: code });
  }

  status() {
    return {
      sharedDecode: true,
      maxDecoders: 4,
      decoders: this.decoders.map(
        (d) =>
          ({
            hwMode: 'software',
            startSeconds: 0,
            hw: false,
            path: 'software',
            exported: 0,
            codec: 'h264',
            width: 64,
            height: 64,
            frameRate: 30,
            fps: 30,
            late: 0,
            delayed: 0,
            loops: 0,
            queueDepth: 0,
            bytesCopiedPerFrame: 0,
            index: 'none',
            indexKeyframes: 0,
            prerolled: false,
            ...d,
            consumers: [...d.consumers],
          }) as DecoderInfo,
      ),
    };
  }

  setVaapiDevice(): void {}
  setSharedDecode(): void {}
  setMaxDecoders(): void {}
  snapshot(): null {
    return null;
  }
  close(): void {}
}

/** Screens that record which consumer each output was given, and count frames on request. */
function fakeScreens(names: readonly string[]): Screens & { shown: Map<string, string>; plays: number } {
  const shown = new Map<string, string>();
  const screens = {
    kind: 'virtual' as const,
    shown,
    plays: 0,
    outputs: () => names.map((name) => ({ name, width: 64, height: 64, refresh: 60 })),
    play(_decode: DecodeManager, consumer: string, placements: readonly { output: string }[]) {
      screens.plays++;
      for (const p of placements) shown.set(p.output, consumer);
    },
    snapshotJpeg: async () => undefined,
    stats: () => [],
    showing: (output: string) => shown.get(output),
  };
  return screens;
}

const config = configLoad({
  env: { MULTIHEAD_PREVIEW_INTERVAL_S: '0', MULTIHEAD_PLAYBACK_DEMO: '1' },
  defaultPath: '/nonexistent/config.json',
}).config;
const logger = loggingCreate({ level: 'fatal', ringSize: 10, sink: { write: () => {} } }).logger;
const origin = { transport: 'internal' } as const;

async function until<T>(probe: () => T | undefined | false, what: string, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Playback over the fakes, the demo on both outputs, and the one health judgement over the same bus. */
async function playbackOnFakes(t: { teardown: (f: () => void) => void }) {
  const bus = new EventBus(() => {});
  const commands = new CommandRegistry();
  const decode = new FakeDecode();
  const screens = fakeScreens(['Virtual-1', 'Virtual-2']);
  const extension = new PlaybackExtension({
    config,
    logger,
    bus,
    commands,
    decode: decode as unknown as DecodeManager,
    renderNodeOf: () => undefined,
    failedHoldMs: 400,
    failureCheckMs: 50,
  });
  extension.start();
  const health = HealthTracker.acquire({ bus, config });
  const status = new StatusTracker({ bus, config, versions: { app: '0', addon: '0', node: '0' }, startedAt: 0 });
  t.teardown(() => {
    status.close();
    health.release();
    extension.stop();
  });
  const seen: { 'decode.failed': BusEvents['decode.failed'][]; 'playback.changed': BusEvents['playback.changed'][] } = {
    'decode.failed': [],
    'playback.changed': [],
  };
  bus.on('decode.failed', (payload) => seen['decode.failed'].push(payload));
  bus.on('playback.changed', (payload) => seen['playback.changed'].push(payload));
  bus.emit('supervisor.state', { state: 'running' });
  bus.emit('display.ready', { mode: 'virtual', reason: 'test', screens });
  let frames = 0;
  /** Both outputs' counters move, as the display reports them every few seconds. */
  const tick = (): void => {
    frames += 10;
    bus.emit('output.stats', {
      outputs: ['Virtual-1', 'Virtual-2'].map((name) => ({ name, frames, dropped: 0 })),
    });
  };
  tick();
  tick();
  return { bus, commands, decode, screens, health, status, seen, tick };
}

for (const [behaviour, why] of [
  ['reject', 'the preroll rejects'],
  ['failBeforeFrame', 'it fails after open, before its first frame'],
] as const) {
  test(`play of a source with no picture (${why}) is answered with ERR_DECODE_NO_PICTURE and the outputs keep the demo`, async (t) => {
    const { commands, decode, screens } = await playbackOnFakes(t);
    const source = `http://127.0.0.1:9/${behaviour}.mp4`;
    decode.behaviours.set(source, behaviour);
    const before = new Map(screens.shown);
    t.deepEqual([...before.values()], ['Virtual-1', 'Virtual-2'], 'the demo shows on both');
    const plays = screens.plays;
    const reply = await commands.invoke('play', { source }, origin);
    t.like(reply, { ok: false, error: { code: NO_PICTURE } });
    t.regex(reply.ok ? '' : reply.error.message, /read failed/);
    t.is(screens.plays, plays, 'no output was switched');
    t.deepEqual(screens.shown, before);
    t.false(
      decode.decoders.some((d) => d.source === source),
      'the consumer of the refused source was released',
    );
  });
}

test('play waits for the first frame: a source that never decodes one is refused at the deadline', async (t) => {
  const decode = new FakeDecode();
  decode.behaviours.set('slow.mp4', 'silent');
  const started = Date.now();
  const error = await t.throwsAsync(
    acquireFirstPicture(decode as unknown as DecodeManager, 'c', { source: 'slow.mp4' }, { timeoutMs: 200 }),
  );
  t.like(error, { code: NO_PICTURE });
  t.regex(error?.message ?? '', /no frame decoded within 200 ms/);
  t.true(Date.now() - started >= 200);
  t.deepEqual(decode.decoders, [], 'released');
});

test('a played source that fails later: decode.failed once naming the output and code, health degraded, then the demo back and ok', async (t) => {
  const { commands, decode, screens, health, status, seen, tick } = await playbackOnFakes(t);
  const source = 'http://127.0.0.1:9/stalls.ts';
  const reply = await commands.invoke('play', { source, outputs: ['Virtual-1'] }, origin);
  t.like(reply, { ok: true });
  t.regex(screens.shown.get('Virtual-1') ?? '', /^play#/);
  tick();
  await until(() => health.assess().state === 'ok', 'health ok while playing');
  decode.fail(source, 'ERR_DECODE_STALLED', 'no data for 10 s');
  const failed = await until(() => seen['decode.failed'][0], 'decode.failed');
  t.deepEqual(failed, {
    decoder: failed.decoder,
    source,
    outputs: ['Virtual-1'],
    code: 'ERR_DECODE_STALLED',
    message: 'no data for 10 s',
  });
  const judged = health.assess();
  t.is(judged.state, 'degraded');
  t.true(
    judged.reasons.some((r) => r.startsWith('Virtual-1: ERR_DECODE_STALLED:')),
    judged.reasons.join(' | '),
  );
  t.like(
    status.document().outputs.find((o) => o.name === 'Virtual-1'),
    { video: { state: 'error', code: 'ERR_DECODE_STALLED' } },
  );
  // During the hold the output keeps the failed source's last frame.
  t.regex(screens.shown.get('Virtual-1') ?? '', /^play#/);
  await until(() => screens.shown.get('Virtual-1') === 'Virtual-1', 'the demo back on Virtual-1', 3000);
  tick();
  tick();
  t.is(health.assess().state, 'ok', health.assess().reasons.join(' | '));
  t.like(
    status.document().outputs.find((o) => o.name === 'Virtual-1'),
    { video: { state: 'ok' } },
  );
  await new Promise((r) => setTimeout(r, 200));
  t.is(seen['decode.failed'].length, 1, 'told once');
});

function displayEvent(kind: string, connector: string, code?: string, message?: string): DisplayEvent {
  return { kind, connector, ...(code ? { code } : {}), ...(message ? { message } : {}) };
}

test('video errors: once per output and cause, a recovery only after an error, an output that flaps is rate limited', (t) => {
  const bus = new EventBus(() => {});
  const told: Array<[string, unknown]> = [];
  bus.on('video.error', (e) => told.push(['error', e]));
  bus.on('video.recovered', (e) => told.push(['recovered', e]));
  let now = 0;
  const events = new VideoEvents({
    bus,
    logger,
    limiter: new RateLimiter({ burst: 3, perSecond: 0.1, now: () => now }),
  });
  t.false(events.take(displayEvent('flip', 'HDMI-A-1')));
  t.true(events.take(displayEvent('videoRecovered', 'HDMI-A-1', 'ERR_VIDEO_NO_FRAME')));
  t.deepEqual(told, [], 'no recovery without an error');
  for (let i = 0; i < 100; i++)
    events.take(displayEvent('videoError', 'HDMI-A-1', 'ERR_KMS_COMMIT_REFUSED', 'the kernel refused the commit'));
  events.take(displayEvent('videoError', 'HDMI-A-2', 'ERR_VIDEO_FORMAT', 'no plane takes P010'));
  events.take(displayEvent('videoError', 'HDMI-A-1', 'ERR_VIDEO_FORMAT', 'no plane takes P010'));
  t.deepEqual(told, [
    ['error', { output: 'HDMI-A-1', code: 'ERR_KMS_COMMIT_REFUSED', message: 'the kernel refused the commit' }],
    ['error', { output: 'HDMI-A-2', code: 'ERR_VIDEO_FORMAT', message: 'no plane takes P010' }],
    ['error', { output: 'HDMI-A-1', code: 'ERR_VIDEO_FORMAT', message: 'no plane takes P010' }],
  ]);
  events.take(displayEvent('videoRecovered', 'HDMI-A-1', 'ERR_VIDEO_FORMAT'));
  events.take(displayEvent('videoRecovered', 'HDMI-A-1', 'ERR_VIDEO_FORMAT'));
  t.deepEqual(told.at(-1), ['recovered', { output: 'HDMI-A-1', code: 'ERR_VIDEO_FORMAT' }]);
  t.is(told.length, 4, 'one recovery');
  // Flapping: the burst is spent, so further errors wait for the limiter (one per 10 s).
  for (let i = 0; i < 50; i++) {
    events.take(displayEvent('videoError', 'HDMI-A-1', 'ERR_KMS_COMMIT_REFUSED', 'refused'));
    events.take(displayEvent('videoRecovered', 'HDMI-A-1', 'ERR_KMS_COMMIT_REFUSED'));
  }
  t.is(told.length, 6, 'one more error and its recovery, then the limit');
  now += 10_000;
  events.take(displayEvent('videoError', 'HDMI-A-1', 'ERR_KMS_COMMIT_REFUSED', 'refused'));
  t.is(told.length, 7, 'a token again after 10 s');
});

test('a video error makes health degraded naming the output and code, status shows it, the MQTT event carries it; recovery is ok again', async (t) => {
  const { bus, health, status, tick } = await playbackOnFakes(t);
  const events: DeviceEvent[] = [];
  const logRing = { subscribe: () => () => {}, tail: () => [] } as never;
  const off = eventSourcesAttach({ bus, logRing, emit: (e) => events.push(e), now: () => 0 });
  t.teardown(off);
  tick();
  t.is(health.assess().state, 'ok', health.assess().reasons.join(' | '));
  bus.emit('video.error', {
    output: 'Virtual-2',
    code: 'ERR_KMS_COMMIT_REFUSED',
    message: 'the kernel refused the commit',
  });
  const judged = health.assess();
  t.is(judged.state, 'degraded');
  t.deepEqual(judged.reasons, ['Virtual-2: ERR_KMS_COMMIT_REFUSED: the kernel refused the commit']);
  t.like(
    status.document().outputs.find((o) => o.name === 'Virtual-2'),
    {
      video: { state: 'error', code: 'ERR_KMS_COMMIT_REFUSED', message: 'the kernel refused the commit' },
    },
  );
  t.like(events.at(-1), {
    type: 'video.error',
    severity: 'error',
    details: { output: 'Virtual-2', code: 'ERR_KMS_COMMIT_REFUSED' },
  });
  bus.emit('video.recovered', { output: 'Virtual-2', code: 'ERR_KMS_COMMIT_REFUSED' });
  t.is(health.assess().state, 'ok');
  t.like(events.at(-1), { type: 'video.recovered', severity: 'info', details: { output: 'Virtual-2' } });
  bus.emit('decode.failed', {
    decoder: 7,
    source: 'x.mp4',
    outputs: ['Virtual-1'],
    code: 'ERR_DECODE_READ',
    message: 'read failed',
  });
  bus.emit('decode.failed', {
    decoder: 7,
    source: 'x.mp4',
    outputs: ['Virtual-1'],
    code: 'ERR_DECODE_READ',
    message: 'read failed',
  });
  const decoderEvents = events.filter((e) => e.type === 'decoder.failed');
  t.is(decoderEvents.length, 1, 'once per decoder');
  t.like(decoderEvents[0], { details: { decoder: 7, outputs: ['Virtual-1'], code: 'ERR_DECODE_READ' } });
});

test('error lines logged before the fleet client started are sent when it starts, at their own time, once', (t) => {
  const logging = loggingCreate({ level: 'info', ringSize: 50, sink: { write: () => {} } });
  const log = logging.logger.child({ component: 'supervisor' });
  log.info('starting');
  log.error({ code: 'ERR_EXTENSION_START' }, 'extension content failed to start and is left out');
  const before = logging.ring.tail({ level: 'error' })[0]?.time;
  const events: DeviceEvent[] = [];
  const off = eventSourcesAttach({
    bus: new EventBus(() => {}),
    logRing: logging.ring,
    emit: (e) => events.push(e),
    now: () => Date.parse('2030-01-01T00:00:00Z'),
  });
  t.teardown(off);
  log.error({ code: 'ERR_LATER' }, 'after the start');
  t.deepEqual(
    events.map((e) => [e.message, e.details?.code, e.at]),
    [
      ['extension content failed to start and is left out', 'ERR_EXTENSION_START', before],
      ['after the start', 'ERR_LATER', '2030-01-01T00:00:00.000Z'],
    ],
  );
});
