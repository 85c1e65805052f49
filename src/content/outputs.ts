import type { Logger } from '../log/logger.ts';
import { type Assignment, assignmentKey, assignmentOutputs, type Content, type MediaItem } from './model.ts';
import type { Player } from './player.ts';
import { PlaylistRunner, type RunnablePlaylist, type RunnerState, type SkipOutcome } from './playlist-runner.ts';
import { runnablePlaylist } from './playlists.ts';
import type { Placement } from './scheduler.ts';

export interface ContentOutputsDeps {
  readonly logger: Logger;
  /** What shows content; made on first use, so it can wait for playback to be ready. */
  readonly playerCreate: () => Player | undefined;
  /** A verified cached file for the media, or null when it is not (yet) cached. */
  readonly resolve: (media: MediaItem) => Promise<string | null>;
}

/**
 * The player and one playlist runner per assignment (an output or a video wall): what each
 * output shows. Runners are kept across content versions while their assignment stays.
 */
export class ContentOutputs {
  readonly #deps: ContentOutputsDeps;
  readonly #runners = new Map<string, PlaylistRunner>();
  /** Playlists are compared by definition, so editing a playlist restarts it. */
  readonly #signatures = new Map<string, string>();
  #player: Player | undefined;
  #note = 'not started';

  constructor(deps: ContentOutputsDeps) {
    this.#deps = deps;
  }

  get player(): Player | undefined {
    return this.#player;
  }

  /** What shows content, or why nothing does. */
  get note(): string {
    return this.#note;
  }

