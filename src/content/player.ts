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
    options: { colour: string; label: string; scale?: number },
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
  /** Output statistics by name, for tests and status (vblanks with no picture, etc.). */
  stats?(): Array<{ name: string; blank: number; playing?: string }>;
  close(): void;
}
