import type { DecodeManager, KmsDevice, OutputInfo, VirtualDisplay } from '../native/addon.ts';

/** One output as playback sees it, whichever backend drives it. */
export interface ScreenOutput {
  readonly name: string;
  readonly width: number;
  readonly height: number;
  readonly refresh: number;
}

/** Where one output shows a source: a normalised source crop (video walls) and a rotation. */
export interface ScreenPlacement {
  readonly output: string;
  /** Part of the decoded picture, in 0..1 coordinates. Default: all of it. */
  readonly crop?: { x: number; y: number; width: number; height: number };
  readonly rotation?: 0 | 90 | 180 | 270;
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

function jpegOptions(width: number | undefined, quality: number | undefined): { outWidth?: number; quality?: number } {
  return { ...(width !== undefined ? { outWidth: width } : {}), ...(quality !== undefined ? { quality } : {}) };
}

export function virtualScreens(display: VirtualDisplay, outputs: readonly ScreenOutput[]): Screens {
  const showing = showingTrack();
  return {
    kind: 'virtual',
    outputs: () => [...outputs],
    play(decode, consumer, placements) {
      // Virtual outputs show the whole decoded frame: crop and rotation are the planes' job on KMS.
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
    snapshotJpeg: async (output, width, quality) =>
      (await display.snapshotJpeg(output, jpegOptions(width, quality))) ?? undefined,
    stats: () =>
      display.stats().map((o) => ({ name: o.name, vblanks: o.vblanks, frames: o.frames, dropped: o.dropped })),
  };
}

export function kmsScreens(device: KmsDevice, current: () => readonly OutputInfo[]): Screens {
  const showing = showingTrack();
  return {
    kind: 'kms',
    outputs: () =>
      current().map((o) => ({
        name: o.connector,
        width: o.mode.width,
        height: o.mode.height,
        refresh: o.mode.refresh,
      })),
    play(decode, consumer, placements) {
      // The engine crops in source pixels; the decoder knows the stream's size once opened.
      const source = decode.status().decoders.find((d) => d.consumers.includes(consumer));
      device.playVideo(
        decode,
        consumer,
        placements.map((p) => ({
          connector: p.output,
          ...(p.crop && source ? { src: cropPixels(p.crop, source.width, source.height) } : {}),
          ...(p.rotation ? { rotation: p.rotation } : {}),
        })),
      );
      showing.set(
        consumer,
        placements.map((p) => p.output),
      );
    },
    showing: showing.get,
    snapshotJpeg: async (output, width, quality) =>
      (await device.snapshotJpeg(output, jpegOptions(width, quality))) ?? undefined,
    stats: () =>
      device.stats().map((o) => ({ name: o.connector, vblanks: o.flips, frames: o.commits, dropped: o.dropped })),
  };
}

/** A normalised crop in whole source pixels, kept inside the frame. */
export function cropPixels(
  crop: NonNullable<ScreenPlacement['crop']>,
  width: number,
  height: number,
): { x: number; y: number; width: number; height: number } {
  const x = Math.min(width - 1, Math.max(0, Math.round(crop.x * width)));
  const y = Math.min(height - 1, Math.max(0, Math.round(crop.y * height)));
  return {
    x,
    y,
    width: Math.max(1, Math.min(width - x, Math.round(crop.width * width))),
    height: Math.max(1, Math.min(height - y, Math.round(crop.height * height))),
  };
}
