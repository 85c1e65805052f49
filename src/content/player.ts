import type { Layout, Rotation } from '../display/layout.ts';
import type { Crop, MediaType } from './model.ts';

/**
 * What the content extension needs from whatever drives the screens. It decides WHAT plays
 * and WHEN; a Player makes it appear. Implemented over playback's Screens (KMS or virtual
 * outputs) and its decode manager in screens-player.ts.
 */

export interface PlayerItem {
  /** A verified file from the media cache; never a partial download. */
  readonly path: string;
  readonly type: MediaType;
  /** For logs and status: the media id. */
  readonly label: string;
  /** What proof of play records about it; items without (slates) are not recorded. */
  readonly proof?: ProofMeta;
  /**
   * A video played to its end keeps its last frame there instead of starting over, so the next
   * item takes over from it (never after the file's first frame shown again).
   */
  readonly holdAtEnd?: boolean;
}

/** What a proof-of-play record says about the item shown (src/content/proof-of-play.ts). */
export interface ProofMeta {
  readonly media: string;
  readonly digest?: string;
  readonly playlist?: string;
  readonly interrupt?: string;
  /** How long it is meant to show; absent for a video that plays to its end. */
  readonly expectedMs?: number;
}

/** One output's record of one item from the outputs' own vblanks, with what it was. */
export interface PlayerPlayRecord {
  readonly output: string;
  /** Pass of the file (a looping video's loops), and the loops its decoder had counted by the end. */
  readonly pass: number;
  readonly loops: number;
  readonly firstUs: number;
  readonly lastUs: number;
  readonly frames: number;
  readonly end: string;
  /** The output's refresh rate: a record lasts one refresh past its last vblank. */
  readonly refresh: number;
  readonly proof: ProofMeta;
  /** Identifies the play across drains (an open record comes again until it closes). */
  readonly key: string;
}

export interface PlayerTarget {
  readonly output: string;
  /** A video-wall tile: the part of the picture this output shows. */
  readonly crop?: Crop;
  readonly layout?: Layout;
  readonly rotation?: Rotation;
}

/** An item decoded up to its first frame and held, ready to take over at the next vblank. */
export interface PreparedItem {
  readonly handle: string;
  readonly item: PlayerItem;
}

export interface Player {
  /** Output names this player drives. */
  readonly outputs: readonly string[];
  /** Opens an item and waits for its first decoded frame (preroll); rejects with a coded error. */
  prepare(item: PlayerItem): Promise<PreparedItem>;
  /**
   * Shows a prepared item on the targets from the next vblank. What they showed before is
   * released once replaced, so the switch has no gap.
   */
  show(prepared: PreparedItem, targets: readonly PlayerTarget[]): void;
  /** Releases a prepared item that will not be shown. */
  discard(prepared: PreparedItem): void;
  /**
   * Shows an interrupt over the runners' items on `targets` from the next vblank; the runners
   * go on underneath (their items change off screen). Absent: the player cannot interrupt.
   */
  cover?(prepared: PreparedItem, targets: readonly PlayerTarget[]): void;
  /** Outputs an interrupt covers now. */
  covered?(): string[];
  /** Ends the interrupt on `outputs`: each shows its runner's item now, at the next vblank. */
  uncover?(outputs: readonly string[]): void;
  /**
   * Display power of `outputs` (DPMS where the outputs are real; virtual ones have no display
   * and only show what the runner shows). Resolves when done; failures are logged, not thrown.
   */
  power?(outputs: readonly string[], on: boolean): Promise<void>;
  /** `output`'s size as `WxH`, so outputs of one size share one still; undefined when not driven. */
  outputSize?(output: string): string | undefined;
  /** A still of `text` on `colour` (RRGGBB) at `output`'s size; undefined when it is not driven. */
  prepareStill?(
    output: string,
    text: string,
    options: { colour: string; label: string; scale?: number; proof?: ProofMeta },
  ): Promise<PreparedItem | undefined>;
  /**
   * Why a prepared or shown item's decoder stopped (an ERR_ code and the reason), if it did: its
   * outputs keep the last frame until the runner gives them something else.
   */
  failure?(prepared: PreparedItem): { code: string; message: string } | undefined;
  /** How many times a shown video has reached its end and started over (0 for images). */
  loops(prepared: PreparedItem): number;
  /**
   * A slate with the reason on these outputs: never a black screen without explanation.
   * `wanted` is asked right before it goes up: false (something newer started) drops it.
   */
  slate(outputs: readonly string[], reason: string, wanted?: () => boolean): Promise<void>;
  /**
   * Proof of play: what the outputs showed of recorded items, from their own vblanks (closed
   * records once, open ones at every call). Absent: the player cannot tell.
   */
  playRecords?(): PlayerPlayRecord[];
  /** Output statistics by name, for tests and status (vblanks with no picture, etc.). */
  stats?(): Array<{ name: string; blank: number; playing?: string }>;
  close(): void;
}
