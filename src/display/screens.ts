import type { DecodeManager, DecoderInfo, KmsDevice, OutputInfo, PlayRecord, VirtualDisplay } from '../native/addon.ts';
import type { CecOutcome, CecOutputs, CecState } from './cec.ts';
import { type Layout, layoutPlace, type Placed, type Rotation } from './layout.ts';

/** One output as playback sees it, whichever backend drives it. */
export interface ScreenOutput {
  readonly name: string;
  readonly width: number;
  readonly height: number;
  readonly refresh: number;
}

/** Where one output shows a source: a normalised source crop (video walls), a rotation and a layout. */
export interface ScreenPlacement {
  readonly output: string;
  /** Part of the decoded picture, in 0..1 coordinates. Default: all of it. */
  readonly crop?: { x: number; y: number; width: number; height: number };
  /** Degrees the picture is turned clockwise on the panel (portrait screens). */
  readonly rotation?: Rotation;
  /** How the picture is sized to the output; default `fit` (aspect kept, black bars). */
  readonly layout?: Layout;
}

/** Per-output counters for logs, telemetry and metrics. */
export interface ScreenStats {
  readonly name: string;
  /** Vblanks (virtual) or page flips (KMS) so far. */
  readonly vblanks: number;
  /** Vblanks that showed a new frame (virtual) or commits (KMS). */
  readonly frames: number;
  /** Frames that never reached the output (late: skipped to the newest). */
  readonly dropped: number;
}

/** A picture of what an output shows, rows packed. */
/** A JPEG of what an output shows (previews, screenshots). */
export interface ScreenJpeg {
  readonly jpeg: Buffer;
  readonly width: number;
  readonly height: number;
}

/**
 * The outputs playback draws on: real KMS outputs, or virtual ones (a memory scanout paced by a
 * simulated vblank) on a machine without a display. Playback and previews use only this, so
 * they behave the same on a laptop, in tests and on the appliance.
 */
export interface Screens {
  readonly kind: 'kms' | 'virtual';
  outputs(): ScreenOutput[];
  /** Shows the consumer's decoder on these outputs from the next vblank, replacing what they showed. */
  play(decode: DecodeManager, consumer: string, placements: readonly ScreenPlacement[]): void;
  /** What the output shows now; undefined when nothing, or a GPU buffer the CPU cannot read. */
  /**
   * A JPEG of what the output shows, `width` pixels wide (height follows; default its own
   * size), encoded natively off the frame path; undefined before its first frame or when it
   * shows a GPU buffer the CPU cannot read.
   */
  snapshotJpeg(output: string, width?: number, quality?: number): Promise<ScreenJpeg | undefined>;
  stats(): ScreenStats[];
  /**
   * The decoder consumer the output was last given (`play`), or undefined. Consumers are named
   * by whoever plays (the demo by output, `play#N`, `content#N:...`): this is how a decoder's
   * failure is traced to the outputs that show it. Absent on test doubles.
   */
  showing?(output: string): string | undefined;
  /** The geometry in force on the output (source crop, destination, rotation, bars), once playing. */
  placed?(output: string): Placed | undefined;
  /** Display power (DPMS) of a KMS output; throws ERR_KMS_BUSY while a flip is in flight. */
  power?(output: string, on: boolean): void;
  /** Whether the output's display is on (KMS), as the engine last committed it. */
  powered?(output: string): boolean | undefined;
  /** Proof of play: the outputs' own records of which consumer was on show from which vblank to which. */
  playRecords?(): PlayRecord[];
  /**
   * The TV behind the output to CEC standby or awake, its power read back; undefined where the
   * output has no CEC adapter. Never throws: a CEC problem is the outcome's error.
   */
  cecPower?(output: string, on: boolean): Promise<CecOutcome | undefined>;
  /** The output's CEC adapter and the TV's power as last read back; undefined without one. */
  cecState?(output: string): CecState | undefined;
}

