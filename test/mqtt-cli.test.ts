import { spawn } from 'node:child_process';
import test from 'ava';
import { contractLoad } from '../src/mqtt/contract.ts';
import { FleetClient, mosquittoStart } from './helpers/mosquitto.ts';
import { scratchDir, writeJson } from './helpers/tmp.ts';

const BIN = new URL('../bin/multihead', import.meta.url).pathname;
const contract = contractLoad();

/**
 * The real supervisor process, with the real extensions (virtual outputs and the built-in demo
 * on this machine), against a real broker: killed with SIGKILL it cannot say goodbye, so only
 * the broker's last will can tell the fleet.
 */
test('the running supervisor: birth and status with what plays, SIGKILL leaves the last will, a restart counts a new session', async (t) => {
  const broker = await mosquittoStart(t);
  const dataDir = scratchDir(t);
  const env = {
    ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MULTIHEAD_'))),
    MULTIHEAD_CONFIG: writeJson(dataDir, 'config.json', {}),
    MULTIHEAD_DATA_DIR: dataDir,
    MULTIHEAD_DISPLAY_DEVICE: '/dev/dri/card99',
    MULTIHEAD_DEVICE_ID: 'kiosk-cli',
    MULTIHEAD_PLAYBACK_DEMO: '1',
    MULTIHEAD_MQTT_URL: broker.url,
  };
  const fleet = await FleetClient.connect(t, broker.url);
  await fleet.subscribe('multihead/kiosk-cli/#');
  const state = (s: string, session: number) => (m: { topic: string; json: unknown }) =>
    m.topic === 'multihead/kiosk-cli/state' &&
    (m.json as { state: string }).state === s &&
    (m.json as { session: number }).session === session;

  const first = spawn(BIN, [], { env, stdio: 'ignore' });
  t.teardown(() => first.kill('SIGKILL'));
  await fleet.next(state('online', 1), 15_000, 'birth of session 1');
  // The demo's decoder appears in the status once playback reports it (2 s in).
  const status = await fleet.next(
    (m) =>
      m.topic === 'multihead/kiosk-cli/status' &&
      ((m.json as { decode: { decoders: unknown[] } | null }).decode?.decoders.length ?? 0) > 0,
    15_000,
    'status with the demo decoder',
  );
  const doc = status.json as { display: { mode: string }; outputs: Array<{ name: string; source: string }> };
  t.is(doc.display.mode, 'virtual');
  t.deepEqual(
    doc.outputs.map((o) => o.name),
    ['Virtual-1', 'Virtual-2'],
  );
  t.true(doc.outputs.every((o) => o.source.startsWith('pattern:testcard?')));
  const fallback = await fleet.next((m) => (m.json as { type?: string })?.type === 'display.fallback');
  t.like(fallback.json, { severity: 'warn', details: { reason: '/dev/dri/card99 does not exist' } });

  first.kill('SIGKILL');
  const will = await fleet.next(state('offline', 1), 60_000, 'the last will of session 1');
  t.deepEqual(will.json, { state: 'offline', session: 1 });

  const second = spawn(BIN, [], { env, stdio: 'ignore' });
  t.teardown(() => second.kill('SIGKILL'));
  await fleet.next(state('online', 2), 15_000, 'birth of session 2');
  const stopped = new Promise((resolve) => second.once('exit', (code) => resolve(code)));
  second.kill('SIGTERM');
  t.is(await stopped, 0);
  const bye = await fleet.next(state('offline', 2), 5000, 'clean offline of session 2');
  t.is((bye.json as { reason: string }).reason, 'stopped');

  for (const m of fleet.received) {
    const suffix = m.topic.split('/').slice(2).join('/');
    const schema = ({ state: 'State', status: 'Status', events: 'Event', telemetry: 'Telemetry' } as const)[
      suffix as 'state'
    ];
    if (schema) t.true(contract.validate(schema, m.json).ok, `${m.topic}: ${m.text.slice(0, 200)}`);
  }
});
