import { randomUUID } from 'node:crypto';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Fetch } from '../content/download.ts';
import type { FileSystem } from '../content/fs.ts';
import { writeFileAtomic } from '../fs/atomic.ts';
import type { Logger } from '../log/logger.ts';
import { RateLimiter } from '../rate-limit.ts';
import { UpdateError, updateErrorOf } from './errors.ts';
import {
  type ArtefactsFetchDeps,
  artefactsFetch,
  artefactsVerify,
  RETRY_DEFAULT,
  type RetryPolicy,
  withRetries,
} from './fetch.ts';
import type { Installer } from './installer.ts';
import { type FirmwareUpdate, UpdateJob } from './job.ts';
import { jobStoreRead, jobStoreWrite, type StoredUpdateJob } from './job-store.ts';
import { MANIFEST_FILE, type Manifest, manifestFetch, manifestParse, SIGNATURE_FILE } from './manifest.ts';
import { signatureVerify } from './signature.ts';
import { versionCompare } from './version.ts';

/** What `firmware.update` asks for (docs/mqtt.md). */
export interface UpdateRequest {
  /** The artefact directory (http/https), checked by the source policy before it gets here. */
  readonly url: string;
  /** When given, the signed manifest must name exactly this version. */
  readonly version?: string;
  readonly allowDowngrade?: boolean;
}

export interface UpdaterDeps {
  readonly dataDir: string;
  /** Trusted public keys for SHA256SUMS.gpg (`update.keyring`). */
  readonly keyring: string;
  /** `update.maxBytesPerSecond`; 0: unlimited. */
  readonly maxBytesPerSecond: number;
  readonly installer: Installer;
  /** The firmware version running now. */
  readonly running: () => string;
  /** The kernel's boot id (a reboot changes it). */
  readonly bootId: () => string;
  readonly fetch: Fetch;
  readonly fs: FileSystem;
  readonly statfs: ArtefactsFetchDeps['statfs'];
  /** Asks root to reboot (src/mqtt/reboot-request.ts); throws when it cannot. */
  readonly rebootRequest: () => void;
  readonly emit: (doc: FirmwareUpdate) => void;
  readonly logger: Logger;
  readonly clock?: { now(): number };
  readonly progressEveryMs?: number;
  readonly retry?: Partial<RetryPolicy>;
  readonly stallMs?: number;
  readonly gpgv?: string;
}

/** How long a stop waits for the job to end (the supervisor's whole stop budget is 2 s). */
const CLOSE_WAIT_MS = 1000;

/** Where downloads go: `<dataDir>/updates/<version>/`, beside nothing else of the box's. */
export const updatesDir = (dataDir: string): string => join(dataDir, 'updates');

/**
 * Runs firmware.update jobs, one at a time: the signed manifest first (nothing is downloaded
 * before SHA256SUMS is proven to come from a trusted key), then the artefacts (resumable,
 * bandwidth-limited, space-checked), each checked against its signed digest, then the installer,
 * then the reboot through the reboot request. After the reboot `afterBoot` reports how it went.
 * All of it is streams and child processes: playback goes on until the reboot.
 */
export class Updater {
  readonly #deps: UpdaterDeps;
  readonly #retry: RetryPolicy;
  readonly #closing = new AbortController();
  #job: UpdateJob | undefined;
  #work: Promise<void> | undefined;

  constructor(deps: UpdaterDeps) {
    this.#deps = deps;
    this.#retry = { ...RETRY_DEFAULT, ...deps.retry };
  }

  /** The job running now or the newest one, if any. */
  get job(): UpdateJob | undefined {
    return this.#job;
  }

  /** Starts a job and returns at once with its id; ERR_UPDATE_BUSY or ERR_UPDATE_UNSUPPORTED when none can start. */
  async start(request: UpdateRequest): Promise<{ jobId: string }> {
    this.#busyCheck();
    const unsupported = await this.#deps.installer.unsupported();
    if (unsupported) throw new UpdateError('ERR_UPDATE_UNSUPPORTED', unsupported);
    // Again: another request may have started a job while this one asked the installer.
    this.#busyCheck();
    const job = this.#jobCreate({ ...(request.version ? { version: request.version } : {}) });
    this.#job = job;
    this.#work = this.#run(job, request);
    return { jobId: job.jobId };
  }