/** The consumer an output shows; without `showing`, the demo's convention (named after the output). */
export function consumerOn(screens: Pick<Screens, 'showing'>, output: string): string {
  return screens.showing?.(output) ?? output;
}

/** Which consumer each output was given last, as every `play` passes through here. */
function showingTrack(): {
  set: (consumer: string, outputs: readonly string[]) => void;
  get: (o: string) => string | undefined;
} {
  const shown = new Map<string, string>();
  return {
    set: (consumer, outputs) => {
      for (const o of outputs) shown.set(o, consumer);
    },
    get: (o) => shown.get(o),
  };
}

/**
 * Each output's geometry, computed at `play` from the decoder's picture size and kept for
 * previews, which compose the same view the plane shows. A decoder not open yet at `play`
 * (the demo starts its outputs at once) is placed on the first look after it opened.
 */
function placedTrack(
  rotationOf: (output: string) => Rotation,
  outputsNow: () => readonly ScreenOutput[],
): {
  place: (decode: DecodeManager, consumer: string, placements: readonly ScreenPlacement[]) => Map<string, Placed>;
  get: (o: string) => Placed | undefined;
} {
  const placed = new Map<string, Placed>();
  /** Outputs played on before their decoder knew its size, to place on a later look. */
  const later = new Map<string, { decode: DecodeManager; consumer: string; placement: ScreenPlacement }>();
  const compute = (decode: DecodeManager, consumer: string, p: ScreenPlacement): Placed | undefined => {
    const source: DecoderInfo | undefined = decode.status().decoders.find((d) => d.consumers.includes(consumer));
    const output = outputsNow().find((o) => o.name === p.output);
    if (!source || !output || source.width === 0 || source.height === 0) return undefined;
    return layoutPlace(
      {
        width: source.width,
        height: source.height,
        sarNum: source.sarNum ?? 0,
        sarDen: source.sarDen ?? 1,
        rotation: source.rotation ?? 0,
      },
      output,
      {
        ...(p.crop ? { crop: p.crop } : {}),
        // The content's rotation, else the screen's from the `outputs` setting.
        rotation: p.rotation ?? rotationOf(p.output),
        ...(p.layout ? { layout: p.layout } : {}),
      },
    );
  };
  return {
    place(decode, consumer, placements) {
      const now = new Map<string, Placed>();
      for (const p of placements) {
        const at = compute(decode, consumer, p);
        if (at) {
          placed.set(p.output, at);
          now.set(p.output, at);
          later.delete(p.output);
        } else {
          placed.delete(p.output);
          later.set(p.output, { decode, consumer, placement: p });
        }
      }
      return now;
    },
    get(o) {
      const pending = later.get(o);
      if (pending) {
        const at = compute(pending.decode, pending.consumer, pending.placement);
        if (at) {
          placed.set(o, at);
          later.delete(o);
        }
      }
      return placed.get(o);
    },
  };
}

function jpegOptions(
  width: number | undefined,
  quality: number | undefined,
  placed: Placed | undefined,
): { outWidth?: number; quality?: number; view?: SnapshotView } {
  return {
    ...(width !== undefined ? { outWidth: width } : {}),
    ...(quality !== undefined ? { quality } : {}),
    ...(placed ? { view: snapshotView(placed) } : {}),
  };
}

interface SnapshotView {
  outputWidth: number;
  outputHeight: number;
  src: Placed['src'];
  dst: Placed['dst'];
  rotation: number;
  background: string;
}

/** The placement as the native preview composer takes it. */
function snapshotView(p: Placed): SnapshotView {
  return {
    outputWidth: p.output.width,
    outputHeight: p.output.height,
    src: p.src,
    dst: p.dst,
    rotation: p.rotation,
    background: p.background,
  };
}

