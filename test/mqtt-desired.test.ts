// The desired-config rules of issue 11 point 3 and 7 as units: trial-apply of connectivity keys
// with rollback, version conflicts, the empty payload, what may not be set remotely, the
// bounded queue. test/hostile/config.hostile.ts attacks the same rules on the real supervisor.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { configLoad } from '../src/config/load.ts';
import { loggingCreate } from '../src/log/logger.ts';
import { contractLoad } from '../src/mqtt/contract.ts';
import { DesiredConfig, DesiredQueue, type ReportedConfig } from '../src/mqtt/desired-config.ts';
import {
  configLoadWithDesired,
  DESIRED_FILE,
  desiredState,
  desiredWrite,
  ROLLED_BACK_FILE,
  TRIAL_BOOTS_MAX,
  TRIAL_FILE,
  trialWrite,
} from '../src/mqtt/desired-store.ts';
import { trialWatch } from '../src/mqtt/desired-trial.ts';
import { EventBus } from '../src/supervisor/bus.ts';
import { CommandRegistry } from '../src/supervisor/commands.ts';
import { until } from './helpers/supervisor.ts';
import { scratchDir, writeJson } from './helpers/tmp.ts';

const contract = contractLoad();
const logger = loggingCreate({ level: 'fatal', ringSize: 10, sink: { write: () => {} } }).logger;
const BROKER = 'mqtt://broker.example:1883';

/** A DesiredConfig over a scratch data directory and config file, counting restarts. */
function rig(t: ExecutionContext, file: Record<string, unknown> = {}) {
  const dir = scratchDir(t);
  const path = writeJson(dir, 'config.json', {
    device: { id: 'kiosk-1' },
    mqtt: { url: BROKER, trialS: 30 },
    dataDir: dir,
    ...file,
  });
  const reload = (desired: Record<string, unknown>) => configLoad({ path, env: {}, desired }).config;
  const restarts: number[] = [];
  const make = () => {
    const loaded = configLoadWithDesired({ path, env: {} });
    return {
      loaded,
      desired: new DesiredConfig({
        contract,
        dataDir: dir,
        reload,
        initial: loaded.config,
        commands: new CommandRegistry(),
        bus: new EventBus(() => {}),
        logger,
        localAppliers: {},
        restart: () => restarts.push(Date.now()),
        restartDelayMs: 0,
      }),
    };
  };
  return { dir, path, restarts, make };
}

const send = (desired: DesiredConfig, doc: unknown): Promise<ReportedConfig> =>
  desired.handle(Buffer.from(typeof doc === 'string' ? doc : JSON.stringify(doc)));
const codes = (report: ReportedConfig): string[] => report.errors.map((e) => e.code);
const tick = (ms = 5) => new Promise((resolve) => setTimeout(resolve, ms));

test('a document that changes connectivity is saved as a trial beside the last good one, and the box restarts into it', async (t) => {
  const { dir, restarts, make } = rig(t);
  const { desired } = make();
  t.is((await send(desired, { version: 1, config: { log: { level: 'debug' } } })).outcome, 'applied');
  const report = await send(desired, { version: 2, config: { mqtt: { url: 'mqtt://nowhere.invalid:1883' } } });
  t.is(report.outcome, 'trial');
  t.is(report.appliedVersion, 1, 'version 1 runs until the restart');
  t.deepEqual(report.trial, { keys: ['mqtt.url'], timeoutS: 30 });
  t.true(report.restartRequired.includes('mqtt.url'));
  await until(() => restarts.length > 0, 'the restart into the trial', 5000);
  t.is(restarts.length, 1);
  const state = desiredState(dir);
  t.is(state.good?.version, 1, 'the last good config is kept');
  t.is(state.trial?.version, 2);

  // The next start runs the trial, counted, with the last good config's trialS.
  const next = make();
  t.is(next.loaded.config.mqtt.url, 'mqtt://nowhere.invalid:1883');
  t.deepEqual(next.loaded.trial, { version: 2, seconds: 30, boots: 1 });
  t.is((await next.desired.boot())?.appliedVersion, 2);
});

