// HDMI-CEC for display power: cec-ctl's output read into facts, adapters matched to outputs,
// and a CEC failure that leaves DPMS done. The fixtures are cec-ctl 1.22.1's own output,
// captured in the test VM (kernel 7.3.4, vivid's adapters, cec-follower as the TV).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import test from 'ava';
import { CecError, CecOutputs, type CecRunner, cecCtl } from '../src/display/cec.ts';
import { cecAssign, cecInfoParse, cecTxProblem, powerShown, tvPowerParse } from '../src/display/cec-parse.ts';
import { displayPowerCommand } from '../src/display/power.ts';
import { scratchDir } from './helpers/tmp.ts';

const fixture = (name: string): string => readFileSync(new URL(`fixtures-cec/${name}.txt`, import.meta.url), 'utf8');

test('adapter info: a configured playback device and an unconfigured one', (t) => {
  t.deepEqual(cecInfoParse(fixture('info-playback')), {
    adapterName: 'vivid-000-vid-out0',
    physicalAddress: '1.0.0.0',
    logicalAddress: 4,
  });
  t.deepEqual(cecInfoParse(fixture('info-unconfigured')), {
    adapterName: 'vivid-000-vid-out0',
    physicalAddress: 'f.f.f.f',
  });
});

test('adapter info: DRM connector info names the card and connector', (t) => {
  // Not captured (no DRM driver with CEC in the VM): the layout of cec-ctl's cec-info.cpp.
  const text = fixture('info-playback').replace(
    /\tConnector Info\s*: None\n/,
    '\tConnector Info             : DRM\n\t\tCard No                 : 0\n\t\tConnector ID            : 79\n',
  );
  t.deepEqual(cecInfoParse(text).drm, { card: 0, connectorId: 79 });
});

test('transmits: sent, not acknowledged', (t) => {
  t.is(cecTxProblem(fixture('standby-sent'), 'Standby'), undefined);
  t.is(cecTxProblem(fixture('image-view-on-sent'), 'Image View On'), undefined);
  t.deepEqual(cecTxProblem(fixture('standby-nack'), 'Standby'), {
    code: 'ERR_CEC_NO_ACK',
    message: 'Standby: the TV did not acknowledge (Not Acknowledged (4), Max Retries)',
  });
  t.is(cecTxProblem('Failed to open /dev/cec9', 'Standby')?.code, 'ERR_CEC_NO_TRANSMIT');
});

test("the TV's power: each report, a refusal, no answer", (t) => {
  t.deepEqual(tvPowerParse(fixture('power-on')), { power: 'on' });
  t.deepEqual(tvPowerParse(fixture('power-standby')), { power: 'standby' });
  t.deepEqual(tvPowerParse(fixture('power-to-on')), { power: 'to-on' });
  t.deepEqual(tvPowerParse(fixture('power-feature-abort')), {
    problem: {
      code: 'ERR_CEC_REFUSED',
      message: 'Give Device Power Status: the TV refused it (unrecognized-op (0x00))',
    },
  });
  const nack = tvPowerParse(fixture('power-nack'));
  t.is('problem' in nack && nack.problem.code, 'ERR_CEC_NO_ACK');
});

test('status power: DPMS, and the TV where CEC reaches it', (t) => {
  t.is(powerShown(true, undefined, false), 'on');
  t.is(powerShown(false, undefined, false), 'off');
  t.is(powerShown(false, 'standby', true), 'standby');
  t.is(powerShown(false, 'to-standby', true), 'standby');
  t.is(powerShown(true, 'on', true), 'on');
  t.is(powerShown(false, 'on', true), 'off');
  t.is(powerShown(true, undefined, true), 'unknown');
  t.is(powerShown(false, undefined, true), 'off');
});

const loose = (path: string) => ({ path, info: cecInfoParse(fixture('info-unconfigured')) });
const wired = (path: string, card: number, connectorId: number) => ({
  path,
  info: { ...cecInfoParse(fixture('info-unconfigured')), drm: { card, connectorId } },
});
const want = (output: string, setting: string, connectorId: number) => ({ output, setting, card: 0, connectorId });

