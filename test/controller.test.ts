import test from 'ava';
import { configLoad } from '../src/config/load.ts';
import { displayPick } from '../src/extensions/display.ts';
import { loggingCreate } from '../src/log/logger.ts';
import { type DrmDeviceInfo, loadAddon } from '../src/native/addon.ts';
import type { BusEvents } from '../src/supervisor/bus.ts';
import { Controller, ExtensionStartError } from '../src/supervisor/controller.ts';
import type { ExtensionDefinition } from '../src/supervisor/extension.ts';

const config = configLoad({ env: {}, defaultPath: '/nonexistent/config.json' }).config;

function controllerWith(extensions: ExtensionDefinition[], stopTimeoutMs = 300, firstFrameWaitMs?: number) {
  const lines: string[] = [];
  const logging = loggingCreate({ level: 'info', ringSize: 100, sink: { write: (l) => lines.push(l) } });
  const controller = new Controller({
    config,
    logger: logging.logger,
    logRing: logging.ring,
    addon: loadAddon(),
    extensions,
    stopTimeoutMs,
    ...(firstFrameWaitMs === undefined ? {} : { firstFrameWaitMs }),
  });
  return { controller, lines, ring: logging.ring };
}

/** An extension that records its lifecycle calls in `calls`. */
function recorder(
  name: string,
  calls: string[],
  behaviour: { start?: () => unknown; stop?: () => unknown; essential?: boolean } = {},
) {
  return {
    name,
    essential: behaviour.essential ?? false,
    create: () => ({
      name,
      start: async () => {
        calls.push(`start ${name}`);
        await behaviour.start?.();
      },
      stop: async () => {
        calls.push(`stop ${name}`);
        await behaviour.stop?.();
      },
    }),
  } satisfies ExtensionDefinition;
}

test('extensions start in order and stop in reverse', async (t) => {
  const calls: string[] = [];
  const { controller } = controllerWith([recorder('a', calls), recorder('b', calls), recorder('c', calls)]);
  const states: string[] = [];
  controller.bus.on('supervisor.state', ({ state }) => states.push(state));
  await controller.start();
  t.is(controller.state, 'running');
  t.true(await controller.stop('test'));
  t.deepEqual(calls, ['start a', 'start b', 'start c', 'stop c', 'stop b', 'stop a']);
  t.deepEqual(states, ['starting', 'running', 'stopping', 'stopped']);
});

test('a failed start of an essential extension stops what already started and names the extension', async (t) => {
  const calls: string[] = [];
  const { controller } = controllerWith([
    recorder('a', calls),
    recorder('b', calls, {
      essential: true,
      start: () => {
        throw new Error('boom');
      },
    }),
    recorder('c', calls),
  ]);
  const error = await t.throwsAsync(controller.start(), { instanceOf: ExtensionStartError });
  t.is(error?.extension, 'b');
  t.is(error?.message, 'extension b failed to start: boom');
  t.deepEqual(calls, ['start a', 'start b', 'stop a']);
  t.is(controller.state, 'stopped');
});

test('12 a non-essential extension that fails to start is left out, reported, and the others keep running', async (t) => {
  const calls: string[] = [];
  const { controller, lines, ring } = controllerWith([
    recorder('playback', calls, { essential: true }),
    recorder('mqtt', calls, {
      start: () => {
        throw new Error('broker module broken');
      },
    }),
    { name: 'content', create: () => Promise.reject(new Error('no schema')) },
    recorder('systemd', calls, { essential: true }),
  ]);
  const states: BusEvents['supervisor.state'][] = [];
  controller.bus.on('supervisor.state', (s) => states.push(s));
  await controller.start();
  t.is(controller.state, 'running');
  // mqtt's half-done start is released (its stop runs), playback is not stopped.
  t.deepEqual(calls, ['start playback', 'start mqtt', 'stop mqtt', 'start systemd']);
  t.deepEqual(controller.failed, [
    { extension: 'mqtt', error: 'broker module broken' },
    { extension: 'content', error: 'no schema' },
  ]);
  t.deepEqual(states.at(-1), {
    state: 'running',
    reason: 'without mqtt, content: failed to start',
    leftOut: ['mqtt', 'content'],
  });
  // As errors with a code: the MQTT events source publishes error lines from the ring.
  const errors = ring.tail({ limit: 100, level: 'error' });
  t.deepEqual(
    errors.map((e) => [e.code, e.extension]),
    [
      ['ERR_EXTENSION_START', 'mqtt'],
      ['ERR_EXTENSION_START', 'content'],
    ],
  );
  t.true(lines.some((l) => l.includes('extension content failed to start and is left out')));
  t.true(await controller.stop('test'));
  t.deepEqual(calls.slice(4), ['stop systemd', 'stop playback']);
});