test('a config on trial cannot lengthen its own trial, and one that never reaches the broker is rolled back at boot after its starts', (t) => {
  const { dir, make } = rig(t);
  trialWrite(dir, { version: 3, config: { mqtt: { url: 'mqtt://x:1', trialS: 3600 } }, boots: 0, since: 'now' });
  for (let boot = 1; boot <= TRIAL_BOOTS_MAX; boot++) {
    const { loaded } = make();
    t.is(loaded.trial?.seconds, 30, 'trialS from the last good config');
    t.is(loaded.trial?.boots, boot);
  }
  const { loaded } = make();
  t.is(loaded.trial, undefined);
  t.is(loaded.config.mqtt.url, BROKER);
  t.regex(loaded.rolledBack?.reason ?? '', /started 3 times without reaching the broker/);
  t.false(existsSync(join(dir, TRIAL_FILE)));
  t.true(existsSync(join(dir, ROLLED_BACK_FILE)));
});

test('trialWatch: a CONNACK makes the trial the last good config; none in time rolls back and restarts', async (t) => {
  const { dir } = rig(t);
  trialWrite(dir, { version: 4, config: { mqtt: { username: 'new' } }, boots: 1, since: 'now' });
  const bus = new EventBus(() => {});
  const reasons: string[] = [];
  const trial = { version: 4, seconds: 0.05, boots: 1 };
  const watch = {
    bus,
    dataDir: dir,
    trial,
    brokerUrl: 'mqtt://u:pw@b:1883',
    logger,
    restart: (r: string) => reasons.push(r),
  };
  trialWatch(watch);
  bus.emit('mqtt.connection', { connected: true, session: 1 });
  t.is(desiredState(dir).good?.version, 4);
  t.false(existsSync(join(dir, TRIAL_FILE)));
  await tick(100);
  t.deepEqual(reasons, [], 'promoted: no rollback later');

  trialWrite(dir, { version: 5, config: { mqtt: { url: 'mqtt://x:1' } }, boots: 1, since: 'now' });
  trialWatch({ ...watch, trial: { ...trial, version: 5 } });
  await until(() => reasons.length > 0, 'the rollback', 5000);
  t.deepEqual(reasons, ['desired config version 5 rolled back']);
  const back = JSON.parse(readFileSync(join(dir, ROLLED_BACK_FILE), 'utf8'));
  t.is(back.version, 5);
  t.regex(back.reason, /no CONNACK from mqtt:\/\/b:1883 within 0\.05 s/);
  t.false(back.reason.includes('pw'));
  t.is(desiredState(dir).good?.version, 4, 'the last good config is untouched');
});

test('after a rollback the same retained document is answered ERR_ROLLED_BACK, never tried again; other content under its version is a conflict', async (t) => {
  const { dir, restarts, make } = rig(t);
  desiredWrite(dir, { version: 1, config: {} });
  const doc = { version: 2, config: { mqtt: { url: 'mqtt://x:1' } } };
  trialWrite(dir, { ...doc, boots: TRIAL_BOOTS_MAX, since: 'now' });
  make(); // rolls back at boot
  const { desired } = make();
  const booted = await desired.boot();
  t.is(booted?.outcome, 'rejected');
  t.is(booted?.version, 2);
  t.is(booted?.appliedVersion, 1);
  t.deepEqual(codes(booted as ReportedConfig), ['ERR_ROLLED_BACK']);
  t.regex(booted?.errors[0]?.message ?? '', /rolled back to version 1 .*started 3 times/);

  const again = await send(desired, { config: doc.config, version: 2 });
  t.deepEqual(codes(again), ['ERR_ROLLED_BACK']);
  t.deepEqual(codes(await send(desired, { version: 2, config: { log: { level: 'debug' } } })), [
    'ERR_VERSION_CONFLICT',
  ]);
  await tick();
  t.is(restarts.length, 0, 'no new trial');
  // A newer version is taken normally and forgets the rollback.
  t.is((await send(desired, { version: 3, config: { log: { level: 'debug' } } })).outcome, 'applied');
  t.false(existsSync(join(dir, ROLLED_BACK_FILE)));
});

