import { configMasked } from '../config/load.ts';
import type { Config } from '../config/schema.ts';
import type { Logger } from '../log/logger.ts';
import type { LogRing } from '../log/ring.ts';
import type { CommandRegistry } from '../supervisor/commands.ts';
import { rebootRequestWrite } from './reboot-request.ts';

export interface BuiltinCommandDeps {
  readonly commands: CommandRegistry;
  readonly deviceId: string;
  readonly session: () => number;
  readonly startedAt: number;
  readonly effectiveConfig: () => Config;
  readonly appliedVersion: () => number | null;
  readonly logRing: LogRing;
  /** Ends the process so the service manager starts it again. */
  readonly restart: () => void;
  /** Where `reboot` writes its request for multihead-reboot.path (see reboot-request.ts). */
  readonly runDir: string;
  /** Time for the reply to leave before a restart (ms). */
  readonly graceMs: number;
  readonly logger: Logger;
  readonly now?: () => number;
}

/** The most bytes of log lines one logs.get reply carries; older lines are left out beyond it. */
const LOGS_REPLY_BYTES = 192 * 1024;

/**
 * The commands the MQTT extension offers itself because they belong to no other extension:
 * ping, config.get, logs.get, restart, reboot. Argument shapes are checked by the transport
 * against docs/asyncapi.yaml before a handler runs. Returns the function that withdraws them.
 */
export function builtinCommandsRegister(deps: BuiltinCommandDeps): () => void {
  const now = deps.now ?? Date.now;
  const later = (what: string, action: () => unknown): void => {
    setTimeout(() => {
      Promise.resolve()
        .then(action)
        .catch((error: unknown) => deps.logger.error({ err: error }, `${what} failed: ${(error as Error).message}`));
    }, deps.graceMs);
  };
  const withdraw = [
    deps.commands.register({
      name: 'ping',
      description: 'Liveness and round trip: {pong, device, session, uptimeS}',
      handler: () => ({
        pong: true,
        device: deps.deviceId,
        session: deps.session(),
        uptimeS: Math.floor((now() - deps.startedAt) / 1000),
      }),
    }),
    deps.commands.register({
      name: 'config.get',
      description: 'The effective configuration with secrets masked, and the applied desired version',
      handler: () => ({ version: deps.appliedVersion(), config: configMasked(deps.effectiveConfig()) }),
    }),
    deps.commands.register({
      name: 'logs.get',
      description: 'The newest log lines from memory, oldest first: {limit?: 1-1000, level?}',
      handler: (args) => {
        const limit = typeof args.limit === 'number' ? args.limit : 100;
        const level = typeof args.level === 'string' ? args.level : 'trace';
        const lines = deps.logRing.tail({ limit, level });
        let bytes = 0;
        let first = lines.length;
        while (first > 0) {
          bytes += JSON.stringify(lines[first - 1]).length;
          if (bytes > LOGS_REPLY_BYTES) break;
          first--;
        }
        return { lines: lines.slice(first), truncated: first > 0 };
      },
    }),
    deps.commands.register({
      name: 'restart',
      description: 'Restart the supervisor service (after the reply)',
      handler: () => {
        later('restart', deps.restart);
        return { restarting: true, inMs: deps.graceMs };
      },
    }),
    deps.commands.register({
      name: 'reboot',
      description:
        'Reboot the appliance: asks root (multihead-reboot.path) through a request file in the run directory',
      handler: (_args, origin) => {
        // Synchronous and durable before the reply: `rebooting: true` means the request is on
        // disk for the root path unit, never only that the supervisor meant to ask. The reply
        // still leaves first: it is queued in this tick, and the stop systemd's reboot sends
        // this process ends the MQTT session in order.
        const file = rebootRequestWrite(deps.runDir, {
          requestedAt: new Date(now()).toISOString(),
          transport: origin.transport,
          ...(origin.from ? { from: origin.from } : {}),
        });
        deps.logger.warn({ file, transport: origin.transport }, `reboot requested (${file})`);
        return { rebooting: true, inMs: 0 };
      },
    }),
  ];
  return () => {
    for (const off of withdraw) off();
  };
}
