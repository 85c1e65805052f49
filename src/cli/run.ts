import { ConfigError } from '../config/load.ts';
import { ExitCode } from '../exit-codes.ts';
import { builtinExtensions, extensionsWithFault } from '../extensions/index.ts';
import { loggerFor, loggingCreate } from '../log/logger.ts';
import { configLoadWithDesired, type LoadedWithDesired } from '../mqtt/desired-store.ts';
import { trialWatch } from '../mqtt/desired-trial.ts';
import { loadAddon, type NativeAddon } from '../native/addon.ts';
import { Controller } from '../supervisor/controller.ts';
import { StartupTimeline, startupSummary } from '../supervisor/startup.ts';
import { appVersion } from '../version.ts';

export interface RunOptions {
  readonly configPath?: string | undefined;
}

/** Leaves room inside systemd's and the CLI's 2 s stop contract for flushing and exit. */
const STOP_BUDGET_MS = 1500;
const HARD_EXIT_MS = 1900;

/**
 * Runs the supervisor until SIGTERM or SIGINT, then exits the process: 0 after an orderly
 * stop, 1 if the stop overran, 70 on an internal fault, 78 on invalid configuration.
 */
export async function supervisorRun(options: RunOptions): Promise<never> {
  const startup = new StartupTimeline();
  let loaded: LoadedWithDesired;
  try {
    // The fleet's desired config (saved in the data directory) layers on top: the one on
    // trial if there is one, else the last good one.
    loaded = configLoadWithDesired({ path: options.configPath });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`multihead: ${error.message}\n`);
    process.exit(ExitCode.config);
  }
  const { config } = loaded;
  const logging = loggingCreate({ level: config.log.level, ringSize: config.log.ringSize });
  const log = loggerFor(logging.logger, 'main');
  const exit = (code: number): never => {
    logging.flush();
    process.exit(code);
  };

  startup.mark('config');
  let addon: NativeAddon;
  try {
    addon = loadAddon();
    startup.mark('addon');
  } catch (error) {
    log.fatal({ err: error }, (error as Error).message);
    return exit(ExitCode.software);
  }

  log.info(
    {
      version: appVersion,
      addon: addon.version(),
      node: process.version,
      configFile: loaded.file ?? null,
      desiredVersion: loaded.desiredVersion,
      deviceId: config.device.id,
      deviceName: config.device.name,
    },
    `multihead ${appVersion} starting as ${config.device.id} (${config.device.name})`,
  );
  if (loaded.desiredProblem)
    log.warn({ problem: loaded.desiredProblem }, `saved fleet config not used: ${loaded.desiredProblem}`);
  if (loaded.rolledBack) {
    log.error(
      { code: 'ERR_ROLLED_BACK', version: loaded.rolledBack.version },
      `desired config version ${loaded.rolledBack.version} rolled back: ${loaded.rolledBack.reason}`,
    );
  }

  const controller = new Controller({
    config,
    logger: logging.logger,
    logRing: logging.ring,
    addon,
    extensions: extensionsWithFault(
      extensionsChosen(process.env.MULTIHEAD_EXTENSIONS),
      process.env.MULTIHEAD_FAULT_EXTENSION,
    ),
    stopTimeoutMs: STOP_BUDGET_MS,
    startup,
  });
  startupReport(controller, startup, log);

  const shutdown = async (reason: string, code: number): Promise<never> => {
    setTimeout(() => {
      log.error(`shutdown overran ${HARD_EXIT_MS} ms; exiting now`);
      exit(ExitCode.failure);
    }, HARD_EXIT_MS).unref();
    const clean = await controller.stop(reason);
    return exit(clean ? code : ExitCode.failure);
  };

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => void shutdown(`received ${signal}`, ExitCode.ok));
  }
  const fault = (error: unknown): void => {
    log.fatal({ err: error }, `internal error: ${(error as Error)?.message ?? String(error)}`);
    void shutdown('internal error', ExitCode.software);
  };
  process.once('uncaughtException', fault);
  process.once('unhandledRejection', fault);

  // Watching starts before the extensions, so the CONNACK of the first connection is seen.
  if (loaded.trial) {
    trialWatch({
      bus: controller.bus,
      dataDir: config.dataDir,
      trial: loaded.trial,
      brokerUrl: config.mqtt.url,
      logger: loggerFor(logging.logger, 'config'),
      restart: (reason) => void shutdown(reason, ExitCode.ok),
    });
  }
  try {
    await controller.start();
    const rest = startup.rest();
    if (rest) {
      log.info(
        { startupMs: rest.totalMs, steps: rest.steps },
        `start-up: every extension running ${rest.totalMs} ms after the process started (after the first frame: ${startupSummary(rest.steps)})`,
      );
    }
  } catch (error) {
    log.fatal({ err: error }, (error as Error).message);
    return exit(ExitCode.software);
  }
  // Runs until a signal handler exits the process.
  return new Promise<never>(() => {});
}

/**
 * Diagnosis: MULTIHEAD_EXTENSIONS=led,playback,display runs only those (in their usual order),
 * e.g. to tell whether a fault is in the display path or elsewhere, or on a slow emulated guest
 * where loading the fleet and HTTP modules takes minutes. Unknown names are ignored, and an
 * empty or unset variable runs them all.
 */
export function extensionsChosen(wanted: string | undefined): typeof builtinExtensions {
  const names = (wanted ?? '')
    .split(',')
    .map((n) => n.trim())
    .filter(Boolean);
  if (names.length === 0) return builtinExtensions;
  return builtinExtensions.filter((e) => names.includes(e.name));
}

/**
 * One line when the first frame shows: where the start went, step by step (after the last
 * extension: the decoders' first frames and the first flip).
 */
function startupReport(controller: Controller, startup: StartupTimeline, log: ReturnType<typeof loggerFor>): void {
  const off = controller.bus.on('output.stats', ({ outputs }) => {
    if (!outputs.some((o) => o.frames > 0)) return;
    off();
    const timeline = startup.finish('first frame');
    if (!timeline) return;
    log.info(
      { startupMs: timeline.totalMs, steps: timeline.steps },
      `start-up: first frame ${timeline.totalMs} ms after the process started (${startupSummary(timeline.steps)})`,
    );
  });
}
