import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { configLoad } from '../src/config/load.ts';
import { mqttCreate } from '../src/extensions/mqtt.ts';
import { loggingCreate } from '../src/log/logger.ts';
import { contractLoad } from '../src/mqtt/contract.ts';
import type { DecodeStatus } from '../src/native/addon.ts';
import { loadAddon } from '../src/native/addon.ts';
import { EventBus } from '../src/supervisor/bus.ts';
import { CommandRegistry } from '../src/supervisor/commands.ts';
import type { Extension } from '../src/supervisor/extension.ts';

/**
 * One process hosting many simulated devices for bench/fleet.ts. Each device is the real MQTT
 * extension (its own connection, session counter, command router, status tracker) with a stub
 * playback: `play` on two virtual outputs without decoding, reported the way the playback
 * extension reports decoders (a `decode.status` bus event), so status follows the command.
 *
 * argv: <brokerUrl> <first index> <count> <data root>. Talks to the parent over IPC:
 * sends {ready} when every device is online, answers {cpu} with process.cpuUsage().
 */
const [url, firstText, countText, root] = process.argv.slice(2) as [string, string, string, string];
const first = Number(firstText);
const count = Number(countText);
const addon = loadAddon();
const contract = contractLoad();
// One quiet logger for the whole process: the bench measures MQTT, not logging.
const logging = loggingCreate({ level: 'error', ringSize: 50, sink: { write: () => {} } });
const OUTPUTS = ['Virtual-1', 'Virtual-2'];

const devices: Extension[] = [];
let online = 0;

for (let i = first; i < first + count; i++) {
  const id = `bench-${String(i).padStart(4, '0')}`;
  const dataDir = join(root, id);
  mkdirSync(dataDir, { recursive: true });
  const config = configLoad({
    env: {
      MULTIHEAD_DEVICE_ID: id,
      MULTIHEAD_DEVICE_GROUPS: 'bench',
      MULTIHEAD_MQTT_URL: url,
      MULTIHEAD_DATA_DIR: dataDir,
    },
    defaultPath: '/nonexistent/config.json',
    hostname: id,
  }).config;
  const bus = new EventBus(() => {});
  const commands = new CommandRegistry();
  let decoderId = 0;
  const status = (source: string): DecodeStatus => ({
    sharedDecode: true,
    maxDecoders: 4,
    decoders: [
      {
        id: ++decoderId,
        source,
        hwMode: 'auto',
        startSeconds: 0,
        consumers: [...OUTPUTS],
        hw: false,
        path: 'software',
        exported: 0,
        codec: 'h264',
        width: 1920,
        height: 1080,
        frameRate: 30,
        fps: 30,
        frames: 0,
        late: 0,
        delayed: 0,
        loops: 0,
        queueDepth: 0,
        bytesCopiedPerFrame: 0,
        index: 'none',
        indexKeyframes: 0,
        prerolled: true,
      },
    ],
  });
  commands.register({
    name: 'play',
    description: 'bench stub: switch both virtual outputs to the source (no decoding)',
    handler: (args) => {
      const source = String(args.source);
      bus.emit('decode.status', { status: status(source) });
      for (const output of OUTPUTS) bus.emit('playback.changed', { output, source, reason: 'play command' });
      return { outputs: OUTPUTS, source, decoder: decoderId };
    },
  });
  bus.emit('decode.status', { status: status('demo') });
  bus.on('mqtt.connection', ({ connected }) => {
    if (connected && ++online === count) process.send?.({ ready: true });
  });
  const extension = mqttCreate(
    { config, logger: logging.logger, bus, commands, addon, logRing: logging.ring },
    {
      contract,
      restart: () => {},
      // A bench never reboots: the request has nowhere to go (ERR_REBOOT_UNAVAILABLE).
      runDir: '/nonexistent/run',
      backoff: { initialMs: 500, maxMs: 5000 },
      rate: { burst: 1000, perSecond: 1000 },
    },
  );
  devices.push(extension);
  await extension.start();
}

process.on('message', async (message: { cpu?: boolean; stop?: boolean }) => {
  if (message.cpu) process.send?.({ cpu: process.cpuUsage() });
  if (message.stop) {
    await Promise.all(devices.map((d) => d.stop()));
    process.exit(0);
  }
});
