import type { OutputSetting } from '../config/formats.ts';
import type { ConnectorInfo, OutputConfig, VirtualOutputConfig } from '../native/addon.ts';

export interface OutputPlan {
  /** What to hand to `KmsDevice.configure`. */
  outputs: OutputConfig[];
  /** Connectors the config names that cannot be driven now, and why (one log line each). */
  skipped: Array<{ connector: string; reason: string }>;
}

/**
 * Decides which connectors to drive from the `outputs` setting and what the card reports.
 * `auto` takes every connected connector at its preferred mode. A list drives the enabled
 * entries that are connected now; the rest are skipped with a reason, so an unplugged
 * screen never stops the others from starting, and a hotplug later brings it in.
 */
export function outputsPlan(
  setting: 'auto' | readonly OutputSetting[],
  connectors: readonly ConnectorInfo[],
): OutputPlan {
  const drivable = connectors.filter((c) => !c.writeback);
  if (setting === 'auto') {
    return {
      outputs: drivable.filter((c) => c.connected).map((c) => ({ connector: c.name, mode: 'preferred' })),
      skipped: [],
    };
  }
  const plan: OutputPlan = { outputs: [], skipped: [] };
  for (const entry of setting) {
    if (entry.enabled === false) continue;
    const connector = drivable.find((c) => c.name === entry.connector);
    if (!connector) {
      plan.skipped.push({
        connector: entry.connector,
        reason: `no such connector; the card has ${drivable.map((c) => c.name).join(', ') || 'none'}`,
      });
    } else if (!connector.connected) {
      plan.skipped.push({ connector: entry.connector, reason: 'disconnected' });
    } else {
      plan.outputs.push({ connector: entry.connector, mode: entry.mode });
    }
  }
  return plan;
}

/** napi-rs throws plain Errors; the engine leads each message with a stable code, lifted here. */
export function kmsErrorCode(error: unknown): string | undefined {
  const message = error instanceof Error ? error.message : String(error);
  return /^(ERR_KMS_[A-Z_]+): /.exec(message)?.[1];
}

/** Two 720p60 virtual outputs for "auto"; else one per enabled configured connector. */
export function virtualOutputs(setting: 'auto' | readonly OutputSetting[]): VirtualOutputConfig[] {
  if (setting === 'auto') {
    return ['Virtual-1', 'Virtual-2'].map((name) => ({ name, width: 1280, height: 720, refresh: 60 }));
  }
  return setting
    .filter((o) => o.enabled !== false)
    .map((o) => {
      const m = /^(\d+)x(\d+)(?:@(\d+(?:\.\d+)?))?$/.exec(o.mode);
      return {
        name: o.connector,
        width: m ? Number(m[1]) : 1280,
        height: m ? Number(m[2]) : 720,
        refresh: m?.[3] ? Math.round(Number(m[3])) : 60,
      };
    });
}

/** The rotation the `outputs` setting gives each connector (0 where it says nothing). */
export function rotationsOf(setting: 'auto' | readonly OutputSetting[]): (output: string) => 0 | 90 | 180 | 270 {
  const given = new Map(setting === 'auto' ? [] : setting.map((o) => [o.connector, o.rotation ?? 0] as const));
  return (output) => given.get(output) ?? 0;
}
