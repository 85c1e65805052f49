import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileWriteAtomic } from '../fs/atomic.ts';

/**
 * A firmware job that outlives the process running it: written (atomically, on the data
 * partition) when the job starts and at each phase, read by the next start to report how the
 * reboot went (or that a power cut or crash ended the job before it), and marked reported
 * (atomically again) so that it is reported once, whatever restarts come after.
 */
export interface StoredUpdateJob {
  readonly jobId: string;
  readonly startedAt: string;
  /** The version installed into the other slot. */
  readonly target: string;
  /** The version that installed it. */
  readonly from: string;
  readonly bytesTotal: number;
  /** The kernel's boot id when the reboot was asked for: the same id after a start means no reboot happened yet. */
  readonly bootId: string;
  readonly reported: boolean;
  readonly outcome?: 'succeeded' | 'failed';
  /**
   * How far the job got: `download` (manifest, artefacts, digests), `install` (root writing the
   * other slot), `reboot` (installed, the reboot asked for). Absent in files of older versions:
   * `reboot`, the only phase they stored.
   */
  readonly phase?: StoredUpdatePhase;
}

export type StoredUpdatePhase = 'download' | 'install' | 'reboot';

export const jobStorePath = (dataDir: string): string => join(dataDir, 'state', 'update-job.json');

export function jobStoreWrite(dataDir: string, job: StoredUpdateJob): void {
  fileWriteAtomic(jobStorePath(dataDir), `${JSON.stringify(job)}\n`, { mode: 0o600 });
}

/** The stored job; undefined when there is none. A file that is not one (hand-edited, foreign) throws with its path. */
export function jobStoreRead(dataDir: string): StoredUpdateJob | undefined {
  const path = jobStorePath(dataDir);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  let job: Partial<StoredUpdateJob> | null;
  try {
    job = JSON.parse(text) as Partial<StoredUpdateJob> | null;
  } catch {
    throw new Error(`${path} is not JSON (torn or foreign)`);
  }
  const fields: Array<keyof StoredUpdateJob> = ['jobId', 'startedAt', 'target', 'from', 'bootId'];
  if (
    !job ||
    typeof job !== 'object' ||
    fields.some((f) => typeof job[f] !== 'string') ||
    typeof job.reported !== 'boolean' ||
    typeof job.bytesTotal !== 'number' ||
    (job.phase !== undefined && !['download', 'install', 'reboot'].includes(job.phase))
  ) {
    throw new Error(`${path} is not a stored update job`);
  }
  return job as StoredUpdateJob;
}
