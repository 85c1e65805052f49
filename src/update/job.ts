import { randomUUID } from 'node:crypto';

/** Where a firmware update job stands (the same states as content.sync, AWS IoT Jobs style). */
export type UpdateJobState = 'accepted' | 'in_progress' | 'succeeded' | 'failed';

/**
 * What an in_progress job is doing: `verify` is the signature check before any download and the
 * sha256 check after it; `reboot` and `health` are the restart into the new slot and the wait
 * for its first frames.
 */
export type UpdateStage = 'download' | 'verify' | 'install' | 'reboot' | 'health';

/** The bus event `firmware.update`: one job document as the fleet sees it on `jobs/<jobId>`. */
export interface FirmwareUpdate {
  readonly jobId: string;
  readonly operation: 'firmware.update';
  readonly state: UpdateJobState;
  /** The version being installed; null until the signed manifest said it (no `version` was asked for). */
  readonly version: string | null;
  /** The version that was running when the job started. */
  readonly from: string;
  readonly stage?: UpdateStage;
  readonly bytesDone: number;
  readonly bytesTotal: number;
  readonly percent: number;
  readonly startedAt: string;
  readonly at: string;
  /** After the reboot: the version running now (the old one when the new one was rolled back). */
  readonly runningVersion?: string;
  readonly error?: { code: string; message: string };
}

export interface UpdateJobDeps {
  readonly from: string;
  readonly version?: string;
  readonly emit: (doc: FirmwareUpdate) => void;
  readonly clock?: { now(): number };
  /** Least time between two in_progress documents of the same stage (stage changes always go out). */
  readonly progressEveryMs?: number;
  /** A job taken up again after the reboot keeps its id and start. */
  readonly jobId?: string;
  readonly startedAt?: string;
  readonly state?: UpdateJobState;
  readonly bytesTotal?: number;
}

/**
 * One firmware.update job's documents: accepted once, in_progress per stage and (throttled) per
 * progress, then succeeded or failed exactly once; nothing after the end.
 */
export class UpdateJob {
  readonly jobId: string;
  readonly startedAt: string;
  readonly from: string;
  readonly #deps: UpdateJobDeps;
  readonly #clock: { now(): number };
  readonly #everyMs: number;
  #state: UpdateJobState;
  #version: string | null;
  #stage: UpdateStage | undefined;
  #bytesDone = 0;
  #bytesTotal: number;
  #runningVersion: string | undefined;
  #lastEmit = 0;
  #held: NodeJS.Timeout | undefined;

  constructor(deps: UpdateJobDeps) {
    this.#deps = deps;
    this.#clock = deps.clock ?? Date;
    this.#everyMs = deps.progressEveryMs ?? 1000;
    this.from = deps.from;
    this.#version = deps.version ?? null;
    this.#bytesTotal = deps.bytesTotal ?? 0;
    this.#bytesDone = this.#bytesTotal;
    this.jobId = deps.jobId ?? `firmware-${randomUUID().slice(0, 8)}`;
    this.startedAt = deps.startedAt ?? new Date(this.#clock.now()).toISOString();
    this.#state = deps.state ?? 'accepted';
    if (this.#state === 'accepted') this.#send();
  }

  get state(): UpdateJobState {
    return this.#state;
  }

  get version(): string | null {
    return this.#version;
  }

  get bytesTotal(): number {
    return this.#bytesTotal;
  }

  get finished(): boolean {
    return this.#state === 'succeeded' || this.#state === 'failed';
  }

  versionSet(version: string): void {
    this.#version = version;
  }

  runningVersionSet(version: string): void {
    this.#runningVersion = version;
  }

  /** A new stage: always published. */
  stage(stage: UpdateStage): void {
    if (this.finished) return;
    this.#state = 'in_progress';
    this.#stage = stage;
    this.#send();
  }

  /** Download progress: at most one document per `progressEveryMs`, the newest figures. */
  bytes(done: number, total: number): void {
    if (this.finished) return;
    this.#bytesDone = Math.max(this.#bytesTotal === total ? this.#bytesDone : 0, done);
    this.#bytesTotal = total;
    const wait = this.#lastEmit + this.#everyMs - this.#clock.now();
    if (wait <= 0) {
      this.#send();
      return;
    }
    this.#held ??= setTimeout(() => {
      this.#held = undefined;
      if (!this.finished) this.#send();
    }, wait);
    this.#held.unref();
  }

  succeed(): FirmwareUpdate | undefined {
    if (this.finished) return undefined;
    this.#state = 'succeeded';
    return this.#send();
  }

  fail(error: { code: string; message: string }): FirmwareUpdate | undefined {
    if (this.finished) return undefined;
    this.#state = 'failed';
    return this.#send({ code: error.code, message: error.message });
  }

  #send(error?: { code: string; message: string }): FirmwareUpdate {
    clearTimeout(this.#held);
    this.#held = undefined;
    this.#lastEmit = this.#clock.now();
    const total = this.#bytesTotal;
    const doc: FirmwareUpdate = {
      jobId: this.jobId,
      operation: 'firmware.update',
      state: this.#state,
      version: this.#version,
      from: this.from,
      ...(this.#stage && this.#state === 'in_progress' ? { stage: this.#stage } : {}),
      bytesDone: this.#bytesDone,
      bytesTotal: total,
      percent: total === 0 ? 0 : Math.floor((this.#bytesDone / total) * 1000) / 10,
      startedAt: this.startedAt,
      at: new Date(this.#lastEmit).toISOString(),
      ...(this.#runningVersion ? { runningVersion: this.#runningVersion } : {}),
      ...(error ? { error } : {}),
    };
    this.#deps.emit(doc);
    return doc;
  }
}
