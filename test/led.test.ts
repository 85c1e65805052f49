import { rmSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import type { Screens } from '../src/display/screens.ts';
import { displayCreate } from '../src/extensions/display.ts';
import { ledCreate } from '../src/extensions/led.ts';
import { playbackCreate } from '../src/extensions/playback.ts';
import { ledPatternFor } from '../src/led/patterns.ts';
import { LedError, SysfsLed } from '../src/led/sysfs-led.ts';
import { ALL_TRIGGERS, fakeLeds, ledRead, recordingFiles } from './helpers/fake-leds.ts';
import { supervisorStart, until } from './helpers/supervisor.ts';
import { scratchDir } from './helpers/tmp.ts';

/** Two virtual outputs that only exist on paper: health comes from the events the test emits. */
const paperScreens: Screens = {
  kind: 'virtual',
  outputs: () => [
    { name: 'Virtual-1', width: 1280, height: 720, refresh: 60 },
    { name: 'Virtual-2', width: 1280, height: 720, refresh: 60 },
  ],
  play: () => {},
  snapshotJpeg: async () => undefined,
  stats: () => [],
};

const stats = (frames1: number, frames2: number) => ({
  outputs: [
    { name: 'Virtual-1', frames: frames1, dropped: 0 },
    { name: 'Virtual-2', frames: frames2, dropped: 0 },
  ],
});

test('sysfs LED: triggers are read from the bracketed list, a pattern is written once', (t) => {
  const root = fakeLeds(scratchDir(t), ['status']);
  const files = recordingFiles(root);
  const led = new SysfsLed(root, 'status', files);
  t.deepEqual([...led.triggers], ALL_TRIGGERS);
  t.is(led.maxBrightness, 255);
  t.true(led.apply({ trigger: 'timer', delayOnMs: 100, delayOffMs: 100 }));
  t.false(led.apply({ trigger: 'timer', delayOnMs: 100, delayOffMs: 100 }), 'the same pattern again writes nothing');
  t.deepEqual(files.writes, ['status/trigger=timer', 'status/delay_on=100', 'status/delay_off=100']);
  t.like(ledRead(root, 'status'), { trigger: 'timer', delay_on: '100', delay_off: '100' });
});

test('sysfs LED: a missing LED, a missing trigger and an unwritable file are coded errors naming the LED', (t) => {
  const root = fakeLeds(scratchDir(t), ['small'], ['none', 'timer'], 1);
  const missing = t.throws(() => new SysfsLed(root, 'nope'), { instanceOf: LedError });
  t.is(missing?.code, 'ERR_LED_MISSING');
  t.regex(missing?.message ?? '', /^LED nope: cannot read .*nope\/trigger: ENOENT/);
  const led = new SysfsLed(root, 'small');
  t.is(led.maxBrightness, 1);
  const noPattern = t.throws(() => led.apply({ trigger: 'pattern', pattern: '1 100 0 100' }), { instanceOf: LedError });
  t.is(noPattern?.code, 'ERR_LED_TRIGGER');
  t.regex(noPattern?.message ?? '', /no "pattern" trigger \(has: none, timer\)/);
  // Without the pattern trigger, degraded falls back to a timer blink of its own.
  t.deepEqual(led.pick(ledPatternFor('degraded', 1)), { trigger: 'timer', delayOnMs: 200, delayOffMs: 800 });
  rmSync(join(root, 'small', 'delay_on'));
  rmSync(join(root, 'small'), { recursive: true });
  const gone = t.throws(() => led.apply({ trigger: 'timer', delayOnMs: 1, delayOffMs: 1 }), { instanceOf: LedError });
  t.is(gone?.code, 'ERR_LED_WRITE');
});

test('LED extension: each state from bus events maps to its kernel pattern, each change written once', async (t) => {
  const root = fakeLeds(scratchDir(t), ['led0', 'led1']);
  const files = recordingFiles(root);
  const sup = await supervisorStart(
    t,
    [{ name: 'led', create: (c) => ledCreate(c, { files }) }],
    { led: { names: ['led0', 'led1'], sysfsPath: root }, mqtt: { url: 'mqtt://127.0.0.1:1' } },
    { start: false },
  );
  const bus = sup.controller.bus;
  const seen = (): Record<string, string> => ledRead(root, 'led0');
  const writesNow = (): number => files.writes.length;

  await sup.controller.start();
  // Running, but no display yet: still booting (slow blink).
  t.like(seen(), { trigger: 'timer', delay_on: '500', delay_off: '500' });
  t.deepEqual(ledRead(root, 'led1'), seen(), 'every named LED shows the same');
  const afterBoot = writesNow();
  t.is(afterBoot, 6, 'trigger, delay_on, delay_off on each of two LEDs');

  bus.emit('display.ready', { mode: 'virtual', reason: 'test', screens: paperScreens });
  bus.emit('playback.changed', { output: 'Virtual-1', source: 'a.mp4', reason: 'test' });
  bus.emit('playback.changed', { output: 'Virtual-2', source: 'a.mp4', reason: 'test' });
  t.is(writesNow(), afterBoot, 'still booting until a frame is shown: nothing written');

  bus.emit('output.stats', stats(10, 10));
  bus.emit('mqtt.connection', { connected: true, session: 1 });
  t.like(seen(), { trigger: 'none', brightness: '255' }, 'playing: steady on');
  const steady = writesNow();
  bus.emit('output.stats', stats(20, 20));
  bus.emit('output.stats', stats(30, 30));
  t.is(writesNow(), steady, 'stats while playing change nothing');

  bus.emit('mqtt.connection', { connected: false, session: 1, reason: 'gone' });
  t.like(seen(), { trigger: 'pattern', pattern: '0 1000 255 1000' }, 'no broker: slow pulse');

  bus.emit('decode.fallback', { decoder: 1, source: 'a.mp4', reason: 'no VAAPI device', midStream: false });
  t.like(seen(), {
    trigger: 'pattern',
    pattern: '255 120 255 0 0 120 0 0 255 120 255 0 0 640 0 0',
  });

  bus.emit('output.stats', stats(40, 30));
  t.like(seen(), { trigger: 'pattern' }, 'one output still playing: degraded');
  bus.emit('output.stats', stats(40, 30));
  t.like(seen(), { trigger: 'timer', delay_on: '100', delay_off: '100' }, 'nothing playing: fast blink');

  const reply = await sup.controller.commands.invoke('identify', { seconds: 1 }, { transport: 'internal' });
  t.true(reply.ok);
  t.like(seen(), { trigger: 'heartbeat' }, 'identify: heartbeat');
  t.true(sup.lines.some((l) => /identify: test-host .* for 1 s/.test(l)));
  await until(() => seen().trigger === 'timer', 'identify to end', 3000);
  t.like(seen(), { delay_on: '100' }, 'back to what the state says');

  const bad = await sup.controller.commands.invoke('identify', { seconds: 'ten' }, { transport: 'internal' });
  t.deepEqual(bad, {
    ok: false,
    error: { code: 'ERR_BAD_ARGUMENT', message: 'identify needs "seconds": an integer 1-600, got "ten"' },
  });

  await sup.stop();
  t.like(seen(), { trigger: 'none', brightness: '0' }, 'dark after an orderly stop');
});

test('LED extension: an LED that does not exist is logged by name and the others still work', async (t) => {
  const root = fakeLeds(scratchDir(t), ['led0']);
  const sup = await supervisorStart(t, [{ name: 'led', create: (c) => ledCreate(c) }], {
    led: { names: ['ghost', 'led0'], sysfsPath: root },
  });
  t.true(sup.lines.some((l) => l.includes('"code":"ERR_LED_MISSING"') && l.includes('LED ghost: cannot read')));
  t.like(ledRead(root, 'led0'), { trigger: 'timer', delay_on: '500' });
});

test('LED extension with real playback on virtual outputs: booting, then steady on once frames flow', async (t) => {
  const root = fakeLeds(scratchDir(t), ['led0']);
  await supervisorStart(
    t,
    [
      { name: 'led', create: (c) => ledCreate(c) },
      { name: 'playback', create: playbackCreate },
      { name: 'display', create: displayCreate },
    ],
    {
      led: { names: ['led0'], sysfsPath: root },
      decode: { hardware: 'software' },
      preview: { intervalS: 0 },
      playback: { demo: true },
    },
  );
  t.like(ledRead(root, 'led0'), { trigger: 'timer', delay_on: '500' }, 'booting until the first output stats');
  // Playback reports output counters every 5 s.
  await until(() => ledRead(root, 'led0').trigger === 'none', 'steady on', 12_000);
  t.like(ledRead(root, 'led0'), { brightness: '255' });
});
