// Screen facts: which monitor is on each connector (from the EDID the kernel read), a swap told
// once as an event, and the status document carrying monitor, power, rotation and layout, valid
// against the AsyncAPI contract.
import test from 'ava';
import type { CecState } from '../src/display/cec.ts';
import { layoutPlace } from '../src/display/layout.ts';
import { MonitorWatch, monitorName } from '../src/display/monitors.ts';
import { displayPowerCommand } from '../src/display/power.ts';
import type { Screens } from '../src/display/screens.ts';
import { LogRing } from '../src/log/ring.ts';
import { contractLoad } from '../src/mqtt/contract.ts';
import { configLoadWithDesired } from '../src/mqtt/desired-store.ts';
import { type DeviceEvent, eventSourcesAttach } from '../src/mqtt/events.ts';
import { StatusTracker } from '../src/status/status.ts';
import { EventBus } from '../src/supervisor/bus.ts';

const dell = { manufacturer: 'DEL', productCode: 41234, name: 'DELL U2419H', serial: '7X9K2' };
const other = { manufacturer: 'DEL', productCode: 41234, name: 'DELL U2419H', serial: 'AB123' };
const mode = { name: '1920x1080', width: 1920, height: 1080, refresh: 60, preferred: true };
const output = (connector: string) => ({ connector, crtc: 40, crtcIndex: 0, mode, planes: [31] });

test('monitors: the first sighting and the same monitor again are no change; a swap is one, with both', (t) => {
  const watch = new MonitorWatch();
  const first = watch.take(
    [output('HDMI-A-1'), output('HDMI-A-2')],
    [{ name: 'HDMI-A-1', monitor: dell }, { name: 'HDMI-A-2' }],
  );
  t.deepEqual(first.monitors, { 'HDMI-A-1': dell, 'HDMI-A-2': null });
  t.deepEqual(first.changed, []);
  t.deepEqual(watch.take([output('HDMI-A-1')], [{ name: 'HDMI-A-1', monitor: { ...dell } }]).changed, []);
  // Unplugged for a while (not driven), then a different unit of the same model comes back.
  t.deepEqual(watch.take([], [{ name: 'HDMI-A-1' }]).changed, []);
  const swapped = watch.take([output('HDMI-A-1')], [{ name: 'HDMI-A-1', monitor: other }]);
  t.deepEqual(swapped.changed, [{ output: 'HDMI-A-1', before: dell, after: other }]);
  const noEdid = watch.take([output('HDMI-A-1')], [{ name: 'HDMI-A-1' }]);
  t.deepEqual(noEdid.changed, [{ output: 'HDMI-A-1', before: other, after: null }]);
  t.is(monitorName(dell), 'DELL U2419H (serial 7X9K2)');
  t.is(monitorName({ manufacturer: 'SAM', productCode: 3075 }), 'SAM product 3075');
});

test('monitors: a swap reaches the fleet as a monitor.changed event the contract accepts', (t) => {
  const bus = new EventBus(() => {});
  const events: DeviceEvent[] = [];
  const off = eventSourcesAttach({
    bus,
    logRing: new LogRing({ lines: 10 }),
    emit: (e) => events.push(e),
    now: () => 0,
  });
  t.teardown(off);
  bus.emit('display.monitor.changed', { output: 'HDMI-A-1', before: dell, after: other });
  t.is(events.length, 1);
  t.like(events[0], {
    type: 'monitor.changed',
    severity: 'warn',
    message: 'output HDMI-A-1: monitor changed from DELL U2419H (serial 7X9K2) to DELL U2419H (serial AB123)',
  });
  t.true(contractLoad().validate('Event', events[0]).ok);
});

test('status: each output carries its monitor, power, rotation and the layout in force', (t) => {
  const bus = new EventBus(() => {});
  const placed = layoutPlace(
    { width: 1920, height: 1080 },
    { width: 1920, height: 1080 },
    {
      rotation: 90,
      layout: { fit: 'fill', anchor: 'top' },
    },
  );
  const screens: Screens = {
    kind: 'kms',
    outputs: () => [
      { name: 'HDMI-A-1', width: 1920, height: 1080, refresh: 60 },
      { name: 'HDMI-A-2', width: 1920, height: 1080, refresh: 60 },
    ],
    play() {},
    snapshotJpeg: async () => undefined,
    stats: () => [],
    placed: (o) => (o === 'HDMI-A-1' ? placed : undefined),
  };
  bus.emit('display.ready', {
    mode: 'kms',
    device: { path: '/dev/dri/card0', driver: 'vkms' } as never,
    screens,
  });
  bus.emit('display.outputs', {
    outputs: [output('HDMI-A-1'), output('HDMI-A-2')],
    monitors: { 'HDMI-A-1': dell, 'HDMI-A-2': null },
  });
  const config = configLoadWithDesired({ env: {}, defaultPath: '/nonexistent.json', hostname: 'h' }).config;
  const tracker = new StatusTracker({ bus, config, versions: { app: '1', addon: '2', node: 'v24' }, startedAt: 0 });
  t.teardown(() => tracker.close());
  const doc = tracker.document();
  t.deepEqual(doc.outputs, [
    {
      name: 'HDMI-A-1',
      mode: '1920x1080@60',
      monitor: dell,
      power: 'on',
      rotation: 90,
      layout: { fit: 'fill', anchor: 'top', background: '000000' },
      source: null,
      decoder: null,
    },
    { name: 'HDMI-A-2', mode: '1920x1080@60', monitor: null, power: 'on', source: null, decoder: null },
  ]);
  const checked = contractLoad().validate('Status', doc);
  t.true(checked.ok, JSON.stringify(checked));
});