  /** Made once: a player that could not be made is not tried again. */
  playerEnsure(): Player | undefined {
    if (this.#player || this.#note !== 'not started') return this.#player;
    const { logger } = this.#deps;
    try {
      this.#player = this.#deps.playerCreate();
      this.#note = this.#player ? `outputs ${this.#player.outputs.join(', ')}` : 'playback has no outputs yet';
    } catch (error) {
      this.#note = `cannot start: ${(error as Error).message}`;
      logger.error({ err: error }, `content player ${this.#note}`);
    }
    if (!this.#player) logger.warn(`content scheduled, but nothing shows it: ${this.#note}`);
    return this.#player;
  }

  /** Runners for the assignments of `content`; dropped assignments and unassigned outputs get a slate. */
  reconcile(content: Content, player: Player): void {
    const keys = new Set(content.outputs.map(assignmentKey));
    for (const [key, runner] of this.#runners) {
      if (!keys.has(key)) {
        runner.stop();
        this.#runners.delete(key);
        void player.slate(runner.outputs, `not assigned in content version ${content.version}`);
      }
    }
    const assigned = new Set<string>();
    for (const a of content.outputs) {
      const outputs = assignmentOutputs(a).filter((o) => player.outputs.includes(o));
      for (const o of assignmentOutputs(a)) {
        if (!player.outputs.includes(o))
          this.#deps.logger.warn({ output: o }, `content assigns output ${o}, which this device does not drive`);
        assigned.add(o);
      }
      const key = assignmentKey(a);
      if (!this.#runners.has(key) && outputs.length > 0) this.#runners.set(key, this.#runnerFor(a, outputs, player));
    }
    const free = player.outputs.filter((o) => !assigned.has(o));
    if (free.length > 0)
      void player.slate(free, `no content assigned to this output (content version ${content.version})`);
  }

  /** Each runner plays what the schedule places on its assignment now, unless it already does. */
  follow(content: Content, perOutput: Readonly<Record<string, Placement>>): void {
    for (const a of content.outputs) {
      const key = assignmentKey(a);
      const runner = this.#runners.get(key);
      const placement = perOutput[assignmentOutputs(a)[0] ?? ''];
      if (!runner || !placement) continue;
      // A display-off window: the runner shows a slate (its decoders released) and the
      // displays sleep; an output an interrupt covers stays awake to show it.
      const covered = new Set(this.#player?.covered?.() ?? []);
      const off = placement.display === 'off';
      void this.#player?.power?.(
        runner.outputs.filter((o) => !(off && covered.has(o))),
        !off,
      );
      if (placement.playlist === null) {
        const state = runner.state;
        if (state.kind !== 'slate' || state.reason !== placement.reason) void runner.slate(placement.reason);
        this.#signatures.delete(key);
        continue;
      }
      const playlist = runnablePlaylist(content, placement.playlist);
      const sig = signature(playlist);
      if (playlist && (runner.playlistId !== playlist.id || this.#signatures.get(key) !== sig)) {
        this.#signatures.set(key, sig);
        this.#deps.logger.info(
          { assignment: key, playlist: playlist.id, reason: placement.reason },
          `${key}: playing ${playlist.id} (${placement.reason})`,
        );
        void runner.play(playlist);
      }
    }
  }

  /** Prerolls the first item of what each runner plays next, so the switch lands on the boundary. */
  preroll(content: Content, next: Readonly<Record<string, Placement>>): void {
    for (const a of content.outputs) {
      const target = next[assignmentOutputs(a)[0] ?? '']?.playlist;
      const runner = this.#runners.get(assignmentKey(a));
      if (!runner || !target || target === runner.playlistId) continue;
      const playlist = runnablePlaylist(content, target);
      if (playlist) void runner.preroll(playlist);
    }
  }

  /** sha256s every output shows or holds prerolled now: the cache never evicts them. */
  mediaInUse(): string[] {
    return [...this.#runners.values()].flatMap((r) => r.mediaInUse.map((m) => m.sha256));
  }

  /** New media arrived: runners waiting for it look again. */
  retry(): void {
    for (const runner of this.#runners.values()) runner.retry();
  }

  /**
   * `playlist.next` / `playlist.previous`: each runner that drives one of `outputs` (all of
   * them when absent) moves once, a video wall as one; the outcome per output. Outputs that
   * content does not drive are named, and then nothing moves.
   */
  async skip(
    outputs: readonly string[] | undefined,
    by: 1 | -1,
  ): Promise<{ outcomes: Record<string, SkipOutcome>; unknown: string[]; driven: string[] }> {
    const runners = [...this.#runners.values()];
    const driven = new Set(runners.flatMap((r) => r.outputs));
    const unknown = (outputs ?? []).filter((o) => !driven.has(o));
    // A list with a mistake in it moves nothing: the caller refuses it whole.
    if (unknown.length > 0) return { outcomes: {}, unknown, driven: [...driven] };
    const chosen = runners.filter((r) => !outputs || r.outputs.some((o) => outputs.includes(o)));
    const moved = await Promise.all(chosen.map(async (r) => ({ r, outcome: await r.skip(by) })));
    const outcomes: Record<string, SkipOutcome> = {};
    for (const { r, outcome } of moved) for (const o of r.outputs) outcomes[o] = outcome;
    return { outcomes, unknown, driven: [...driven] };
  }

  state(assignment: string): RunnerState {
    return this.#runners.get(assignment)?.state ?? { kind: 'idle' };
  }

  close(): void {
    for (const runner of this.#runners.values()) runner.stop();
    this.#runners.clear();
    this.#player?.close();
  }

  #runnerFor(a: Assignment, outputs: string[], player: Player): PlaylistRunner {
    return new PlaylistRunner({
      player,
      targets: outputs.map((output) => {
        const crop = a.tiles?.find((t) => t.output === output)?.crop;
        // A wall's tiles fill their screens as the crop says (the designer set their
        // aspect); one output keeps the picture's own.
        const layout = a.layout ?? (a.tiles ? { fit: 'stretch' as const } : undefined);
        return {
          output,
          ...(crop ? { crop } : {}),
          ...(layout ? { layout } : {}),
          ...(a.rotation !== undefined ? { rotation: a.rotation } : {}),
        };
      }),
      resolve: this.#deps.resolve,
      log: this.#deps.logger,
    });
  }
}

function signature(playlist: RunnablePlaylist | undefined): string {
  return JSON.stringify(playlist ?? null);
}
