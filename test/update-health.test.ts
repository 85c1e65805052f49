import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { configLoad } from '../src/config/load.ts';
import type { Config } from '../src/config/schema.ts';
import type { Screens } from '../src/display/screens.ts';
import { HealthTracker } from '../src/status/health.ts';
import { EventBus } from '../src/supervisor/bus.ts';
import { BOOT_HEALTHY_FILE, BootHealthMarker } from '../src/update/boot-health.ts';
import { scratchDir } from './helpers/tmp.ts';

const config = (mqttUrl: string): Config => {
  const c = configLoad({ env: {}, hostname: 'unit', useEnv: false, defaultPath: '/nonexistent/config.json' }).config;
  return { ...c, mqtt: { ...c.mqtt, url: mqttUrl } };
};

const screens: Screens = {
  kind: 'virtual',
  outputs: () => [
    { name: 'Virtual-1', width: 1280, height: 720, refresh: 60 },
    { name: 'Virtual-2', width: 1280, height: 720, refresh: 60 },
  ],
  play: () => {},
  snapshotJpeg: async () => undefined,
  stats: () => [],
};

function rig(t: ExecutionContext, mqttUrl: string, brokerWaitMs: number) {
  const bus = new EventBus(() => {});
  const health = HealthTracker.acquire({ bus, config: config(mqttUrl) });
  t.teardown(() => health.release());
  const runDir = scratchDir(t);
  const written: string[] = [];
  let healthy: () => void = () => {};
  const wrote = new Promise<void>((resolve) => (healthy = resolve));
  const marker = new BootHealthMarker({
    runDir,
    brokerWaitMs,
    onHealthy: (file) => {
      written.push(file);
      healthy();
    },
  });
  t.teardown(() => marker.close());
  health.onChange((h) => marker.observe(h));
  marker.observe(health.assess());
  const file = join(runDir, BOOT_HEALTHY_FILE);
  const within = async (ms: number): Promise<void> => {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        wrote,
        new Promise<void>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no marker within ${ms} ms`)), ms);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  };
  return { bus, file, written, within };
}

/** Both outputs have content; `frames` per output (0: nothing shown yet). */
function play(bus: EventBus, frames: [number, number]): void {
  bus.emit('output.stats', {
    outputs: [
      { name: 'Virtual-1', frames: frames[0], dropped: 0 },
      { name: 'Virtual-2', frames: frames[1], dropped: 0 },
    ],
  });
}

function booted(bus: EventBus): void {
  bus.emit('supervisor.state', { state: 'running' });
  bus.emit('display.ready', { mode: 'virtual', reason: 'test', screens });
  bus.emit('playback.changed', { output: 'Virtual-1', source: 'a.mp4', reason: 'test' });
  bus.emit('playback.changed', { output: 'Virtual-2', source: 'b.mp4', reason: 'test' });
}

test('boot health: written once, when every output with content shows frames and the broker was reached', async (t) => {
  const { bus, file, written, within } = rig(t, 'mqtt://broker.invalid', 60_000);
  booted(bus);
  play(bus, [10, 10]);
  play(bus, [20, 20]);
  t.false(existsSync(file), 'video on both, but the broker was not reached and its wait is not over');
  play(bus, [30, 20]);
  bus.emit('mqtt.connection', { connected: true, session: 1 });
  t.false(existsSync(file), 'broker reached, but one output shows no new frames (degraded)');
  play(bus, [40, 30]);
  await within(5000);
  t.true(existsSync(file));
  t.like(JSON.parse(readFileSync(file, 'utf8')), { broker: 'connected' });
  play(bus, [50, 40]);
  bus.emit('mqtt.connection', { connected: false, session: 1 });
  bus.emit('mqtt.connection', { connected: true, session: 2 });
  t.is(written.length, 1, 'once per boot');
});

test('boot health: a broker that stays away holds the marker back only for the bounded wait', async (t) => {
  const { bus, file, within } = rig(t, 'mqtt://broker.invalid', 300);
  booted(bus);
  play(bus, [10, 10]);
  play(bus, [20, 20]);
  t.false(existsSync(file), 'not at once');
  await within(5000);
  t.like(JSON.parse(readFileSync(file, 'utf8')), { broker: 'disconnected' });
});

test('boot health: content assigned and no frame shown (health error) writes nothing; MQTT off needs video alone', async (t) => {
  const { bus, file } = rig(t, '', 60_000);
  booted(bus);
  play(bus, [0, 0]);
  play(bus, [0, 0]);
  t.false(existsSync(file));
  play(bus, [11, 11]);
  t.true(existsSync(file), 'MQTT off: video alone is enough');
});