test('matching: connector info first, then the only loose adapter for the only output left', (t) => {
  const { assigned, notes } = cecAssign(
    [want('HDMI-A-1', 'auto', 70), want('HDMI-A-2', 'auto', 80)],
    [wired('/dev/cec0', 0, 80), loose('/dev/cec1')],
  );
  t.deepEqual(
    [...assigned],
    [
      ['HDMI-A-2', '/dev/cec0'],
      ['HDMI-A-1', '/dev/cec1'],
    ],
  );
  t.deepEqual(notes, []);
});

test('matching: two loose adapters for two outputs is no guess; an explicit path and off are obeyed', (t) => {
  const guess = cecAssign(
    [want('HDMI-A-1', 'auto', 70), want('HDMI-A-2', 'auto', 80)],
    [loose('/dev/cec0'), loose('/dev/cec1')],
  );
  t.is(guess.assigned.size, 0);
  t.regex(guess.notes[0] ?? '', /HDMI-A-1, HDMI-A-2: no CEC adapter names their connector.*set outputs\[\]\.cec/);
  const set = cecAssign(
    [want('HDMI-A-1', '/dev/cec1', 70), want('HDMI-A-2', 'off', 80)],
    [loose('/dev/cec0'), loose('/dev/cec1')],
  );
  t.deepEqual([...set.assigned], [['HDMI-A-1', '/dev/cec1']]);
  const missing = cecAssign([want('HDMI-A-1', '/dev/cec4', 70)], [loose('/dev/cec0')]);
  t.is(missing.assigned.size, 0);
  t.deepEqual(missing.notes, ['HDMI-A-1: outputs[].cec names /dev/cec4, which does not exist']);
  // An adapter wired to another connector is never taken as the loose one.
  t.is(cecAssign([want('HDMI-A-1', 'auto', 70)], [wired('/dev/cec0', 0, 99)]).assigned.size, 0);
});

/**
 * A cec-ctl stand-in answering from the fixtures; Give Device Power Status gets `tv`, which a
 * sent Standby or Image View On changes as a TV would (unless `tv` is fixed: `stuck`).
 */
function fakeCecCtl(replies: { tv: string; standby?: string; stuck?: boolean }): { run: CecRunner; calls: string[][] } {
  const calls: string[][] = [];
  let tv = replies.tv;
  const run: CecRunner = async (args) => {
    calls.push([...args]);
    if (args.includes('--playback') || args.length === 2) return fixture('info-playback');
    if (args.includes('--standby')) {
      if (!replies.stuck) tv = 'power-standby';
      return fixture(replies.standby ?? 'standby-sent');
    }
    if (args.includes('--image-view-on') || args.includes('--active-source')) {
      if (!replies.stuck) tv = 'power-on';
      return fixture('image-view-on-sent');
    }
    if (args.includes('--give-device-power-status')) return fixture(tv);
    throw new Error(`unexpected cec-ctl ${args.join(' ')}`);
  };
  return { run, calls };
}

const silentLogger = () => {
  const lines: string[] = [];
  const log = (a: unknown, b?: string) => lines.push(typeof a === 'string' ? a : (b ?? ''));
  return { logger: { info: log, warn: log, debug: log, error: log } as never, lines };
};

test('CecOutputs: set up as a playback device, standby sent and read back; wake sends Image View On then Active Source at our address', async (t) => {
  const { run, calls } = fakeCecCtl({ tv: 'power-standby' });
  const devDir = makeDev(t, ['cec0']);
  const { logger } = silentLogger();
  let changes = 0;
  const cec = new CecOutputs({ logger, onChange: () => changes++, run, devDir });
  await cec.setup([want('HDMI-A-1', 'auto', 70)]);
  t.deepEqual(cec.state('HDMI-A-1'), { adapter: `${devDir}/cec0`, tv: 'standby' });
  t.deepEqual(await cec.power('HDMI-A-1', false), { tv: 'standby' });
  t.true(calls.some((c) => c.join(' ') === `-d ${devDir}/cec0 -s -t 0 --standby`));
  calls.length = 0;
  t.deepEqual(await cec.power('HDMI-A-1', true), { tv: 'on' });
  t.deepEqual(calls[0], ['-d', `${devDir}/cec0`, '-s', '-t', '0', '--image-view-on']);
  t.deepEqual(calls[1], ['-d', `${devDir}/cec0`, '-s', '-t', '15', '--active-source', 'phys-addr=1.0.0.0']);
  t.true(changes > 0);
  t.is(await cec.power('HDMI-A-2', false), undefined, 'an output without an adapter');
});

