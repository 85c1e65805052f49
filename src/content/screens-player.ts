import { outputPowerSet } from '../display/power.ts';
import type { Screens } from '../display/screens.ts';
import type { DecodeManager, DecoderInfo } from '../native/addon.ts';
import { acquireFirstPicture } from '../playback/first-picture.ts';
import type { Player, PlayerItem, PlayerPlayRecord, PlayerTarget, PreparedItem, ProofMeta } from './player.ts';

export interface ScreensPlayerDeps {
  /** The supervisor's one decode manager: content shares decoders with everything else. */
  readonly decode: DecodeManager;
  readonly screens: Screens;
  /** Shown on slates next to the reason. */
  readonly deviceName: string;
  /** Longest wait for an item's first frame before it is given up on (default 5 s). */
  readonly prerollTimeoutMs?: number;
  /** Told when a display power change fails (logged by the caller). */
  readonly onPowerFailed?: (output: string, error: Error) => void;
  /** Told before content takes outputs over, so whatever played there (the demo) lets go. */
  readonly claim?: (outputs: readonly string[]) => void;
}

/** Dark grey, the display extension's slate colour: "driven, nothing to play" is not "no signal". */
const SLATE_COLOUR = '181c20';
/** Recorded items remembered after release, for their outputs' last records (drained every half second). */
const PROOFS_KEPT = 256;
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
  /** What the runners show on each output (under an interrupt: what they would show). */
  readonly #onOutput = new Map<string, string>();
  /** Each output's last target (crop, layout, rotation), to put the runner's item back. */
  readonly #targetOf = new Map<string, PlayerTarget>();
  /** Interrupts on screen over the runners' items, by output. */
  readonly #cover = new Map<string, string>();
  readonly #held = new Set<string>();
  /**
   * Recorded items by consumer, with the decoder's loop count when it left the screens: kept
   * a while after release, since the outputs' records of it are drained later.
   */
  readonly #proofs = new Map<string, { meta: ProofMeta; loops?: number }>();
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
      { source: item.path, fresh: true, ...(item.holdAtEnd ? { holdAtEnd: true } : {}) },
      { timeoutMs: this.#deps.prerollTimeoutMs ?? PREROLL_TIMEOUT_MS },
    );
    this.#held.add(handle);
    if (item.proof) this.#proofRemember(handle, item.proof);
    return { handle, item };
  }

  #proofRemember(handle: string, meta: ProofMeta): void {
    this.#proofs.set(handle, { meta });
    for (const old of this.#proofs.keys()) {
      if (this.#proofs.size <= PROOFS_KEPT) break;
      this.#proofs.delete(old);
    }
  }

  playRecords(): PlayerPlayRecord[] {
    const screens = this.#deps.screens;
    const records = screens.playRecords?.() ?? [];
    if (records.length === 0) return [];
    const refresh = new Map(screens.outputs().map((o) => [o.name, o.refresh]));
    const out: PlayerPlayRecord[] = [];
    for (const r of records) {
      const proof = this.#proofs.get(r.consumer);
      if (!proof) continue;
      out.push({
        output: r.output,
        pass: r.pass,
        loops: proof.loops ?? this.#loopsOf(r.consumer),
        firstUs: r.firstUs,
        lastUs: r.lastUs,
        frames: r.frames,
        end: r.end,
        refresh: refresh.get(r.output) ?? 60,
        proof: proof.meta,
        key: `${r.output}|${r.consumer}|${r.pass}|${r.firstUs}`,
      });
    }
    return out;
  }

  #loopsOf(handle: string): number {
    return this.#decoderOf(handle)?.loops ?? 0;
  }

  show(prepared: PreparedItem, targets: readonly PlayerTarget[]): void {
    const driven = this.outputs;
    const shown = targets.filter((t) => driven.includes(t.output));
    const outputs = shown.map((t) => t.output);
    if (outputs.length === 0) return;
    for (const t of shown) this.#targetOf.set(t.output, t);
    // Under an interrupt the runner goes on (its timeline, its releases), off screen.
    const visible = shown.filter((t) => !this.#cover.has(t.output));
    this.#screensPlay(prepared.handle, visible);
    const replaced = new Set<string>();
    for (const o of outputs) {
      const before = this.#onOutput.get(o);
      if (before !== undefined && before !== prepared.handle) replaced.add(before);
      this.#onOutput.set(o, prepared.handle);
    }
    this.#releaseUnused(replaced);
  }

  /**
   * Shows an interrupt over whatever the runners show on `targets`, from the next vblank; the
   * runners go on underneath. A previous interrupt on those outputs is released.
   */
  cover(prepared: PreparedItem, targets: readonly PlayerTarget[]): void {
    const driven = this.outputs;
    const shown = targets.filter((t) => driven.includes(t.output));
    const replaced = new Set<string>();
    for (const t of shown) {
      const before = this.#cover.get(t.output);
      if (before !== undefined && before !== prepared.handle) replaced.add(before);
      this.#cover.set(t.output, prepared.handle);
    }
    this.#screensPlay(prepared.handle, shown);
    this.#releaseUnused(replaced);
  }

  /** Ends the interrupt on `outputs`: each shows what its runner shows now, at the next vblank. */
  uncover(outputs: readonly string[]): void {
    const ended = new Set<string>();
    const back = new Map<string, PlayerTarget[]>();
    for (const o of outputs) {
      const cover = this.#cover.get(o);
      if (cover === undefined) continue;
      this.#cover.delete(o);
      ended.add(cover);
      const under = this.#onOutput.get(o);
      if (under !== undefined) back.set(under, [...(back.get(under) ?? []), this.#targetOf.get(o) ?? { output: o }]);
    }
    for (const [handle, targets] of back) this.#screensPlay(handle, targets);
    this.#releaseUnused(ended);
  }

  async power(outputs: readonly string[], on: boolean): Promise<void> {
    const screens = this.#deps.screens;
    if (!screens.power) return;
    for (const o of outputs) {
      if (screens.powered?.(o) === on) continue;
      try {
        await outputPowerSet(screens, o, on);
      } catch (error) {
        this.#deps.onPowerFailed?.(o, error as Error);
      }
    }
  }

  outputSize(output: string): string | undefined {
    const o = this.#deps.screens.outputs().find((x) => x.name === output);
    return o ? `${o.width}x${o.height}` : undefined;
  }

  /** Outputs an interrupt covers now. */
  covered(): string[] {
    return [...this.#cover.keys()];
  }

  discard(prepared: PreparedItem): void {
    if (!this.#inUse(prepared.handle)) this.#release(prepared.handle);
  }

  #screensPlay(handle: string, targets: readonly PlayerTarget[]): void {
    if (targets.length === 0) return;
    this.#deps.claim?.(targets.map((t) => t.output));
    this.#deps.screens.play(
      this.#deps.decode,
      handle,
      targets.map((t) => ({
        output: t.output,
        ...(t.crop ? { crop: t.crop } : {}),
        ...(t.layout ? { layout: t.layout } : {}),
        ...(t.rotation !== undefined ? { rotation: t.rotation } : {}),
      })),
    );
  }

  #inUse(handle: string): boolean {
    return [...this.#onOutput.values()].includes(handle) || [...this.#cover.values()].includes(handle);
  }

  #releaseUnused(handles: Iterable<string>): void {
    for (const handle of handles) if (!this.#inUse(handle)) this.#release(handle);
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
      const prepared = await this.prepareStill(name, slateText(`${this.#deps.deviceName} - ${name}`, reason), {
        colour: SLATE_COLOUR,
        label: 'slate',
      });
      if (!prepared) continue;
      // Content may have started while the slate was being made: then it must not cover it.
      if (wanted()) this.show(prepared, [{ output: name }]);
      else this.discard(prepared);
    }
  }

  /**
   * A still of `text` on `colour`, drawn for `output`'s size by the addon (native/src/decode/
   * pattern.rs, one frame a second); undefined when the output is not driven. `scale`: the
   * font's size against the output's height (1: a slate's small print).
   */
  async prepareStill(
    output: string,
    text: string,
    options: { colour: string; label: string; scale?: number; proof?: ProofMeta },
  ): Promise<PreparedItem | undefined> {
    const config = this.#deps.screens.outputs().find((o) => o.name === output);
    if (!config) return undefined;
    const size = `${config.width}x${config.height}`;
    const font = Math.max(12, Math.round((config.height / 30) * (options.scale ?? 1)));
    const source = `pattern:slate?size=${size}&rate=1&colour=${options.colour}&fontsize=${font}&text=${encodeURIComponent(text)}`;
    return await this.prepare({
      path: source,
      type: 'image',
      label: options.label,
      ...(options.proof ? { proof: options.proof } : {}),
    });
  }

  #release(handle: string): void {
    if (!this.#held.delete(handle)) return;
    // Whether it reached its end, as it left: its outputs' last record is judged by it.
    const proof = this.#proofs.get(handle);
    if (proof) proof.loops = this.#loopsOf(handle);
    try {
      this.#deps.decode.release(handle);
    } catch {
      // Already gone (the decoder failed and was dropped): nothing left to release.
    }
  }

  close(): void {
    for (const handle of [...this.#held]) this.#release(handle);
    this.#onOutput.clear();
    this.#cover.clear();
  }
}

/**
 * A slate's line: letters, digits and plain punctuation only (what the built-in font draws and
 * a reader needs), each part at most 160 characters.
 */
export function slateText(title: string, reason: string): string {
  return `${stillText(title)} -- ${stillText(reason)}`;
}

/** Text for a still: what the built-in font draws (letters, digits, plain punctuation), 160 characters at most. */
export function stillText(text: string): string {
  return text.replace(/[^A-Za-z0-9 .,()#/_+:!?-]/g, ' ').slice(0, 160);
}
