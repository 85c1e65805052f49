import type { Screens } from '../display/screens.ts';
import type { DecodeManager, DecoderInfo } from '../native/addon.ts';
import { acquireFirstPicture } from '../playback/first-picture.ts';
import type { Player, PlayerItem, PlayerTarget, PreparedItem } from './player.ts';

export interface ScreensPlayerDeps {
  /** The supervisor's one decode manager: content shares decoders with everything else. */
  readonly decode: DecodeManager;
  readonly screens: Screens;
  /** Shown on slates next to the reason. */
  readonly deviceName: string;
  /** Told before content takes outputs over, so whatever played there (the demo) lets go. */
  readonly claim?: (outputs: readonly string[]) => void;
}

/** Dark grey, the display extension's slate colour: "driven, nothing to play" is not "no signal". */
const SLATE_COLOUR = '181c20';
/** Longest wait for an item's first decoded frame before it is given up on (skipped). */
const PREROLL_TIMEOUT_MS = 5000;

/**
 * A Player over the decode manager and the Screens (KMS or virtual outputs). Every item is its
 * own decoder consumer; `prepare` prerolls it (first frame decoded and held) and `show` hands
 * it the outputs at a vblank, then releases what they showed before, exactly as the engine's
 * gapless test does. Crop, layout and rotation go to the planes on KMS and to the previews.
 */
export class ScreensPlayer implements Player {
  readonly #deps: ScreensPlayerDeps;
  readonly #onOutput = new Map<string, string>();
  readonly #held = new Set<string>();
  #serial = 0;

  constructor(deps: ScreensPlayerDeps) {
    this.#deps = deps;
  }

  /** Follows hotplug: the outputs driven now. */
  get outputs(): readonly string[] {
    return this.#deps.screens.outputs().map((o) => o.name);
  }

  async prepare(item: PlayerItem): Promise<PreparedItem> {
    const handle = `content#${++this.#serial}:${item.label}`;
    // Resolves only once the first frame is decoded (a busy CPU, a slow server): an output given
    // it earlier would have a vblank with no picture. Rejects with the ERR_ code of why not.
    // Fresh: from the file's first frame, never joining another output's decoder of the same
    // file in the middle (two playlists out of step cut each other's items short).
    await acquireFirstPicture(
      this.#deps.decode,
      handle,
      { source: item.path, fresh: true },
      { timeoutMs: PREROLL_TIMEOUT_MS },
    );
    this.#held.add(handle);
    return { handle, item };
  }

  show(prepared: PreparedItem, targets: readonly PlayerTarget[]): void {
    const driven = this.outputs;
    const shown = targets.filter((t) => driven.includes(t.output));
    const outputs = shown.map((t) => t.output);
    if (outputs.length === 0) return;
    this.#deps.claim?.(outputs);
    this.#deps.screens.play(
      this.#deps.decode,
      prepared.handle,
      shown.map((t) => ({
        output: t.output,
        ...(t.crop ? { crop: t.crop } : {}),
        ...(t.layout ? { layout: t.layout } : {}),
        ...(t.rotation !== undefined ? { rotation: t.rotation } : {}),
      })),
    );
    const replaced = new Set<string>();
    for (const o of outputs) {
      const before = this.#onOutput.get(o);
      if (before !== undefined && before !== prepared.handle) replaced.add(before);
      this.#onOutput.set(o, prepared.handle);
    }
    const stillShown = new Set(this.#onOutput.values());
    for (const handle of replaced) {
      if (!stillShown.has(handle)) this.#release(handle);
    }
  }

  discard(prepared: PreparedItem): void {
    if (![...this.#onOutput.values()].includes(prepared.handle)) this.#release(prepared.handle);
  }

  failure(prepared: PreparedItem): { code: string; message: string } | undefined {
    const d = this.#decoderOf(prepared.handle);
    return d?.failure ? { code: d.failureCode ?? 'ERR_DECODE_FAILED', message: d.failure } : undefined;
  }

  #decoderOf(handle: string): DecoderInfo | undefined {
    return (this.#deps.decode.status().decoders as DecoderInfo[]).find((x) => x.consumers.includes(handle));
  }

  loops(prepared: PreparedItem): number {
    const d = this.#deps.decode.status().decoders.find((x) => x.consumers.includes(prepared.handle));
    return d?.loops ?? 0;
  }

  async slate(outputs: readonly string[], reason: string, wanted: () => boolean = () => true): Promise<void> {
    for (const name of outputs) {
      const config = this.#deps.screens.outputs().find((o) => o.name === name);
      if (!config) continue;
      const text = slateText(`${this.#deps.deviceName} - ${name}`, reason);
      const size = `${config.width}x${config.height}`;
      const font = Math.max(12, Math.round(config.height / 30));
      // Drawn by the addon (native/src/decode/pattern.rs), one frame a second.
      const source = `pattern:slate?size=${size}&rate=1&colour=${SLATE_COLOUR}&fontsize=${font}&text=${encodeURIComponent(text)}`;
      const prepared = await this.prepare({ path: source, type: 'image', label: 'slate' });
      // Content may have started while the slate was being made: then it must not cover it.
      if (wanted()) this.show(prepared, [{ output: name }]);
      else this.discard(prepared);
    }
  }

  #release(handle: string): void {
    if (!this.#held.delete(handle)) return;
    try {
      this.#deps.decode.release(handle);
    } catch {
      // Already gone (the decoder failed and was dropped): nothing left to release.
    }
  }

  close(): void {
    for (const handle of [...this.#held]) this.#release(handle);
    this.#onOutput.clear();
  }
}

/**
 * A slate's line: letters, digits and plain punctuation only (what the built-in font draws and
 * a reader needs), each part at most 160 characters.
 */
export function slateText(title: string, reason: string): string {
  const clean = (s: string): string => s.replace(/[^A-Za-z0-9 .,()#/_+:-]/g, ' ').slice(0, 160);
  return `${clean(title)} -- ${clean(reason)}`;
}
