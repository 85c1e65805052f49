import { configLoad } from '../config/load.ts';
import { type Contract, contractLoad } from '../mqtt/contract.ts';
import { MqttExtension, type MqttSettings } from '../mqtt/extension.ts';
import { runDirFromEnv } from '../mqtt/reboot-request.ts';
import type { Extension, ExtensionContext } from '../supervisor/extension.ts';
import { appVersion } from '../version.ts';

/** What the MQTT extension takes from its surroundings; tests replace the parts that would touch the machine. */
export interface MqttDeps extends MqttSettings {
  readonly contract?: Contract;
}

export function mqttDefaults(): MqttDeps {
  return {
    // An orderly stop (offline published, outputs released); systemd's Restart=always starts
    // the service again, while `systemctl stop` still stops it for good.
    restart: () => process.kill(process.pid, 'SIGTERM'),
    runDir: runDirFromEnv(),
    // The same layers as at start (file from MULTIHEAD_CONFIG or the default path, environment).
    reload: (desired) => configLoad({ desired }).config,
    backoff: { initialMs: 1000, maxMs: 60_000 },
    thermalDir: '/sys/class/thermal',
    procDir: '/proc',
    sessionExpiryS: 3600,
    graceMs: 500,
    rate: { burst: 20, perSecond: 5 },
    startedAt: Date.now(),
  };
}

/** The fleet transport (src/mqtt/extension.ts, docs/mqtt.md) with its dependencies taken from the context. */
export function mqttCreate(context: ExtensionContext, overrides: Partial<MqttDeps> = {}): Extension {
  const { contract, ...settings }: MqttDeps = { ...mqttDefaults(), ...overrides };
  const { config, logger, bus, commands, addon, logRing } = context;
  return new MqttExtension({
    ...settings,
    config,
    logger,
    bus,
    commands,
    logRing,
    contract: contract ?? contractLoad(),
    versions: { app: appVersion, addon: addon.version(), node: process.version },
  });
}
