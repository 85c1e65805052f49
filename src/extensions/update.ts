import { statfs } from 'node:fs/promises';
import { nodeFs } from '../content/fs.ts';
import { rebootRequestWrite, runDirFromEnv } from '../mqtt/reboot-request.ts';
import type { Extension, ExtensionContext } from '../supervisor/extension.ts';
import { UpdateExtension, type UpdateExtensionDeps } from '../update/extension.ts';
import { SysupdateInstaller, sourceLinkOf } from '../update/installer.ts';
import { bootIdRead, runningVersionRead } from '../update/running-version.ts';

/** The image's systemd-sysupdate transfer files. */
export const SYSUPDATE_DEFINITIONS = '/usr/lib/sysupdate.d';

export type UpdateDeps = Omit<UpdateExtensionDeps, 'config' | 'logger' | 'bus' | 'commands'>;

/** What the update extension touches on a real box; tests replace any part. */
export function updateDefaults(context: ExtensionContext): UpdateDeps {
  const runDir = runDirFromEnv();
  return {
    installer: new SysupdateInstaller({
      definitions: SYSUPDATE_DEFINITIONS,
      sourceLink: sourceLinkOf(context.config.dataDir),
    }),
    running: () => runningVersionRead().version,
    bootId: () => bootIdRead(),
    runDir,
    // The one reboot mechanism: the request file root's multihead-reboot.path watches.
    rebootRequest: (jobId) =>
      void rebootRequestWrite(runDir, {
        requestedAt: new Date().toISOString(),
        transport: 'internal',
        from: `firmware.update ${jobId}`,
      }),
    fetch: globalThis.fetch,
    fs: nodeFs,
    statfs: (path) => statfs(path),
  };
}

/** Firmware updates (src/update/, docs/mqtt.md "firmware.update") with their dependencies from the context. */
export function updateCreate(context: ExtensionContext, overrides: Partial<UpdateDeps> = {}): Extension {
  const { config, logger, bus, commands } = context;
  return new UpdateExtension({ ...updateDefaults(context), ...overrides, config, logger, bus, commands });
}