test('12 MULTIHEAD_FAULT_EXTENSION makes the named extension fail to start; an unknown name is an error', async (t) => {
  const { builtinExtensions, extensionsWithFault } = await import('../src/extensions/index.ts');
  t.is(extensionsWithFault(builtinExtensions, undefined), builtinExtensions);
  t.is(extensionsWithFault(builtinExtensions, ''), builtinExtensions);
  const faulty = extensionsWithFault(builtinExtensions, 'http');
  t.deepEqual(
    faulty.map((e) => e.name),
    builtinExtensions.map((e) => e.name),
  );
  const http = faulty.find((e) => e.name === 'http');
  t.throws(() => http?.create({} as never), { message: /fault injected by MULTIHEAD_FAULT_EXTENSION=http/ });
  t.throws(() => extensionsWithFault(builtinExtensions, 'nosuch'), {
    message: /MULTIHEAD_FAULT_EXTENSION=nosuch: no such extension \(one of led, playback, display/,
  });
  // What must keep the screens up stops the process when it fails; the rest is left out.
  t.deepEqual(
    builtinExtensions.filter((e) => e.essential).map((e) => e.name),
    ['playback', 'display', 'systemd'],
  );
});

test('a stop that hangs is cut off at the deadline and the others still stop', async (t) => {
  const calls: string[] = [];
  const { controller, lines } = controllerWith(
    [recorder('a', calls), recorder('stuck', calls, { stop: () => new Promise(() => {}) })],
    200,
  );
  await controller.start();
  const began = Date.now();
  t.false(await controller.stop('test'));
  t.true(Date.now() - began < 1000);
  t.deepEqual(calls, ['start a', 'start stuck', 'stop stuck', 'stop a']);
  t.true(lines.some((l) => l.includes('extension stuck did not stop in time')));
});

test('stop is idempotent: a second signal waits for the same shutdown', async (t) => {
  const calls: string[] = [];
  const { controller } = controllerWith([recorder('a', calls)]);
  await controller.start();
  const [first, second] = await Promise.all([controller.stop('one'), controller.stop('two')]);
  t.true(first && second);
  t.deepEqual(calls, ['start a', 'stop a']);
});

test('a throwing bus listener is logged and does not stop the others', async (t) => {
  const { controller, lines } = controllerWith([]);
  const seen: BusEvents['playback.changed'][] = [];
  controller.bus.on('playback.changed', () => {
    throw new Error('listener bug');
  });
  controller.bus.on('playback.changed', (payload) => seen.push(payload));
  controller.bus.emit('playback.changed', { output: 'HDMI-A-1', source: null, reason: 'test' });
  t.is(seen.length, 1);
  t.true(lines.some((l) => l.includes('listener for playback.changed threw') && l.includes('listener bug')));
});

const card = (n: number, patch: Partial<DrmDeviceInfo> = {}): DrmDeviceInfo => ({
  path: `/dev/dri/card${n}`,
  driver: 'virtio_gpu',
  description: 'virtio GPU',
  hasKms: true,
  atomic: true,
  crtcs: 3,
  connectors: 3,
  connectedConnectors: 0,
  ...patch,
});

test('display: auto prefers a KMS card with something connected', (t) => {
  const devices = [card(0, { hasKms: false, driver: 'nvidia' }), card(1), card(2, { connectedConnectors: 2 })];
  t.deepEqual(displayPick(devices, 'auto'), { device: devices[2] as DrmDeviceInfo });
  t.deepEqual(displayPick(devices.slice(0, 2), 'auto'), { device: devices[1] as DrmDeviceInfo });
});

test('display: the reasons for running with virtual outputs', (t) => {
  t.deepEqual(displayPick([], 'auto'), { reason: 'no /dev/dri/card* nodes' });
  t.deepEqual(displayPick([card(0, { hasKms: false })], 'auto'), { reason: '1 DRM node(s), none with KMS' });
  t.deepEqual(displayPick([card(0)], '/dev/dri/card5'), { reason: '/dev/dri/card5 does not exist' });
  t.deepEqual(displayPick([card(0, { hasKms: false, driver: 'nvidia' })], '/dev/dri/card0'), {
    reason: '/dev/dri/card0 (nvidia) has no KMS',
  });
  t.deepEqual(displayPick([card(0, { error: '/dev/dri/card0: permission denied' })], '/dev/dri/card0'), {
    reason: '/dev/dri/card0: permission denied',
  });
});

test('MULTIHEAD_EXTENSIONS picks extensions by name, in their usual order; unset runs all', async (t) => {
  const { extensionsChosen } = await import('../src/cli/run.ts');
  const { builtinExtensions } = await import('../src/extensions/index.ts');
  t.deepEqual(
    extensionsChosen('display, led,nosuch').map((e) => e.name),
    ['led', 'display'],
  );
  t.is(extensionsChosen(undefined), builtinExtensions);
  t.is(extensionsChosen(' , '), builtinExtensions);
});

function firstFrameSetup(waitMs = 60_000) {
  const calls: string[] = [];
  const extensions: ExtensionDefinition[] = [
    recorder('display', calls),
    { ...recorder('fleet', calls), afterFirstFrame: true },
    { ...recorder('last', calls), afterFirstFrame: true },
  ];
  const { controller, lines } = controllerWith(extensions, 300, waitMs);
  // The display's start announces the outputs on the bus, as the real one does.
  controller.bus.on('supervisor.state', ({ state }) => {
    if (state === 'starting')
      queueMicrotask(() =>
        controller.bus.emit('display.ready', { mode: 'virtual', reason: 'test', screens: {} as never }),
      );
  });
  return { controller, calls, lines };
}

const frames = (n: number[]) => ({ outputs: n.map((f, i) => ({ output: `Virtual-${i + 1}`, frames: f })) as never });

test('afterFirstFrame: those extensions start once every output shows a frame, in order', async (t) => {
  const { controller, calls } = firstFrameSetup();
  const started = controller.start();
  await new Promise((r) => setTimeout(r, 50));
  t.deepEqual(calls, ['start display'], 'the fleet waits for the first frames');
  controller.bus.emit('output.stats', frames([3, 0]));
  await new Promise((r) => setTimeout(r, 20));
  t.deepEqual(calls, ['start display'], 'one output without a frame: still waiting');
  controller.bus.emit('output.stats', frames([4, 1]));
  await started;
  t.deepEqual(calls, ['start display', 'start fleet', 'start last']);
  t.is(controller.state, 'running');
  await controller.stop('test');
});

test('afterFirstFrame: a failed source ends the wait (the fleet must hear of a black screen)', async (t) => {
  for (const event of ['decode.failed', 'video.error'] as const) {
    const { controller, calls } = firstFrameSetup();
    const started = controller.start();
    await new Promise((r) => setTimeout(r, 30));
    t.deepEqual(calls, ['start display']);
    if (event === 'decode.failed')
      controller.bus.emit(event, { decoder: 1, source: 'x', outputs: ['Virtual-1'], code: 'E', message: 'm' });
    else controller.bus.emit(event, { output: 'Virtual-1', code: 'E', message: 'm' });
    await started;
    t.deepEqual(calls, ['start display', 'start fleet', 'start last'], event);
    await controller.stop('test');
  }
});

test('afterFirstFrame: the wait is bounded and said; without a display there is none', async (t) => {
  const { controller, calls, lines } = firstFrameSetup(60);
  await controller.start();
  t.deepEqual(calls, ['start display', 'start fleet', 'start last']);
  t.true(
    lines.some((l) => l.includes('no first frame on every output within 60 ms; starting fleet and the rest anyway')),
    lines.join('\n'),
  );
  await controller.stop('test');

  const noDisplay: string[] = [];
  const { controller: plain } = controllerWith([{ ...recorder('fleet', noDisplay), afterFirstFrame: true }]);
  const t0 = Date.now();
  await plain.start();
  t.deepEqual(noDisplay, ['start fleet']);
  t.true(Date.now() - t0 < 1000, 'no wait without outputs');
  await plain.stop('test');

  // A KMS card with nothing connected: no frame will ever come.
  const bare = firstFrameSetup();
  bare.controller.bus.emit('display.outputs', { outputs: [] });
  const t1 = Date.now();
  await bare.controller.start();
  t.deepEqual(bare.calls, ['start display', 'start fleet', 'start last']);
  t.true(Date.now() - t1 < 1000, 'no wait without connected outputs');
  await bare.controller.stop('test');
});

test('afterFirstFrame: a stop during the wait starts none of them', async (t) => {
  const { controller, calls } = firstFrameSetup();
  const started = controller.start();
  await new Promise((r) => setTimeout(r, 30));
  t.true(await controller.stop('SIGTERM'));
  await started;
  t.deepEqual(calls, ['start display', 'stop display']);
  t.is(controller.state, 'stopped');
});