export function virtualScreens(
  display: VirtualDisplay,
  outputs: readonly ScreenOutput[],
  rotationOf: (output: string) => Rotation = () => 0,
): Screens {
  const showing = showingTrack();
  const placed = placedTrack(rotationOf, () => outputs);
  return {
    kind: 'virtual',
    outputs: () => [...outputs],
    play(decode, consumer, placements) {
      // Virtual outputs scan out the whole decoded frame; their previews compose the layout
      // (crop, rotation, bars) the way a plane would show it.
      placed.place(decode, consumer, placements);
      display.play(
        decode,
        consumer,
        placements.map((p) => p.output),
      );
      showing.set(
        consumer,
        placements.map((p) => p.output),
      );
    },
    showing: showing.get,
    placed: placed.get,
    snapshotJpeg: async (output, width, quality) =>
      (await display.snapshotJpeg(output, jpegOptions(width, quality, placed.get(output)))) ?? undefined,
    stats: () =>
      display.stats().map((o) => ({ name: o.name, vblanks: o.vblanks, frames: o.frames, dropped: o.dropped })),
    playRecords: () => display.playRecords(),
  };
}

export function kmsScreens(
  device: KmsDevice,
  current: () => readonly OutputInfo[],
  rotationOf: (output: string) => Rotation = () => 0,
  cec?: Pick<CecOutputs, 'power' | 'state'>,
): Screens {
  const showing = showingTrack();
  const outputs = (): ScreenOutput[] =>
    current().map((o) => ({
      name: o.connector,
      width: o.mode.width,
      height: o.mode.height,
      refresh: o.mode.refresh,
    }));
  const placed = placedTrack(rotationOf, outputs);
  const powerState = new Map<string, boolean>();
  return {
    kind: 'kms',
    outputs,
    play(decode, consumer, placements) {
      // The plane crops, scales and turns: source pixels from the decoder's picture size
      // (known once it opened), destination in the mode's pixels.
      const now = placed.place(decode, consumer, placements);
      device.playVideo(
        decode,
        consumer,
        placements.map((p) => {
          const at = now.get(p.output);
          // Before the decoder knows its size (none yet), the whole picture on the whole mode.
          const rotation = at?.rotation ?? p.rotation ?? rotationOf(p.output);
          return {
            connector: p.output,
            ...(at
              ? {
                  // The whole picture goes without a source rectangle, so a stream that
                  // changes size (an HLS variant) stays whole rather than cut or refused.
                  ...(wholePicture(at, decode, consumer) ? {} : { src: at.src }),
                  dst: at.dst,
                }
              : {}),
            ...(rotation ? { rotation } : {}),
          };
        }),
      );
      showing.set(
        consumer,
        placements.map((p) => p.output),
      );
    },
    showing: showing.get,
    placed: placed.get,
    snapshotJpeg: async (output, width, quality) =>
      (await device.snapshotJpeg(output, jpegOptions(width, quality, placed.get(output)))) ?? undefined,
    power: (output, on) => {
      device.setPower(output, on);
      powerState.set(output, on);
    },
    // Kept here, not asked of the engine: status reads it on every change, and the engine's
    // lock is the presentation thread's (its stats say the same: test/vm display-power-dpms).
    powered: (output) => powerState.get(output) ?? true,
    ...(cec
      ? {
          cecPower: (output: string, on: boolean) => cec.power(output, on),
          cecState: (output: string) => cec.state(output),
        }
      : {}),
    stats: () =>
      device.stats().map((o) => ({ name: o.connector, vblanks: o.flips, frames: o.commits, dropped: o.dropped })),
    playRecords: () => device.playRecords(),
  };
}

/** Whether `at` shows all of the consumer's decoded picture. */
function wholePicture(at: Placed, decode: DecodeManager, consumer: string): boolean {
  const source = decode.status().decoders.find((d) => d.consumers.includes(consumer));
  return (
    source !== undefined &&
    at.src.x === 0 &&
    at.src.y === 0 &&
    at.src.width === source.width &&
    at.src.height === source.height
  );
}
