import type { MediaItem } from './model.ts';
import type { Player, PlayerItem, PlayerTarget, PreparedItem } from './player.ts';

/** A playlist with its media looked up: what a runner plays. */
export interface RunnablePlaylist {
  readonly id: string;
  readonly loop: boolean;
  readonly items: ReadonlyArray<{ readonly media: MediaItem; readonly durationMs?: number }>;
}

export interface RunnerLog {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
}

export interface RunnerDeps {
  readonly player: Player;
  /** The outputs this runner drives (one, or every tile of a video wall). */
  readonly targets: readonly PlayerTarget[];
  /** A verified cached file for the media, or null when it is not (yet) cached. */
  readonly resolve: (media: MediaItem) => Promise<string | null>;
  readonly log: RunnerLog;
  /** How often a play-to-end video is checked for its end (the addon reports loops, not an end event). */
  readonly pollMs?: number;
  /** How often the item on screen is checked for a decoder failure (default 1 s). */
  readonly failurePollMs?: number;
  /** How long a failed item's last frame stays before the next item or a slate (default FAILED_HOLD_MS). */
  readonly failureHoldMs?: number;
}

/** As the play command (src/playback/extension.ts): the last frame stays this long, then something else plays. */
export const FAILED_HOLD_MS = 5000;

/** What `skip` did: the item now on screen, or why nothing moved. */
export type SkipOutcome =
  | { moved: true; playlist: string; item: string; index: number }
  | { moved: false; reason: string };

export type RunnerState =
  | { kind: 'idle' }
  | { kind: 'playing'; playlist: string; item: string; index: number }
  | { kind: 'waiting'; playlist: string; reason: string }
  | { kind: 'slate'; reason: string };

interface Prepared {
  readonly index: number;
  readonly media: MediaItem;
  readonly prepared: PreparedItem;
}

/**
 * Plays one playlist on one output or video wall, item after item: each next item is
 * prerolled while the current one shows, so every switch is gapless. Items whose media is
 * not cached, or that the decoder refuses, are skipped; with nothing playable the outputs get
 * a slate naming why. A newer play() or slate() cancels whatever an older one still awaits.
 */
export class PlaylistRunner {
  readonly #deps: RunnerDeps;
  #generation = 0;
  #playlist: RunnablePlaylist | undefined;
  #current: Prepared | undefined;
  #next: Prepared | undefined;
  /** Prerolled ahead of a schedule boundary: the first item of the playlist that comes next. */
  #pending: { playlist: string; first: Prepared } | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** Watches the item on screen for a decoder failure. */
  #failureTimer: NodeJS.Timeout | undefined;
  #state: RunnerState = { kind: 'idle' };
  readonly #failed = new Set<string>();
  /** Bumped by retry(): media that arrives while play() is still looking must not be missed. */
  #arrivals = 0;

  constructor(deps: RunnerDeps) {
    this.#deps = deps;
  }

  get state(): RunnerState {
    return this.#state;
  }

  get playlistId(): string | undefined {
    return this.#playlist?.id;
  }

  get outputs(): string[] {
    return this.#deps.targets.map((t) => t.output);
  }

