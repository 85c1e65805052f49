import { join } from 'node:path';
import { writeFileAtomic } from '../fs/atomic.ts';
import type { Logger } from '../log/logger.ts';
import type { FileSystem } from './fs.ts';
import {
  INTERRUPT_FILE,
  type Interrupt,
  InterruptError,
  interruptAdd,
  interruptCovers,
  interruptFileParse,
  interruptFromArgs,
  interruptOn,
  interruptsLive,
} from './interrupts.ts';
import type { MediaItem } from './model.ts';
import type { Player, PreparedItem, ProofMeta } from './player.ts';
import { stillText } from './screens-player.ts';

/** Dark red: an announcement is not a fault slate. */
const TEXT_COLOUR = '8b0000';

export interface InterruptControllerDeps {
  readonly dataDir: string;
  readonly fs: FileSystem;
  readonly clock: { now(): number };
  readonly logger: Logger;
  /** The content's player, made on first use; undefined while playback has no outputs. */
  readonly player: () => Player | undefined;
  /** The content's media item by id, if any. */
  readonly media: (id: string) => MediaItem | undefined;
  /** A verified cached file for the media, or null when it is not cached. */
  readonly resolve: (media: MediaItem) => Promise<string | null>;
  /** Interrupts ended on some outputs: the schedule decides their display power again. */
  readonly onEnded?: () => void;
}

/**
 * Keeps the live interrupts (saved atomically under the data directory, so they survive a
 * restart or a power cut until they end) and puts each output's highest one on screen over
 * the schedule, which goes on underneath and shows again when it ends.
 */
export class InterruptController {
  readonly #deps: InterruptControllerDeps;
  #list: Interrupt[] = [];
  /** On screen: per output, which interrupt (id and start: a re-sent id is a new one) and its item. */
  readonly #shown = new Map<string, { key: string; prepared: PreparedItem }>();
  #timer: NodeJS.Timeout | undefined;
  /** Requests and expiries run one after another: a screen change is never half done. */
  #queue: Promise<unknown> = Promise.resolve();
  #stopped = false;

  constructor(deps: InterruptControllerDeps) {
    this.#deps = deps;
  }

  get #file(): string {
    return join(this.#deps.dataDir, INTERRUPT_FILE);
  }

