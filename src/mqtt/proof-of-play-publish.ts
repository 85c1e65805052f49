import fs from 'node:fs';
import path from 'node:path';
import { fileWriteAtomic } from '../fs/atomic.ts';
import type { Logger } from '../log/logger.ts';
import type { CommandRegistry } from '../supervisor/commands.ts';

/** Records per message: a batch stays far below a broker's message size limit. */
export const PROOF_BATCH = 100;
/** A broker that never acknowledges: the batch is tried again at the next chance. */
const ACK_TIMEOUT_MS = 60_000;

export interface ProofPublisherDeps {
  readonly commands: Pick<CommandRegistry, 'invoke' | 'has'>;
  /** QoS 1 publish; true once the broker acknowledged it (PUBACK), false when it could not be sent. */
  readonly publish: (text: string) => Promise<boolean>;
  /** Where the last acknowledged sequence number is kept (`<dataDir>/proof-of-play/sent.json`). */
  readonly cursorFile: string;
  readonly logger: Pick<Logger, 'warn'>;
}

/**
 * Sends proof-of-play records to the fleet in order, in batches, each once the one before was
 * acknowledged, from the last acknowledged one on: after an outage, a restart or a power cut
 * the fleet gets every record. A record can come twice (acknowledged, then a power cut before
 * the cursor was saved); its `seq` says so.
 */
export class ProofPublisher {
  readonly #deps: ProofPublisherDeps;
  #sent: number;
  #running = false;
  #again = false;

  constructor(deps: ProofPublisherDeps) {
    this.#deps = deps;
    this.#sent = cursorRead(deps.cursorFile);
  }

  /** New records, or the broker is back: send what has not been acknowledged. */
  kick(): void {
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = true;
    void this.#drain().finally(() => {
      this.#running = false;
      if (this.#again) {
        this.#again = false;
        this.kick();
      }
    });
  }

  async #drain(): Promise<void> {
    const { commands, publish, logger } = this.#deps;
    if (!commands.has('proofOfPlay.get')) return;
    for (;;) {
      const reply = await commands.invoke(
        'proofOfPlay.get',
        { afterSeq: this.#sent, limit: PROOF_BATCH },
        { transport: 'internal', from: 'mqtt proofOfPlay' },
      );
      if (!reply.ok) return;
      const { plays, seq } = reply.result as { plays: Array<{ seq: number }>; seq: number };
      const first = plays[0];
      const last = plays.at(-1);
      if (!first || !last) return;
      const text = JSON.stringify({ fromSeq: first.seq, toSeq: last.seq, newestSeq: seq, plays });
      const acked = await Promise.race([
        publish(text),
        new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ACK_TIMEOUT_MS).unref()),
      ]);
      if (!acked) return;
      this.#sent = last.seq;
      try {
        fileWriteAtomic(this.#deps.cursorFile, JSON.stringify({ sent: this.#sent }));
      } catch (error) {
        logger.warn(
          { file: this.#deps.cursorFile },
          `proof of play: cannot save what was sent (records may come twice after a restart): ${(error as Error).message}`,
        );
      }
    }
  }
}

function cursorRead(file: string): number {
  try {
    const sent = (JSON.parse(fs.readFileSync(file, 'utf8')) as { sent?: unknown }).sent;
    return Number.isSafeInteger(sent) && (sent as number) >= 0 ? (sent as number) : 0;
  } catch {
    return 0;
  }
}

/** The cursor's file under the data directory. */
export function proofCursorFile(dataDir: string): string {
  return path.join(dataDir, 'proof-of-play', 'sent.json');
}
