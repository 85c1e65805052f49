import test from 'ava';
import { kmsErrorCode, outputsPlan } from '../src/display/outputs.ts';
import type { ConnectorInfo } from '../src/native/addon.ts';

const connector = (name: string, connected: boolean, writeback = false): ConnectorInfo => ({
  id: name.length,
  name,
  connected,
  writeback,
  modes: [],
  possibleCrtcs: [0],
});
const card = [
  connector('HDMI-A-1', true),
  connector('HDMI-A-2', false),
  connector('DP-1', true),
  connector('Writeback-1', false, true),
];

test('auto drives every connected connector at its preferred mode, never writeback', (t) => {
  t.deepEqual(outputsPlan('auto', card), {
    outputs: [
      { connector: 'HDMI-A-1', mode: 'preferred' },
      { connector: 'DP-1', mode: 'preferred' },
    ],
    skipped: [],
  });
});

test('a list keeps its modes and order and skips what cannot be driven, saying why', (t) => {
  const plan = outputsPlan(
    [
      { connector: 'DP-1', mode: '1280x720@60' },
      { connector: 'HDMI-A-2', mode: 'preferred' },
      { connector: 'HDMI-A-7', mode: 'preferred' },
      { connector: 'HDMI-A-1', mode: '1920x1080', enabled: false },
      { connector: 'Writeback-1', mode: 'preferred' },
    ],
    card,
  );
  t.deepEqual(plan.outputs, [{ connector: 'DP-1', mode: '1280x720@60' }]);
  t.deepEqual(plan.skipped, [
    { connector: 'HDMI-A-2', reason: 'disconnected' },
    { connector: 'HDMI-A-7', reason: 'no such connector; the card has HDMI-A-1, HDMI-A-2, DP-1' },
    { connector: 'Writeback-1', reason: 'no such connector; the card has HDMI-A-1, HDMI-A-2, DP-1' },
  ]);
});

test('auto with nothing plugged in drives nothing', (t) => {
  t.deepEqual(outputsPlan('auto', [connector('HDMI-A-1', false)]).outputs, []);
});

test('kmsErrorCode lifts the engine code out of the message', (t) => {
  t.is(
    kmsErrorCode(new Error('ERR_KMS_MODE_NOT_FOUND: connector HDMI-A-1: mode 1x1 not offered')),
    'ERR_KMS_MODE_NOT_FOUND',
  );
  t.is(kmsErrorCode(new Error('something else')), undefined);
  t.is(kmsErrorCode('ERR_KMS_CLOSED: the KMS device is closed'), 'ERR_KMS_CLOSED');
});