test('display.power: a TV that does not answer leaves DPMS done and names the CEC problem', async (t) => {
  const { run } = fakeCecCtl({ tv: 'power-nack', standby: 'standby-nack', stuck: true });
  const devDir = makeDev(t, ['cec0']);
  const { logger, lines } = silentLogger();
  const cec = new CecOutputs({ logger, onChange: () => {}, run, devDir });
  await cec.setup([want('HDMI-A-1', 'auto', 70)]);
  const dpms: string[] = [];
  const screens = {
    kind: 'kms' as const,
    outputs: () => [{ name: 'HDMI-A-1', width: 1920, height: 1080, refresh: 60 }],
    power: (o: string, on: boolean) => {
      dpms.push(`${o} ${on}`);
    },
    cecPower: (o: string, on: boolean) => cec.power(o, on),
  };
  const result = await displayPowerCommand(screens, { on: false });
  t.deepEqual(dpms, ['HDMI-A-1 false']);
  t.deepEqual(result.outputs, { 'HDMI-A-1': 'off' });
  t.is(result.cec?.['HDMI-A-1']?.tv, 'unknown');
  t.regex(result.cec?.['HDMI-A-1']?.error ?? '', /standby: Standby: the TV did not acknowledge/);
  t.true(
    lines.some((l) => /^output HDMI-A-1: CEC standby/.test(l)),
    lines.join('\n'),
  );
  t.regex(cec.state('HDMI-A-1')?.error ?? '', /did not acknowledge/);
});

test('no adapter: display.power is DPMS alone, as before', async (t) => {
  const devDir = makeDev(t, []);
  const { logger } = silentLogger();
  const cec = new CecOutputs({ logger, onChange: () => {}, run: fakeCecCtl({ tv: 'power-on' }).run, devDir });
  await cec.setup([want('HDMI-A-1', 'auto', 70)]);
  const screens = {
    kind: 'kms' as const,
    outputs: () => [{ name: 'HDMI-A-1', width: 1920, height: 1080, refresh: 60 }],
    power: () => {},
    cecPower: (o: string, on: boolean) => cec.power(o, on),
  };
  t.deepEqual(await displayPowerCommand(screens, { on: false }), { outputs: { 'HDMI-A-1': 'off' } });
});

/** A directory standing in for /dev with these (empty) adapter nodes. */
function makeDev(t: Parameters<typeof scratchDir>[0], names: string[]): string {
  const dir = `${scratchDir(t)}/dev`;
  mkdirSync(dir);
  for (const n of names) writeFileSync(`${dir}/${n}`, '');
  return dir;
}

test.serial('cec-ctl itself: an adapter that is not there and a missing tool are named', async (t) => {
  // The host's cec-ctl (v4l-utils, scripts/setup.sh): an absent adapter is its own error.
  const gone = await t.throwsAsync(cecCtl(['-d', '/dev/cec99', '-s', '-t', '0', '--standby']), {
    instanceOf: CecError,
  });
  t.is((gone as CecError).code, 'ERR_CEC_ADAPTER', gone?.message);
  t.regex(gone?.message ?? '', /^cec-ctl on \/dev\/cec99: Failed to open \/dev\/cec99/);
  const path = process.env.PATH;
  process.env.PATH = '/nonexistent';
  t.teardown(() => {
    process.env.PATH = path;
  });
  const missing = await t.throwsAsync(cecCtl(['-d', '/dev/cec0']), { instanceOf: CecError });
  process.env.PATH = path;
  t.is((missing as CecError).code, 'ERR_CEC_NO_TOOL');
});
