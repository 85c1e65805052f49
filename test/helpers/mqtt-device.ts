import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { configLoad } from '../../src/config/load.ts';
import type { Config } from '../../src/config/schema.ts';
import { type MqttDeps, mqttCreate } from '../../src/extensions/mqtt.ts';
import { type Logger, loggingCreate } from '../../src/log/logger.ts';
import { loadAddon } from '../../src/native/addon.ts';
import { Controller } from '../../src/supervisor/controller.ts';
import type { ExtensionDefinition } from '../../src/supervisor/extension.ts';
import { scratchDir } from './tmp.ts';

export interface DeviceOptions {
  readonly url: string;
  readonly id?: string;
  readonly groups?: string[];
  /** Config file contents (the lowest non-default layer). */
  readonly file?: Record<string, unknown>;
  /** Reuse a data directory (session counter, saved desired config) across starts. */
  readonly dataDir?: string;
  readonly deps?: Partial<MqttDeps>;
  /** Extensions started before MQTT (fakes that offer commands). */
  readonly before?: ExtensionDefinition[];
  /** Extensions started after MQTT (whose bus events at start MQTT must already hear). */
  readonly after?: ExtensionDefinition[];
}

export interface Device {
  readonly controller: Controller;
  readonly config: Config;
  readonly dataDir: string;
  readonly lines: string[];
  readonly logger: Logger;
  readonly restarts: number[];
  /** The run directory the `reboot` command writes its request into (as /run/multihead on a box). */
  readonly runDir: string;
  stop(): Promise<boolean>;
}

/**
 * A supervisor in this process with the MQTT extension (and any fakes given), configured the
 * way a file and environment would, with restart and reboot recorded instead of done.
 */
export async function deviceStart(t: ExecutionContext, options: DeviceOptions): Promise<Device> {
  const dataDir = options.dataDir ?? scratchDir(t);
  const dir = scratchDir(t);
  const thermal = join(dir, 'thermal');
  mkdirSync(join(thermal, 'thermal_zone0'), { recursive: true });
  writeFileSync(join(thermal, 'thermal_zone0', 'temp'), '47500\n');
  writeFileSync(join(thermal, 'thermal_zone0', 'type'), 'cpu-thermal\n');
  const configPath = join(dir, 'config.json');
  writeFileSync(
    configPath,
    JSON.stringify({
      ...options.file,
      device: { id: options.id ?? 'dev-1', groups: options.groups ?? [], ...(options.file?.device as object) },
      mqtt: { url: options.url, ...(options.file?.mqtt as object) },
      dataDir,
    }),
  );
  const load = (desired?: Record<string, unknown>): Config =>
    configLoad({ path: configPath, env: {}, hostname: 'test-host', ...(desired ? { desired } : {}) }).config;
  const config = load();
  const lines: string[] = [];
  const logging = loggingCreate({ level: 'debug', ringSize: 500, sink: { write: (l) => lines.push(l) } });
  const restarts: number[] = [];
  const runDir = join(dir, 'run');
  mkdirSync(runDir);
  const controller = new Controller({
    config,
    logger: logging.logger,
    logRing: logging.ring,
    addon: loadAddon(),
    extensions: [
      ...(options.before ?? []),
      {
        name: 'mqtt',
        create: (context) =>
          mqttCreate(context, {
            restart: () => restarts.push(Date.now()),
            runDir,
            reload: (desired) => load(desired),
            backoff: { initialMs: 100, maxMs: 400 },
            thermalDir: thermal,
            graceMs: 20,
            rate: { burst: 1000, perSecond: 1000 },
            ...options.deps,
          }),
      },
      ...(options.after ?? []),
    ],
    stopTimeoutMs: 1500,
  });
  await controller.start();
  let stopped: Promise<boolean> | undefined;
  const stop = (): Promise<boolean> => {
    stopped ??= controller.stop('test over');
    return stopped;
  };
  t.teardown(stop);
  return { controller, config, dataDir, lines, logger: logging.logger, restarts, runDir, stop };
}