test('the same version with other content is ERR_VERSION_CONFLICT; the same content again is the earlier report', async (t) => {
  const { make } = rig(t);
  const { desired } = make();
  const first = await send(desired, { version: 7, config: { log: { level: 'debug' } } });
  t.is(first.outcome, 'applied');
  t.is(await send(desired, '{"config": {"log": {"level": "debug"}}, "version": 7}'), first);
  const conflict = await send(desired, { version: 7, config: { log: { level: 'warn' } } });
  t.is(conflict.outcome, 'rejected');
  t.deepEqual(codes(conflict), ['ERR_VERSION_CONFLICT']);
  t.is(conflict.appliedVersion, 7);
  t.is(desired.effective.log.level, 'info', 'log.level needs a restart; nothing of the conflicting document applied');
});

test('an empty payload drops the desired layer; going back to the file broker that way is a trial too', async (t) => {
  const { dir, make } = rig(t);
  const { desired } = make();
  await send(desired, { version: 3, config: { log: { level: 'debug' } } });
  t.true(existsSync(join(dir, DESIRED_FILE)));
  const cleared = await desired.handle(Buffer.alloc(0));
  t.is(cleared.outcome, 'applied');
  t.is(cleared.version, null);
  t.is(cleared.appliedVersion, null);
  t.deepEqual(cleared.errors, []);
  t.false(existsSync(join(dir, DESIRED_FILE)));
  t.is(configLoadWithDesired({ path: join(dir, 'config.json'), env: {} }).config.log.level, 'info');

  // A box moved to another broker by the fleet: clearing would take it back to the file's.
  desiredWrite(dir, { version: 4, config: { mqtt: { url: 'mqtt://moved:1883' } } });
  const moved = make();
  await moved.desired.boot();
  const back = await moved.desired.handle(Buffer.alloc(0));
  t.is(back.outcome, 'trial');
  t.deepEqual(back.trial?.keys, ['mqtt.url']);
  const next = make().loaded;
  t.is(next.config.mqtt.url, BROKER);
  t.is(next.trial?.version, 0);
});

test('dataDir cannot be set remotely, and a saved layer holding it is not used', async (t) => {
  const { dir, make } = rig(t);
  const { desired } = make();
  const report = await send(desired, { version: 1, config: { dataDir: '/tmp/elsewhere' } });
  t.deepEqual(codes(report), ['ERR_NOT_REMOTE']);
  t.is(report.errors[0]?.key, 'dataDir');
  t.regex(report.errors[0]?.message ?? '', /cannot be set over MQTT/);
  desiredWrite(dir, { version: 2, config: { dataDir: '/tmp/elsewhere' } });
  const loaded = make().loaded;
  t.is(loaded.config.dataDir, dir);
  t.regex(loaded.desiredProblem ?? '', /dataDir cannot be set over MQTT/);
});

test('DesiredQueue: one at a time, and of a flood only the newest waits', async (t) => {
  const handled: string[] = [];
  let release: () => void = () => {};
  const queue = new DesiredQueue(async (payload) => {
    handled.push(Buffer.from(payload).toString());
    if (handled.length === 1) await new Promise<void>((resolve) => (release = resolve));
  }, logger);
  queue.push(Buffer.from('first'));
  await until(() => handled.length === 1, 'the first to be taken', 5000);
  for (let i = 0; i < 200; i++) queue.push(Buffer.from(`flood-${i}`));
  t.is(queue.waiting, 1);
  release();
  await until(() => handled.length >= 2 && queue.waiting === 0, 'the newest to be handled', 5000);
  t.deepEqual(handled, ['first', 'flood-199']);
  t.is(queue.waiting, 0);
});