test('display.power: checks its arguments, waits out a flip in flight, and names outputs not driven', async (t) => {
  const calls: string[] = [];
  let busy = 2;
  const screens = {
    kind: 'kms' as const,
    outputs: () => [
      { name: 'HDMI-A-1', width: 1920, height: 1080, refresh: 60 },
      { name: 'HDMI-A-2', width: 1920, height: 1080, refresh: 60 },
    ],
    power(output: string, on: boolean) {
      // The engine's answer while a flip is in flight on the output: twice, then idle.
      if (output === 'HDMI-A-2' && busy-- > 0)
        throw new Error('ERR_KMS_BUSY: output HDMI-A-2 power: flips are in flight');
      calls.push(`${output} ${on}`);
    },
  };
  t.deepEqual(await displayPowerCommand(screens, { on: false }), { outputs: { 'HDMI-A-1': 'off', 'HDMI-A-2': 'off' } });
  t.deepEqual(calls, ['HDMI-A-1 false', 'HDMI-A-2 false']);
  t.deepEqual(await displayPowerCommand(screens, { on: true, outputs: ['HDMI-A-2'] }), {
    outputs: { 'HDMI-A-2': 'on' },
  });
  const refused: Array<[Record<string, unknown>, string, RegExp]> = [
    [{}, 'ERR_BAD_ARGUMENT', /"on" must be true or false/],
    [{ on: 'yes' }, 'ERR_BAD_ARGUMENT', /"on" must be true or false/],
    [{ on: true, outputs: ['HDMI-A-1', 'DP-9'] }, 'ERR_BAD_ARGUMENT', /DP-9 not driven \(driven: HDMI-A-1, HDMI-A-2\)/],
    [{ on: true, screen: 1 }, 'ERR_BAD_ARGUMENT', /unknown field "screen"/],
  ];
  for (const [args, code, message] of refused) {
    const e = await t.throwsAsync(displayPowerCommand(screens, args));
    t.is((e as { code?: string }).code, code);
    t.regex(e?.message ?? '', message);
  }
  t.is(calls.length, 3, 'refused requests changed nothing');
  const virtual = await t.throwsAsync(
    displayPowerCommand({ kind: 'virtual', outputs: screens.outputs }, { on: false }),
  );
  t.is((virtual as { code?: string }).code, 'ERR_NOT_AVAILABLE');
});

test('status: an output whose display is off says so', (t) => {
  const bus = new EventBus(() => {});
  const screens: Screens = {
    kind: 'kms',
    outputs: () => [{ name: 'HDMI-A-1', width: 1920, height: 1080, refresh: 60 }],
    play() {},
    snapshotJpeg: async () => undefined,
    stats: () => [],
    powered: () => false,
  };
  bus.emit('display.ready', { mode: 'kms', device: { path: '/dev/dri/card0', driver: 'vkms' } as never, screens });
  bus.emit('display.outputs', { outputs: [output('HDMI-A-1')], monitors: { 'HDMI-A-1': null } });
  const config = configLoadWithDesired({ env: {}, defaultPath: '/nonexistent.json', hostname: 'h' }).config;
  const tracker = new StatusTracker({ bus, config, versions: { app: '1', addon: '2', node: 'v24' }, startedAt: 0 });
  t.teardown(() => tracker.close());
  t.like(tracker.document().outputs[0], { name: 'HDMI-A-1', power: 'off' });
  t.true(contractLoad().validate('Status', tracker.document()).ok);
});

test('status: a TV in CEC standby says standby, with its adapter; a silent one is unknown', (t) => {
  const bus = new EventBus(() => {});
  let cec: CecState = { adapter: '/dev/cec0', tv: 'standby' };
  let on = false;
  const screens: Screens = {
    kind: 'kms',
    outputs: () => [{ name: 'HDMI-A-1', width: 1920, height: 1080, refresh: 60 }],
    play() {},
    snapshotJpeg: async () => undefined,
    stats: () => [],
    powered: () => on,
    cecState: () => cec,
  };
  bus.emit('display.ready', { mode: 'kms', device: { path: '/dev/dri/card0', driver: 'vkms' } as never, screens });
  bus.emit('display.outputs', { outputs: [output('HDMI-A-1')], monitors: { 'HDMI-A-1': null } });
  const config = configLoadWithDesired({ env: {}, defaultPath: '/nonexistent.json', hostname: 'h' }).config;
  const tracker = new StatusTracker({ bus, config, versions: { app: '1', addon: '2', node: 'v24' }, startedAt: 0 });
  t.teardown(() => tracker.close());
  t.like(tracker.document().outputs[0], { power: 'standby', cec: { adapter: '/dev/cec0', tv: 'standby' } });
  t.true(contractLoad().validate('Status', tracker.document()).ok);
  on = true;
  cec = { adapter: '/dev/cec0', tv: 'unknown', error: 'power status: Give Device Power Status: the TV did not reply' };
  bus.emit('display.cec', {});
  t.like(tracker.document().outputs[0], { power: 'unknown', cec: { tv: 'unknown' } });
  t.true(contractLoad().validate('Status', tracker.document()).ok);
});
