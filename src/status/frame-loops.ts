/**
 * A native frame loop wakes at least every 20 ms; one that has not gone round for this long is
 * stuck (a driver call that never returns), not merely busy.
 */
export const FRAME_LOOP_STALL_MS = 2000;

export interface FrameLoopHealth {
  readonly loops: Array<{ name: string; ageMs: number }>;
  /** One sentence per stuck loop; empty when every loop goes round. */
  readonly stalled: string[];
}

/** The native frame loops (KMS presentation, virtual vblank) and which of them are stuck. */
export function frameLoopsCheck(
  frameLoops: () => ReadonlyArray<{ name: string; ageMs: number }>,
  limitMs = FRAME_LOOP_STALL_MS,
): FrameLoopHealth {
  const loops = frameLoops().map((l) => ({ name: l.name, ageMs: Math.round(l.ageMs) }));
  return {
    loops,
    // Without the age: the sentence stays the same while the stall lasts, so readers hear it once.
    stalled: loops
      .filter((l) => l.ageMs >= limitMs)
      .map((l) => `frame loop ${l.name} stalled (no turn for ${limitMs / 1000} s or more)`),
  };
}
