import { existsSync } from 'node:fs';
import type { Config } from '../config/schema.ts';
import type { Fetch } from '../content/download.ts';
import type { FileSystem } from '../content/fs.ts';
import type { Logger } from '../log/logger.ts';
import { urlProblem, WEB_SCHEMES } from '../playback/source-policy.ts';
import { type Health, HealthTracker } from '../status/health.ts';
import type { EventBus } from '../supervisor/bus.ts';
import { CommandError, type CommandRegistry } from '../supervisor/commands.ts';
import type { Extension } from '../supervisor/extension.ts';
import { BootHealthMarker, showsVideo } from './boot-health.ts';
import type { ArtefactsFetchDeps, RetryPolicy } from './fetch.ts';
import type { Installer, SlotsInfo } from './installer.ts';
import { Updater } from './updater.ts';

/** The bus event `firmware.status`, and the `firmware` part of `status` and `state`. */
export interface FirmwareStatus {
  readonly version: string;
  readonly slot?: string;
  readonly other?: SlotsInfo['other'];
}

export interface UpdateExtensionDeps {
  readonly config: Config;
  readonly logger: Logger;
  readonly bus: EventBus;
  readonly commands: CommandRegistry;
  readonly installer: Installer;
  readonly running: () => string;
  readonly bootId: () => string;
  /** The supervisor's run directory (/run/multihead): reboot requests and the boot health marker. */
  readonly runDir: string;
  /** Asks root for the reboot into the new slot (src/mqtt/reboot-request.ts). */
  readonly rebootRequest: (jobId: string) => void;
  readonly fetch: Fetch;
  readonly fs: FileSystem;
  readonly statfs: ArtefactsFetchDeps['statfs'];
  readonly progressEveryMs?: number;
  readonly retry?: Partial<RetryPolicy>;
  readonly stallMs?: number;
  readonly gpgv?: string;
}

/**
 * Firmware updates on the supervisor's side (docs/mqtt.md, "firmware.update"): the
 * `firmware.update` and `firmware.status` commands, the job documents on the bus
 * (`firmware.update`, published by MQTT on `jobs/<jobId>`), the report of a job that rebooted,
 * and the boot health marker the image's boot assessment waits for.
 */
export class UpdateExtension implements Extension {
  readonly name = 'update';
  readonly #deps: UpdateExtensionDeps;
  readonly #updater: Updater;
  readonly #withdraw: Array<() => void> = [];
  #health: HealthTracker | undefined;
  #marker: BootHealthMarker | undefined;
  #slots: SlotsInfo = {};

  constructor(deps: UpdateExtensionDeps) {
    this.#deps = deps;
    const { config, logger, bus } = deps;
    this.#updater = new Updater({
      dataDir: config.dataDir,
      keyring: config.update.keyring,
      maxBytesPerSecond: config.update.maxBytesPerSecond,
      installer: deps.installer,
      running: deps.running,
      bootId: deps.bootId,
      fetch: deps.fetch,
      fs: deps.fs,
      statfs: deps.statfs,
      rebootRequest: () => deps.rebootRequest(this.#updater.job?.jobId ?? ''),
      emit: (doc) => {
        bus.emit('firmware.update', doc);
        if (doc.state === 'succeeded' || doc.state === 'failed') void this.#statusRefresh();
      },
      logger,
      ...(deps.progressEveryMs !== undefined ? { progressEveryMs: deps.progressEveryMs } : {}),
      ...(deps.retry ? { retry: deps.retry } : {}),
      ...(deps.stallMs !== undefined ? { stallMs: deps.stallMs } : {}),
      ...(deps.gpgv ? { gpgv: deps.gpgv } : {}),
    });
  }

  start(): void {
    const { bus, config, logger, commands } = this.#deps;
    const health = HealthTracker.acquire({ bus, config });
    this.#health = health;
    this.#markerStart(health);
    this.#withdraw.push(
      commands.register({
        name: 'firmware.update',
        description: 'Install a signed firmware version from an artefact directory: {url, version?, allowDowngrade?}',
        handler: (args) => this.#update(args),
      }),
      commands.register({
        name: 'firmware.status',
        description: 'The running firmware version and slot, and the other slot',
        handler: () => this.#statusRefresh(),
      }),
    );
    void this.#statusRefresh();
    void this.#updater
      .afterBoot((signal) => this.#healthy(signal))
      .catch((error: unknown) =>
        logger.error({ err: error }, `reporting the firmware job after the reboot failed: ${(error as Error).message}`),
      );
  }

  /**
   * The boot health marker, where systemd made the run directory (RuntimeDirectory=multihead).
   * Without one (a checkout, a test run) there is no boot assessment to tell: said once, and the
   * directory is not made here, as a marker nobody waits for would be.
   */
  #markerStart(health: HealthTracker): void {
    const { config, logger, runDir } = this.#deps;
    if (!existsSync(runDir)) {
      logger.info(`no run directory ${runDir}: no boot health marker (not started by systemd)`);
      return;
    }
    const marker = new BootHealthMarker({
      runDir,
      brokerWaitMs: config.update.brokerWaitS * 1000,
      onHealthy: (file) => logger.info({ file }, `boot health marker written (${file}): this version shows video`),
      onError: (error) =>
        logger.error(
          { err: error, code: 'ERR_BOOT_HEALTH' },
          `cannot write the boot health marker in ${runDir}: ${(error as Error).message}`,
        ),
    });
    this.#marker = marker;
    this.#withdraw.push(health.onChange((h) => marker.observe(h)));
    marker.observe(health.assess());
  }

  async stop(): Promise<void> {
    for (const off of this.#withdraw.splice(0)) off();
    this.#marker?.close();
    await this.#updater.close();
    this.#health?.release();
    this.#health = undefined;
  }

  async #update(args: Record<string, unknown>): Promise<{ jobId: string }> {
    const problem = urlProblem(args.url, WEB_SCHEMES);
    // The same rule as every URL the box fetches; the URL itself is never quoted (it may carry a token).
    if (problem !== undefined) throw new CommandError('ERR_INVALID_ARGS', `url ${problem}`);
    return this.#updater.start({
      url: args.url as string,
      ...(typeof args.version === 'string' ? { version: args.version } : {}),
      ...(args.allowDowngrade === true ? { allowDowngrade: true } : {}),
    });
  }

  /** Resolves once the screens show video (the same judgement as the boot health marker, without the broker). */
  #healthy(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const health = this.#health;
      if (!health || signal.aborted) return resolve();
      let off = (): void => {};
      const check = (h: Health): void => {
        if (!showsVideo(h)) return;
        off();
        resolve();
      };
      off = health.onChange(check);
      signal.addEventListener(
        'abort',
        () => {
          off();
          resolve();
        },
        { once: true },
      );
      check(health.assess());
    });
  }

  async #statusRefresh(): Promise<FirmwareStatus> {
    try {
      this.#slots = await this.#deps.installer.slots();
    } catch (error) {
      this.#deps.logger.warn({ err: error }, `cannot read the update slots: ${(error as Error).message}`);
      this.#slots = { other: { state: 'unknown' } };
    }
    const status: FirmwareStatus = {
      version: this.#deps.running(),
      ...(this.#slots.slot ? { slot: this.#slots.slot } : {}),
      ...(this.#slots.other ? { other: this.#slots.other } : {}),
    };
    this.#deps.bus.emit('firmware.status', status);
    return status;
  }
}