  /** The live interrupts, for status. */
  list(): Interrupt[] {
    return interruptsLive(this.#list, this.#deps.clock.now());
  }

  /** Loads the saved interrupts (those not ended) and shows them. */
  async start(): Promise<void> {
    const { fs, logger } = this.#deps;
    let text: string | undefined;
    try {
      text = (await fs.readFile(this.#file, 'utf8')) as string;
    } catch {
      // None saved.
    }
    if (text !== undefined) {
      try {
        this.#list = interruptsLive(interruptFileParse(text), this.#deps.clock.now());
        if (this.#list.length > 0)
          logger.info(
            { interrupts: this.#list.map((i) => i.id) },
            `interrupts resumed: ${this.#list.map((i) => i.id).join(', ')}`,
          );
      } catch (error) {
        logger.error({ file: this.#file }, `ignoring ${this.#file}: ${(error as Error).message}`);
      }
    }
    await this.#serial(() => this.#refresh());
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  /** `interrupt`: validated, saved, then on screen; the reply says where. */
  async add(args: Record<string, unknown>): Promise<{ interrupt: Interrupt; outputs: string[] }> {
    return await this.#serial(async () => {
      const player = this.#deps.player();
      if (!player?.cover) throw new InterruptError('ERR_NOT_AVAILABLE', 'no outputs to interrupt (playback not ready)');
      const now = this.#deps.clock.now();
      let serial = this.#list.length;
      const interrupt = interruptFromArgs(
        args,
        now,
        (id) => this.#deps.media(id) !== undefined,
        () => {
          let id: string;
          do id = `int-${now.toString(36)}-${++serial}`;
          while (this.#list.some((i) => i.id === id));
          return id;
        },
      );
      const driven = [...player.outputs];
      const unknown = (interrupt.outputs ?? []).filter((o) => !driven.includes(o));
      if (unknown.length > 0) {
        throw new InterruptError(
          'ERR_BAD_ARGUMENT',
          `outputs: ${unknown.join(', ')} not driven (driven: ${driven.join(', ')})`,
        );
      }
      if (interrupt.media !== undefined) {
        const item = this.#deps.media(interrupt.media);
        if (!item || (await this.#deps.resolve(item)) === null) {
          throw new InterruptError('ERR_MEDIA_NOT_CACHED', `media ${interrupt.media} is not in the cache yet`);
        }
      }
      const next = interruptAdd(interruptsLive(this.#list, now), interrupt, driven);
      await this.#save(next);
      this.#list = next;
      this.#deps.logger.warn(
        { interrupt },
        `interrupt ${interrupt.id} (priority ${interrupt.priority}) on ${(interrupt.outputs ?? driven).join(', ')}${interrupt.until === null ? ' until cleared' : ` until ${new Date(interrupt.until).toISOString()}`}`,
      );
      await this.#refresh();
      return { interrupt, outputs: driven.filter((o) => interruptCovers(interrupt, o)) };
    });
  }

  /** `interrupt.clear`: by id, or those covering `outputs`, or all; the schedule shows again. */
  async clear(args: Record<string, unknown>): Promise<{ cleared: string[] }> {
    return await this.#serial(async () => {
      const unknown = Object.keys(args).find((k) => k !== 'id' && k !== 'outputs');
      if (unknown) throw new InterruptError('ERR_BAD_ARGUMENT', `unknown field "${unknown}" (known: id, outputs)`);
      const { id, outputs } = args as { id?: unknown; outputs?: unknown };
      if (id !== undefined && typeof id !== 'string')
        throw new InterruptError('ERR_BAD_ARGUMENT', 'id must be a string');
      if (outputs !== undefined && !(Array.isArray(outputs) && outputs.every((o) => typeof o === 'string'))) {
        throw new InterruptError('ERR_BAD_ARGUMENT', 'outputs must be a list of connector names');
      }
      const live = interruptsLive(this.#list, this.#deps.clock.now());
      const gone = live.filter(
        (i) =>
          (id === undefined || i.id === id) &&
          (outputs === undefined || (outputs as string[]).some((o) => interruptCovers(i, o))),
      );
      if (id !== undefined && gone.length === 0) {
        throw new InterruptError(
          'ERR_INTERRUPT_UNKNOWN',
          `no live interrupt ${id} (live: ${live.map((i) => i.id).join(', ') || 'none'})`,
        );
      }
      const next = live.filter((i) => !gone.includes(i));
      await this.#save(next);
      this.#list = next;
      if (gone.length > 0) this.#deps.logger.warn(`interrupts cleared: ${gone.map((i) => i.id).join(', ')}`);
      await this.#refresh();
      return { cleared: gone.map((i) => i.id) };
    });
  }

  async #serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(work, work);
    this.#queue = run.catch(() => {});
    return await run;
  }

  async #save(list: readonly Interrupt[]): Promise<void> {
    const { fs } = this.#deps;
    await fs.mkdir(this.#deps.dataDir, { recursive: true });
    await writeFileAtomic(fs, this.#file, `${JSON.stringify({ interrupts: list }, null, 2)}\n`);
  }

  /** Each output shows its highest live interrupt, or what its runner shows; the next expiry armed. */
  async #refresh(): Promise<void> {
    if (this.#stopped) return;
    const now = this.#deps.clock.now();
    const live = interruptsLive(this.#list, now);
    if (live.length !== this.#list.length) {
      this.#list = live;
      await this.#save(live).catch((e: Error) => this.#deps.logger.error(`cannot save ${this.#file}: ${e.message}`));
    }
    this.#arm(now);
    if (live.length === 0 && this.#shown.size === 0) return;
    const player = this.#deps.player();
    if (!player?.cover || !player.uncover) return;
    const ended: string[] = [];
    const wanted = new Map<string, string[]>();
    for (const o of player.outputs) {
      const top = interruptOn(live, o);
      const shown = this.#shown.get(o);
      if (!top) {
        if (shown) ended.push(o);
        continue;
      }
      if (shown?.key !== interruptKey(top)) wanted.set(top.id, [...(wanted.get(top.id) ?? []), o]);
    }
    if (ended.length > 0) {
      player.uncover(ended);
      for (const o of ended) this.#shown.delete(o);
      this.#deps.onEnded?.();
    }
    for (const [id, outputs] of wanted) {
      const interrupt = live.find((i) => i.id === id) as Interrupt;
      try {
        await this.#show(player, interrupt, outputs);
      } catch (error) {
        this.#deps.logger.error(
          { interrupt: id, code: (error as { code?: string }).code },
          `interrupt ${id} cannot be shown on ${outputs.join(', ')}: ${(error as Error).message}`,
        );
      }
    }
  }

  async #show(player: Player, interrupt: Interrupt, outputs: string[]): Promise<void> {
    const cover = player.cover as NonNullable<Player['cover']>;
    // An announcement wakes a display a display-off window put to sleep.
    await player.power?.(outputs, true);
    if (interrupt.media !== undefined) {
      const item = this.#deps.media(interrupt.media);
      const path = item ? await this.#deps.resolve(item) : null;
      if (!item || path === null)
        throw new InterruptError('ERR_MEDIA_NOT_CACHED', `media ${interrupt.media} is not cached`);
      const prepared = await player.prepare({
        path,
        type: item.type,
        label: `interrupt:${interrupt.id}`,
        proof: interruptProof(interrupt, { media: item.id, digest: item.sha256 }),
      });
      cover.call(
        player,
        prepared,
        outputs.map((output) => ({ output })),
      );
      for (const o of outputs) this.#shown.set(o, { key: interruptKey(interrupt), prepared });
      return;
    }
    // Text: a still drawn at the outputs' size, one for all outputs of a size (one decoder each).
    const bySize = new Map<string, string[]>();
    for (const output of outputs) {
      const size = player.outputSize?.(output) ?? output;
      bySize.set(size, [...(bySize.get(size) ?? []), output]);
    }
    for (const same of bySize.values()) {
      const prepared = await player.prepareStill?.(same[0] as string, stillText(interrupt.text ?? ''), {
        colour: interrupt.colour ?? TEXT_COLOUR,
        label: `interrupt:${interrupt.id}`,
        scale: 2,
        proof: interruptProof(interrupt, { media: 'text' }),
      });
      if (!prepared) continue;
      cover.call(
        player,
        prepared,
        same.map((output) => ({ output })),
      );
      for (const output of same) this.#shown.set(output, { key: interruptKey(interrupt), prepared });
    }
  }

  #arm(now: number): void {
    clearTimeout(this.#timer);
    const ends = this.#list.map((i) => i.until).filter((u): u is number => u !== null);
    if (ends.length === 0 || this.#stopped) return;
    // Timers run late, never early: at the end plus a little, the list is pruned and shown.
    const delay = Math.min(2_147_000_000, Math.max(0, Math.min(...ends) - now) + 5);
    this.#timer = setTimeout(() => void this.#serial(() => this.#refresh()), delay);
    this.#timer.unref();
  }
}

/** One interrupt as shown: the same id sent again (a new text, say) is shown afresh. */
function interruptKey(i: Interrupt): string {
  return `${i.id}@${i.startedAt}`;
}

/** What proof of play says of an interrupt: its id, and how long it was meant to show when it has an end. */
function interruptProof(interrupt: Interrupt, what: { media: string; digest?: string }): ProofMeta {
  return {
    ...what,
    interrupt: interrupt.id,
    ...(interrupt.until !== null ? { expectedMs: interrupt.until - interrupt.startedAt } : {}),
  };
}
