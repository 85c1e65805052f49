// Attacks on the configuration paths (issue 11, points 3, 4, 7, 9, 10): a desired config that
// would cut the box off, version games, clearing the retained document, reserved names, a flood
// of desired configs, and provisioning files that would leave or print secrets.
import { spawnSync } from 'node:child_process';
import { existsSync, linkSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { FleetClient, freePort, mosquittoStart, type Received } from '../helpers/mosquitto.ts';
import { until } from '../helpers/supervisor.ts';
import { scratchDir, writeJson } from '../helpers/tmp.ts';
import { HostileBox } from './box.ts';

// The attacks that start a supervisor run one after another: several booting at once on a
// small CI machine would make their births slow, not their subjects wrong.

const ROOT = new URL('../../', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/multihead');
const APPLY = join(ROOT, 'provision/apply.ts');
const PROVISION = join(ROOT, 'provision/multihead-provision');

interface Reported {
  version: number | null;
  outcome: 'applied' | 'rejected' | 'trial';
  appliedVersion: number | null;
  errors: Array<{ key: string; code: string; message: string }>;
  trial?: { keys: string[]; timeoutS: number };
}
interface ConfigGet {
  ok: boolean;
  result: { version: number | null; config: { mqtt: { telemetryIntervalS: number; url: string } } };
}

const reportedTopic = (box: HostileBox): string => `multihead/${box.id}/config/reported`;
const desiredTopic = (box: HostileBox): string => `multihead/${box.id}/config/desired`;
const asReported = (m: Received): Reported => m.json as Reported;

/** The first `config/reported` after message number `mark` that matches. */
function reportedAfter(
  box: HostileBox,
  mark: number,
  match: (r: Reported) => boolean,
  what: string,
): Promise<Reported> {
  return until(
    () =>
      box.fleet.received
        .slice(mark)
        .filter((m) => m.topic === reportedTopic(box) && m.json !== undefined)
        .map(asReported)
        .find(match),
    what,
    20_000,
  );
}

async function desiredPublish(box: HostileBox, doc: unknown): Promise<void> {
  await box.fleet.publish(desiredTopic(box), typeof doc === 'string' ? doc : JSON.stringify(doc), { retain: true });
}

async function configGet(box: HostileBox): Promise<ConfigGet['result']> {
  const reply = (await box.request('config.get')).json as ConfigGet;
  return reply.result;
}

/** provision/apply.ts as multihead-boot runs it, on a scratch data partition. */
function applyRun(data: string, file: string) {
  const r = spawnSync(process.execPath, [APPLY, 'apply', file], {
    encoding: 'utf8',
    env: { ...process.env, MULTIHEAD_DATA_DIR: data },
  });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

test.serial(
  '3 a desired config with an unreachable mqtt.url is tried, rolled back, and the box is back online reporting ERR_ROLLED_BACK',
  async (t) => {
    const box = await HostileBox.start(t, { file: { mqtt: { trialS: 4 } } });
    const dead = `mqtt://127.0.0.1:${await freePort()}`;
    let mark = box.fleet.received.length;
    await desiredPublish(box, { version: 1, config: { mqtt: { url: dead } } });
    const trial = await reportedAfter(box, mark, (r) => r.outcome === 'trial', 'the trial report');
    t.deepEqual(trial.trial, { keys: ['mqtt.url'], timeoutS: 4 });
    t.is(await box.exited(), 0, 'an orderly restart into the trial');

    // Nothing restarts the process here; systemd would. The trial start reaches no broker ...
    await box.boot({ birth: false });
    await box.logLine(/on trial: it must reach mqtt:\/\/127\.0\.0\.1:\d+ within 4 s/, 'the trial start');
    t.is(await box.exited(20_000), 0, 'rolled back after mqtt.trialS: an orderly restart');
    t.true(existsSync(box.path('config-desired.rolled-back.json')));
    t.false(existsSync(box.path('config-desired.trial.json')));

    // ... and the start after it is on the last good config: online, saying why.
    mark = box.fleet.received.length;
    await box.boot();
    const back = await reportedAfter(box, mark, (r) => r.errors[0]?.code === 'ERR_ROLLED_BACK', 'ERR_ROLLED_BACK');
    t.is(back.version, 1);
    t.is(back.appliedVersion, null);
    t.regex(back.errors[0]?.message ?? '', /no CONNACK from mqtt:\/\/127\.0\.0\.1:\d+ within 4 s/);
    // The retained document comes again after the connect: answered the same way, not tried again.
    await until(
      () =>
        box.fleet.received
          .slice(mark)
          .filter((m) => m.topic === reportedTopic(box) && asReported(m).errors[0]?.code === 'ERR_ROLLED_BACK')
          .length >= 2,
      'the retained desired document to be answered',
      20_000,
    );
    t.is((await configGet(box)).config.mqtt.url, box.broker.url);
    t.is(box.child?.exitCode, null, 'no second trial, no restart loop');
  },
);

test.serial(
  '3 the same version with other content is refused with ERR_VERSION_CONFLICT and the applied content keeps running',
  async (t) => {
    const box = await HostileBox.start(t);
    const mark = box.fleet.received.length;
    await desiredPublish(box, { version: 5, config: { mqtt: { telemetryIntervalS: 30 } } });
    await reportedAfter(box, mark, (r) => r.version === 5 && r.outcome === 'applied', 'version 5 applied');
    await desiredPublish(box, { version: 5, config: { mqtt: { telemetryIntervalS: 7 } } });
    const conflict = await reportedAfter(box, mark, (r) => r.outcome === 'rejected', 'the conflict');
    t.deepEqual(
      conflict.errors.map((e) => e.code),
      ['ERR_VERSION_CONFLICT'],
    );
    t.is(conflict.appliedVersion, 5);
    const running = await configGet(box);
    t.is(running.version, 5);
    t.is(running.config.mqtt.telemetryIntervalS, 30);
  },
);

test.serial('3 an empty retained desired payload drops the desired layer, also for the next start', async (t) => {
  const box = await HostileBox.start(t);
  let mark = box.fleet.received.length;
  await desiredPublish(box, { version: 2, config: { mqtt: { telemetryIntervalS: 30 } } });
  await reportedAfter(box, mark, (r) => r.version === 2 && r.outcome === 'applied', 'version 2 applied');
  t.true(existsSync(box.path('config-desired.json')));
  mark = box.fleet.received.length;
  await desiredPublish(box, '');
  const dropped = await reportedAfter(box, mark, (r) => r.version === null, 'the drop report');
  t.like(dropped, { outcome: 'applied', appliedVersion: null, errors: [] });
  t.false(existsSync(box.path('config-desired.json')));
  t.like(await configGet(box), { version: null, config: { mqtt: { telemetryIntervalS: 60 } } });
  t.is(await box.stop(), 0);
  await box.boot();
  t.like(await configGet(box), { version: null, config: { mqtt: { telemetryIntervalS: 60 } } });
});

test.serial('3 dataDir cannot be set over MQTT (the rollback lives there)', async (t) => {
  const box = await HostileBox.start(t);
  const mark = box.fleet.received.length;
  await desiredPublish(box, { version: 3, config: { dataDir: scratchDir(t) } });
  const refused = await reportedAfter(box, mark, (r) => r.version === 3, 'the dataDir report');
  t.is(refused.outcome, 'rejected');
  t.like(refused.errors[0], { key: 'dataDir', code: 'ERR_NOT_REMOTE' });
  t.false(existsSync(box.path('config-desired.json')));
});

test.serial(
  '3 a provisioning file on the ESP drops the fleet desired layer: the technician on site wins',
  async (t) => {
    const box = await HostileBox.start(t);
    const mark = box.fleet.received.length;
    await desiredPublish(box, { version: 4, config: { mqtt: { telemetryIntervalS: 30 } } });
    await reportedAfter(box, mark, (r) => r.version === 4 && r.outcome === 'applied', 'version 4 applied');
    t.is(await box.stop(), 0);
    t.true(existsSync(box.path('config-desired.json')));
    // Cleared while the box is away, so the broker's retained copy cannot bring the layer back.
    await box.fleet.publish(desiredTopic(box), '', { retain: true });

    const esp = scratchDir(t);
    const file = writeJson(esp, 'multihead-provision.json', { device: { name: 'Lobby', id: box.id } });
    const applied = applyRun(box.dataDir, file);
    t.is(applied.code, 0, applied.out);
    t.false(existsSync(box.path('config-desired.json')));
    t.false(existsSync(file));

    const lines = box.lines.length;
    await box.boot();
    const starting = await until(
      () => box.lines.slice(lines).find((l) => l.includes('"desiredVersion"')),
      'the starting line',
    );
    t.regex(starting, /"desiredVersion":null/);
    t.like(await configGet(box), { version: null, config: { mqtt: { telemetryIntervalS: 60 } } });
  },
);

test('4 device ids and groups all/group/replies are refused by config check (exit 78), by the supervisor and by provisioning', async (t) => {
  const dir = scratchDir(t);
  const broker = await mosquittoStart(t);
  const fleet = await FleetClient.connect(t, broker.url);
  await fleet.subscribe('multihead/#');
  const cases: Array<[string, Record<string, unknown>]> = [
    ['all', { id: 'all' }],
    ['replies', { id: 'replies' }],
    ['group', { id: 'group' }],
    ['group all', { id: 'kiosk-g', groups: ['lobby', 'all'] }],
  ];
  for (const [name, device] of cases) {
    const file = writeJson(dir, `${name}.json`, { device, mqtt: { url: broker.url }, dataDir: dir });
    const check = spawnSync(BIN, ['config', 'check', file], { encoding: 'utf8' });
    t.is(check.status, 78, `${name}: ${check.stdout}${check.stderr}`);
    t.regex(check.stderr, /device\.(id|groups)/, name);
    const run = spawnSync(BIN, [], {
      encoding: 'utf8',
      timeout: 30_000,
      env: { ...process.env, MULTIHEAD_CONFIG: file, MULTIHEAD_DISPLAY_DEVICE: '/dev/dri/card99' },
    });
    t.is(run.status, 78, `${name}: the supervisor must not start: ${run.stderr}`);
    const provision = spawnSync(
      PROVISION,
      ['check', writeJson(dir, `p-${name}.json`, { device: { name, ...device } })],
      {
        encoding: 'utf8',
      },
    );
    t.is(provision.status, 65, `${name}: ${provision.stderr}`);
    t.regex(provision.stderr, /device\.(id|groups): must not/, name);
  }
  // The broker heard nothing from any of them (a ping from this client proves the recorder is live).
  await fleet.publish('multihead/probe', 'x');
  await fleet.next((m) => m.topic === 'multihead/probe', 5000, 'the probe');
  t.deepEqual(
    fleet.received.filter((m) => m.topic !== 'multihead/probe').map((m) => m.topic),
    [],
  );
});

test.serial('7 a flood of 200 desired configs ends on the newest, skipping the waiting ones', async (t) => {
  const box = await HostileBox.start(t);
  const mark = box.fleet.received.length;
  // Padded to 100 KiB each: 20 MiB in all, which an unbounded queue would hold at once.
  const pad = ' '.repeat(100 * 1024);
  await Promise.all(
    Array.from({ length: 200 }, (_, i) =>
      desiredPublish(
        box,
        `${JSON.stringify({ version: i + 1, config: { mqtt: { telemetryIntervalS: 10 + i } } })}${pad}`,
      ),
    ),
  );
  const last = await reportedAfter(box, mark, (r) => r.version === 200, 'version 200');
  t.is(last.outcome, 'applied');
  t.like(await configGet(box), { version: 200, config: { mqtt: { telemetryIntervalS: 209 } } });
  const reports = box.fleet.received.slice(mark).filter((m) => m.topic === reportedTopic(box)).length;
  t.true(reports < 200, `${reports} reports: waiting documents were not skipped`);
  await box.logLine(/older desired config\(s\) skipped: the newest wins/, 'the skip line');
  const status = readFileSync(`/proc/${box.child?.pid}/status`, 'utf8');
  const peakKiB = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1]);
  t.log(`peak RSS ${Math.round(peakKiB / 1024)} MiB after the flood`);
});

test('9 a rejected provisioning file is overwritten and replaced by its reasons: no secret left on the ESP', (t) => {
  const esp = scratchDir(t);
  const data = scratchDir(t);
  const secret = 'esp-pw-3b7d1f';
  const key =
    '-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n';
  const file = writeJson(esp, 'multihead-provision.json', {
    device: { name: 'x', id: 'all' },
    mqtt: { url: `mqtts://dev:${secret}@broker:8883`, password: secret, key },
  });
  // Another name for the same inode shows whether the bytes were overwritten, not just unlinked.
  const shadow = join(scratchDir(t), 'shadow');
  linkSync(file, shadow);
  const r = applyRun(data, file);
  t.is(r.code, 1, r.out);
  t.deepEqual(readdirSync(esp), ['multihead-provision.errors.txt']);
  const reasons = readFileSync(join(esp, 'multihead-provision.errors.txt'), 'utf8');
  t.regex(reasons, /device\.id/);
  for (const text of [reasons, r.out, readFileSync(shadow, 'latin1')]) {
    t.false(text.includes(secret), text);
    t.false(text.includes('PRIVATE KEY'), text);
  }
  t.regex(readFileSync(shadow, 'latin1'), /^\0+$/);
  t.deepEqual(readdirSync(data), [], 'nothing written to the data partition');
});

test('10 provisioning output shows the broker without its user:password', (t) => {
  const dir = scratchDir(t);
  const data = join(dir, 'data');
  mkdirSync(data);
  const secret = 'url-pw-9e2c';
  const file = join(dir, 'multihead-provision.json');
  writeFileSync(file, JSON.stringify({ device: { name: 'x' }, mqtt: { url: `mqtt://dev:${secret}@broker:1883` } }));
  const ok = applyRun(data, file);
  t.is(ok.code, 0, ok.out);
  t.regex(ok.out, /broker mqtt:\/\/\[redacted\]@broker:1883/);
  t.false(ok.out.includes(secret), ok.out);
  const bad = spawnSync(
    PROVISION,
    ['check', writeJson(dir, 'bad.json', { device: { name: 'x' }, mqtt: { url: `dev:${secret}@broker` } })],
    { encoding: 'utf8' },
  );
  t.is(bad.status, 65);
  t.regex(bad.stderr, /mqtt\.url/);
  t.false(bad.stderr.includes(secret), bad.stderr);
});