  /**
   * The media whose files this runner holds open or shows: the item on screen (also while a
   * new playlist waits for its media), the next one prerolled, and a boundary's preroll.
   */
  get mediaInUse(): MediaItem[] {
    return [this.#current, this.#next, this.#pending?.first].flatMap((p) => (p ? [p.media] : []));
  }

  /** Prerolls the first playable item of `playlist`, to be taken by a later play() of it. */
  async preroll(playlist: RunnablePlaylist): Promise<void> {
    if (this.#pending?.playlist === playlist.id) return;
    this.#dropPending();
    const generation = this.#generation;
    const first = await this.#prepareFrom(playlist, 0, playlist.items.length);
    if (!first) return;
    if (generation !== this.#generation || this.#pending) {
      this.#deps.player.discard(first.prepared);
      return;
    }
    this.#pending = { playlist: playlist.id, first };
  }

  /** Starts `playlist` from its first playable item (from the preroll when there is one). */
  async play(playlist: RunnablePlaylist): Promise<void> {
    const generation = this.#cancel();
    const arrivals = this.#arrivals;
    this.#playlist = playlist;
    let first: Prepared | undefined;
    if (this.#pending?.playlist === playlist.id) {
      first = this.#pending.first;
      this.#pending = undefined;
    } else {
      this.#dropPending();
      first = await this.#prepareFrom(playlist, 0, playlist.items.length);
      if (generation !== this.#generation) {
        if (first) this.#deps.player.discard(first.prepared);
        return;
      }
    }
    if (!first) {
      await this.#waitForMedia(playlist, generation);
      if (generation === this.#generation && arrivals !== this.#arrivals) await this.play(playlist);
      return;
    }
    this.#showAndSchedule(first, generation);
  }

  /**
   * Moves to the next (`by` 1) or the previous (-1) playable item now, as gaplessly as an item's
   * own end: the next one is usually prerolled already; another is prerolled first while the
   * current one keeps showing, then takes over at a vblank. Wraps round a looping playlist;
   * a playlist that does not loop stops at its ends.
   */
  async skip(by: 1 | -1): Promise<SkipOutcome> {
    const playlist = this.#playlist;
    const current = this.#current;
    if (this.#state.kind !== 'playing' || !playlist || !current)
      return { moved: false, reason: `not playing a playlist (${this.#state.kind})` };
    const count = playlist.items.length;
    const candidates: number[] = [];
    for (let k = 1; k < count; k++) {
      const index = current.index + by * k;
      if (!playlist.loop && (index < 0 || index >= count)) break;
      candidates.push(((index % count) + count) % count);
    }
    if (candidates.length === 0)
      return {
        moved: false,
        reason:
          count === 1
            ? `playlist ${playlist.id} has one item`
            : `${by === 1 ? 'last' : 'first'} item of playlist ${playlist.id}, which does not loop`,
      };
    const generation = this.#generation;
    let target: Prepared | undefined;
    if (by === 1 && this.#next?.index === candidates[0]) {
      target = this.#next;
      this.#next = undefined;
    } else {
      for (const index of candidates) {
        target = await this.#prepareFrom(playlist, index, 1);
        if (target || generation !== this.#generation) break;
      }
    }
    if (generation !== this.#generation || this.#current !== current) {
      // Something else took the outputs meanwhile (a schedule change, another skip).
      if (target) this.#deps.player.discard(target.prepared);
      return { moved: false, reason: 'the outputs changed meanwhile' };
    }
    if (!target) return { moved: false, reason: `no other item of playlist ${playlist.id} is playable now` };
    this.#showAndSchedule(target, this.#cancel());
    return { moved: true, playlist: playlist.id, item: target.media.id, index: target.index };
  }

  /** Media arrived in the cache: a runner waiting for media tries again. */
  retry(): void {
    this.#arrivals++;
    if (this.#state.kind === 'waiting' && this.#playlist) void this.play(this.#playlist);
  }

  async slate(reason: string): Promise<void> {
    const generation = this.#cancel();
    this.#playlist = undefined;
    this.#dropPending();
    this.#state = { kind: 'slate', reason };
    await this.#deps.player
      .slate(this.outputs, reason, () => generation === this.#generation)
      .catch((error: Error) => {
        this.#deps.log.warn({ err: error }, `slate on ${this.outputs.join(', ')} failed: ${error.message}`);
      });
    if (generation !== this.#generation) return;
    // The slate replaced the outputs' picture; the items it replaced are released by the player.
    this.#current = undefined;
  }

  stop(): void {
    this.#cancel();
    this.#dropPending();
    this.#playlist = undefined;
    this.#state = { kind: 'idle' };
  }

  #cancel(): number {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    clearTimeout(this.#failureTimer);
    this.#failureTimer = undefined;
    if (this.#next) this.#deps.player.discard(this.#next.prepared);
    this.#next = undefined;
    return ++this.#generation;
  }

  #dropPending(): void {
    if (this.#pending) this.#deps.player.discard(this.#pending.first.prepared);
    this.#pending = undefined;
  }

  async #waitForMedia(playlist: RunnablePlaylist, generation: number): Promise<void> {
    const missing = playlist.items.map((i) => i.media.id).join(', ');
    const reason = `playlist ${playlist.id}: waiting for media (${missing})`;
    this.#deps.log.warn({ playlist: playlist.id }, `${this.outputs.join(', ')}: ${reason}`);
    // Keep the current picture if there is one (a previous playlist's item); else a slate.
    if (!this.#current) {
      await this.#deps.player.slate(this.outputs, reason, () => generation === this.#generation).catch(() => {});
    }
    if (generation === this.#generation) this.#state = { kind: 'waiting', playlist: playlist.id, reason };
  }

  /** The first item from `start` (wrapping) whose media is cached and opens; at most `count` tried. */
  async #prepareFrom(playlist: RunnablePlaylist, start: number, count: number): Promise<Prepared | undefined> {
    for (let k = 0; k < count; k++) {
      const index = (start + k) % playlist.items.length;
      const entry = playlist.items[index];
      if (!entry) continue;
      const path = await this.#deps.resolve(entry.media);
      if (!path) continue;
      const expectedMs = itemDurationMs(entry);
      // Played to its end and followed by another item (or by nothing: a list that stops):
      // it holds its last frame. Alone in a looping list, it loops by itself.
      const alone = playlist.loop && playlist.items.length === 1;
      const item: PlayerItem = {
        path,
        type: entry.media.type,
        label: entry.media.id,
        ...(entry.media.type === 'video' && expectedMs === undefined && !alone ? { holdAtEnd: true } : {}),
        proof: {
          media: entry.media.id,
          digest: entry.media.sha256,
          playlist: playlist.id,
          ...(expectedMs !== undefined ? { expectedMs } : {}),
        },
      };
      try {
        return { index, media: entry.media, prepared: await this.#deps.player.prepare(item) };
      } catch (error) {
        // A file that passed its checksum but does not decode: skip it, say so once.
        if (!this.#failed.has(path)) {
          this.#failed.add(path);
          this.#deps.log.warn(
            { media: entry.media.id, err: error },
            `media ${entry.media.id} cannot be played, skipped: ${(error as Error).message}`,
          );
        }
      }
    }
    return undefined;
  }

  #showAndSchedule(item: Prepared, generation: number): void {
    const playlist = this.#playlist;
    if (!playlist) return;
    const previous = this.#current;
    try {
      this.#deps.player.show(item.prepared, this.#deps.targets);
    } catch (error) {
      this.#deps.log.warn({ err: error }, `showing ${item.prepared.item.label} failed: ${(error as Error).message}`);
      this.#deps.player.discard(item.prepared);
      return;
    }
    if (previous && previous.prepared.handle !== item.prepared.handle) this.#deps.player.discard(previous.prepared);
    this.#current = item;
    this.#state = { kind: 'playing', playlist: playlist.id, item: item.prepared.item.label, index: item.index };
    this.#failureWatch(item, generation);
    const entry = playlist.items[item.index];
    const single = playlist.items.length === 1;
    const last = item.index === playlist.items.length - 1;
    if (single || (last && !playlist.loop)) return; // it loops (or holds) by itself

    // Preroll what comes next while this one shows.
    const nextStart = (item.index + 1) % playlist.items.length;
    void this.#prepareFrom(playlist, nextStart, playlist.items.length - 1).then((next) => {
      if (generation !== this.#generation) {
        if (next) this.#deps.player.discard(next.prepared);
        return;
      }
      this.#next = next;
    });

    const advance = (): void => {
      if (generation !== this.#generation) return;
      const next = this.#next;
      this.#next = undefined;
      if (next) {
        this.#showAndSchedule(next, generation);
        return;
      }
      // Nothing else was ready (not cached yet, or refused): look now; meanwhile the current
      // item keeps playing (an image stays; a video keeps its last frame, or loops when alone).
      void this.#prepareFrom(playlist, nextStart, playlist.items.length - 1).then((found) => {
        if (generation !== this.#generation) {
          if (found) this.#deps.player.discard(found.prepared);
          return;
        }
        if (found) this.#showAndSchedule(found, generation);
        else this.#timer = setTimeout(advance, 1000);
      });
    };
    const durationMs = entry ? itemDurationMs(entry) : undefined;
    if (durationMs !== undefined) {
      this.#timer = setTimeout(advance, durationMs);
      return;
    }
    // Play to the end: the decoder loops at the end of the file; its loop counter is the signal.
    const base = this.#deps.player.loops(item.prepared);
    const poll = (): void => {
      if (generation !== this.#generation) return;
      if (this.#deps.player.loops(item.prepared) > base) advance();
      else this.#timer = setTimeout(poll, this.#deps.pollMs ?? 40);
    };
    this.#timer = setTimeout(poll, this.#deps.pollMs ?? 40);
  }

  /**
   * A shown item whose decoder fails keeps its last frame for the hold time, then the next
   * playable item takes over, or with none a slate naming why: never a black screen.
   */
  #failureWatch(item: Prepared, generation: number): void {
    clearTimeout(this.#failureTimer);
    const { player, log } = this.#deps;
    if (!player.failure) return;
    const pollMs = this.#deps.failurePollMs ?? 1000;
    const check = (): void => {
      if (generation !== this.#generation || this.#current !== item) return;
      const failed = player.failure?.(item.prepared);
      if (!failed) {
        this.#failureTimer = setTimeout(check, pollMs);
        return;
      }
      const holdMs = this.#deps.failureHoldMs ?? FAILED_HOLD_MS;
      log.warn(
        { media: item.media.id, code: failed.code },
        `${this.outputs.join(', ')}: ${item.media.id} failed (${failed.code}: ${failed.message}); its last frame stays ${holdMs} ms`,
      );
      this.#failureTimer = setTimeout(() => void this.#replaceFailed(item, failed.code, generation), holdMs);
    };
    this.#failureTimer = setTimeout(check, pollMs);
  }

  async #replaceFailed(item: Prepared, code: string, generation: number): Promise<void> {
    const playlist = this.#playlist;
    if (!playlist || generation !== this.#generation || this.#current !== item) return;
    clearTimeout(this.#timer);
    const count = playlist.items.length;
    const next = this.#next ?? (await this.#prepareFrom(playlist, (item.index + 1) % count, count - 1));
    this.#next = undefined;
    if (generation !== this.#generation) {
      if (next) this.#deps.player.discard(next.prepared);
      return;
    }
    if (next) {
      this.#showAndSchedule(next, generation);
      return;
    }
    await this.slate(`${item.media.id} failed: ${code}`);
  }
}

/** How long an item shows: its own duration, else its media's (an image); undefined: a video to its end. */
function itemDurationMs(entry: RunnablePlaylist['items'][number]): number | undefined {
  return entry.durationMs ?? (entry.media.duration !== undefined ? entry.media.duration * 1000 : undefined);
}