  #busyCheck(): void {
    const job = this.#job;
    if (job && !job.finished) {
      throw new UpdateError(
        'ERR_UPDATE_BUSY',
        `firmware job ${job.jobId} is ${job.state} (one update at a time); watch jobs/${job.jobId}`,
      );
    }
  }

  #jobCreate(extra: Partial<ConstructorParameters<typeof UpdateJob>[0]>): UpdateJob {
    return new UpdateJob({
      from: this.#deps.running(),
      emit: this.#deps.emit,
      ...(this.#deps.clock ? { clock: this.#deps.clock } : {}),
      ...(this.#deps.progressEveryMs !== undefined ? { progressEveryMs: this.#deps.progressEveryMs } : {}),
      ...extra,
    });
  }

  async #run(job: UpdateJob, request: UpdateRequest): Promise<void> {
    const { logger } = this.#deps;
    try {
      await this.#steps(job, request);
    } catch (caught) {
      const error = this.#closing.signal.aborted
        ? new UpdateError('ERR_UPDATE_ABORTED', 'the supervisor stopped during the update; nothing was installed')
        : updateErrorOf(caught, 'ERR_UPDATE_DOWNLOAD');
      logger.warn(
        { jobId: job.jobId, code: error.code, err: caught },
        `firmware job ${job.jobId} failed: ${error.code}: ${error.message}`,
      );
      // Said here, so the next start must not say it again.
      this.#stored(job, { reported: true, outcome: 'failed' });
      job.fail(error.toJSON());
    }
  }

  /** The job as the next start will find it; a write that fails is logged, the job goes on. */
  #stored(job: UpdateJob, change: Partial<StoredUpdateJob>): StoredUpdateJob {
    const stored: StoredUpdateJob = {
      jobId: job.jobId,
      startedAt: job.startedAt,
      target: job.version ?? '',
      from: job.from,
      bytesTotal: job.bytesTotal,
      bootId: this.#deps.bootId(),
      reported: false,
      phase: 'download',
      ...change,
    };
    try {
      jobStoreWrite(this.#deps.dataDir, stored);
    } catch (error) {
      this.#deps.logger.error(
        { jobId: job.jobId, err: error },
        `cannot record firmware job ${job.jobId} on the data partition: ${(error as Error).message}`,
      );
    }
    return stored;
  }

  async #steps(job: UpdateJob, request: UpdateRequest): Promise<void> {
    const { dataDir, fs, installer, logger } = this.#deps;
    const updates = updatesDir(dataDir);
    await fs.mkdir(updates, { recursive: true });
    // From here a power cut or a crash is reported by the next start (afterBoot), not lost.
    this.#stored(job, { phase: 'download' });
    job.stage('verify');
    const manifest = await this.#manifestTrusted(request, job, updates);
    const { version } = manifest;
    this.#stored(job, { phase: 'download', target: version });
    const dir = join(updates, version);
    job.stage('download');
    const signal = this.#closing.signal;
    const limit = this.#deps.maxBytesPerSecond;
    const fetched = await artefactsFetch(request.url, manifest.artefacts, dir, {
      fetch: this.#deps.fetch,
      fs,
      statfs: this.#deps.statfs,
      retry: this.#retry,
      stallMs: this.#deps.stallMs ?? 30_000,
      signal,
      onBytes: (done, total) => job.bytes(done, total),
      // A second's worth of burst: the limit holds over any second, not only on average.
      ...(limit > 0 ? { limiter: new RateLimiter({ burst: limit, perSecond: limit }) } : {}),
    });
    if (fetched.resumedBytes > 0)
      logger.info({ jobId: job.jobId }, `resumed with ${fetched.resumedBytes} bytes on disk`);
    job.stage('verify');
    await artefactsVerify(manifest.artefacts, dir, fs);
    if (signal.aborted) throw new UpdateError('ERR_UPDATE_ABORTED', 'stopped');
    job.stage('install');
    this.#stored(job, { phase: 'install', target: version });
    try {
      await installer.install(dir, version);
    } catch (error) {
      throw updateErrorOf(error, 'ERR_UPDATE_INSTALL');
    }
    // Before the reboot is asked for: the next start must know what it was meant to be running.
    const stored: StoredUpdateJob = {
      jobId: job.jobId,
      startedAt: job.startedAt,
      target: version,
      from: job.from,
      bytesTotal: job.bytesTotal,
      bootId: this.#deps.bootId(),
      reported: false,
      phase: 'reboot',
    };
    jobStoreWrite(dataDir, stored);
    job.stage('reboot');
    try {
      this.#deps.rebootRequest();
    } catch (error) {
      jobStoreWrite(dataDir, { ...stored, reported: true, outcome: 'failed' });
      throw new UpdateError(
        'ERR_UPDATE_REBOOT',
        `${version} is installed and starts at the next reboot, but no reboot could be requested: ${(error as Error).message}`,
      );
    }
    logger.warn({ jobId: job.jobId, version }, `firmware ${version} installed; rebooting into it`);
  }

  /**
   * SHA256SUMS and its signature, fetched into a staging directory and verified there with
   * gpgv before a line of it is read; then the version rules. The verified pair is kept in the
   * version's directory, where the installer checks it once more.
   */
  async #manifestTrusted(request: UpdateRequest, job: UpdateJob, updates: string): Promise<Manifest> {
    const { fs } = this.#deps;
    const fetched = await withRetries(
      { retry: this.#retry, signal: this.#closing.signal },
      { name: MANIFEST_FILE },
      () => manifestFetch(request.url, { fetch: this.#deps.fetch, timeoutMs: this.#deps.stallMs ?? 30_000 }),
    );
    const staging = join(updates, `.incoming-${randomUUID().slice(0, 8)}`);
    await fs.mkdir(staging, { recursive: true });
    try {
      const file = join(staging, MANIFEST_FILE);
      const signature = join(staging, SIGNATURE_FILE);
      await writeFileAtomic(fs, file, fetched.text);
      await writeFileAtomic(fs, signature, fetched.signature);
      await signatureVerify({
        keyring: this.#deps.keyring,
        file,
        signature,
        homedir: staging,
        ...(this.#deps.gpgv ? { gpgv: this.#deps.gpgv } : {}),
      });
      const manifest = manifestParse(fetched.text.toString('utf8'));
      this.#versionCheck(manifest.version, request, job);
      job.versionSet(manifest.version);
      const dir = join(updates, manifest.version);
      await fs.mkdir(dir, { recursive: true });
      await writeFileAtomic(fs, join(dir, MANIFEST_FILE), fetched.text);
      await writeFileAtomic(fs, join(dir, SIGNATURE_FILE), fetched.signature);
      // Downloads of other versions will never be resumed now: their space is given back.
      await this.#sweep(updates, new Set([manifest.version]));
      return manifest;
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  }

  #versionCheck(version: string, request: UpdateRequest, job: UpdateJob): void {
    if (request.version !== undefined && request.version !== version) {
      throw new UpdateError(
        'ERR_UPDATE_VERSION_MISMATCH',
        `the signed SHA256SUMS is version ${version}, not the ${request.version} asked for`,
      );
    }
    const order = versionCompare(version, job.from);
    if (order === 0) throw new UpdateError('ERR_UPDATE_SAME_VERSION', `${version} is already running; nothing to do`);
    if (order < 0 && !request.allowDowngrade) {
      throw new UpdateError(
        'ERR_UPDATE_DOWNGRADE',
        `${version} is older than the running ${job.from}; send allowDowngrade: true to install it anyway`,
      );
    }
  }

  /** Removes everything in the updates directory but `keep` (and a staging directory in use). */
  async #sweep(updates: string, keep: ReadonlySet<string>): Promise<void> {
    const names = await readdir(updates).catch(() => [] as string[]);
    for (const name of names) {
      if (keep.has(name) || name.startsWith('.incoming-')) continue;
      await rm(join(updates, name), { recursive: true, force: true });
    }
  }

  /**
   * After a start: the job stored before a reboot, if any and not yet reported, is reported
   * once. The reboot did not happen yet (same boot id): nothing to say. Another version
   * running than the one installed: the new one did not come up healthy within its boot tries
   * and the box went back (ERR_UPDATE_ROLLED_BACK). The version installed: succeeded once the
   * screens show video (`healthy` resolves); a supervisor stopped before that reports at its
   * next start.
   */
  async afterBoot(healthy: (signal: AbortSignal) => Promise<void>): Promise<void> {
    const { dataDir, logger } = this.#deps;
    let stored: StoredUpdateJob | undefined;
    try {
      stored = jobStoreRead(dataDir);
    } catch (error) {
      logger.error({ err: error }, `firmware job state unreadable, not reported: ${(error as Error).message}`);
      return;
    }
    if (!stored || stored.reported) return;
    const job = this.#jobCreate({
      jobId: stored.jobId,
      startedAt: stored.startedAt,
      from: stored.from,
      version: stored.target,
      bytesTotal: stored.bytesTotal,
      state: 'in_progress',
    });
    this.#job = job;
    const mark = (outcome: 'succeeded' | 'failed'): void =>
      jobStoreWrite(dataDir, { ...(stored as StoredUpdateJob), reported: true, outcome });
    const phase = stored.phase ?? 'reboot';
    if (phase !== 'reboot') {
      // The process that ran the job is gone before it asked for a reboot: a power cut, a crash
      // or a stop during the download or the install. Nothing boots from a cut install
      // (systemd-sysupdate labels the slot only once it is written); the files downloaded so far
      // stay, so the same command resumes them.
      const running = this.#deps.running();
      job.runningVersionSet(running);
      mark('failed');
      const rebooted = stored.bootId === this.#deps.bootId() ? 'the supervisor restarted' : 'the box restarted';
      job.fail({
        code: 'ERR_UPDATE_INTERRUPTED',
        message:
          phase === 'download'
            ? `${rebooted} during the download${stored.target ? ` of ${stored.target}` : ''}; nothing was installed and ${running} still runs; send the command again to resume the download`
            : `${rebooted} while ${stored.target} was being written into the other slot; that slot is not bootable, ${running} still runs; send the command again`,
      });
      logger.warn(
        { jobId: stored.jobId, phase },
        `firmware job ${stored.jobId} was interrupted (${phase}); reported failed`,
      );
      return;
    }
    if (stored.bootId === this.#deps.bootId()) {
      // Only the supervisor restarted; the reboot it asked for is still to come. Busy till then.
      logger.info({ jobId: stored.jobId }, `firmware ${stored.target} installed; waiting for the reboot`);
      return;
    }
    const running = this.#deps.running();
    job.runningVersionSet(running);
    if (versionCompare(running, stored.target) !== 0) {
      const other = await this.#deps.installer.slots().catch(() => ({ other: undefined }));
      const slot = other.other?.version === stored.target ? ` (its slot is marked ${other.other.state})` : '';
      // Marked before it is said: a crash in between loses one report rather than saying it twice.
      mark('failed');
      await this.#giveBack();
      job.fail({
        code: 'ERR_UPDATE_ROLLED_BACK',
        message: `running ${running} after the reboot, not ${stored.target}: ${stored.target} did not come up healthy within its boot tries${slot}, and the box went back to ${running} by itself`,
      });
      return;
    }
    job.stage('health');
    this.#work = healthy(this.#closing.signal).then(async () => {
      if (this.#closing.signal.aborted) return;
      mark('succeeded');
      await this.#giveBack();
      job.succeed();
      logger.info({ jobId: job.jobId }, `firmware ${stored.target} runs and shows video; job ${job.jobId} succeeded`);
    });
    await this.#work;
  }

  /** The downloads of a job that has ended after its reboot: installed or abandoned, never needed again. */
  async #giveBack(): Promise<void> {
    try {
      await this.#sweep(updatesDir(this.#deps.dataDir), new Set());
    } catch (error) {
      this.#deps.logger.warn({ err: error }, `cannot remove old firmware downloads: ${(error as Error).message}`);
    }
  }

  /**
   * Stops a running download (the job ends ERR_UPDATE_ABORTED; the partial files stay for a
   * resume). An install under way is not waited for beyond the stop budget: systemd-sysupdate
   * writes the inactive slot under a partial label, so a cut install never boots.
   */
  async close(): Promise<void> {
    this.#closing.abort();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.#work?.catch(() => {}),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, CLOSE_WAIT_MS);
      }),
    ]);
    clearTimeout(timer);
  }
}
