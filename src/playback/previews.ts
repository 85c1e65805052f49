import { AV_PIX_FMT_BGR0, AV_PIX_FMT_NV12, Frame } from 'node-av';
import { Scaler } from 'node-av/api';
import type { ScreenFrame, Screens } from '../display/screens.ts';
import type { Logger } from '../log/logger.ts';

export interface PreviewJpeg {
  readonly jpeg: Buffer;
  readonly width: number;
  readonly height: number;
  /** Epoch ms when it was taken. */
  readonly at: number;
}

/**
 * Encodes what an output shows as a JPEG with FFmpeg (through node-av), optionally scaled to
 * `width` (height follows). Returns undefined when the frame cannot be encoded, with the reason
 * logged by the caller.
 */
export class JpegEncoder {
  readonly #scaler = new Scaler();

  async encode(frame: ScreenFrame, width?: number, quality = 80): Promise<PreviewJpeg> {
    const pixels = Buffer.from(frame.data.buffer, frame.data.byteOffset, frame.data.byteLength);
    const source = Frame.fromVideoBuffer(pixels, {
      width: frame.width,
      height: frame.height,
      format: frame.format === 'NV12' ? AV_PIX_FMT_NV12 : AV_PIX_FMT_BGR0,
      timeBase: { num: 1, den: 1 },
    });
    try {
      const outWidth = Math.min(width ?? frame.width, frame.width);
      // Even sizes: the JPEG encoder works in 4:2:0.
      const w = Math.max(2, outWidth & ~1);
      const h = Math.max(2, Math.round((frame.height * w) / frame.width) & ~1);
      const jpeg = await this.#scaler.toJpeg(source, { resize: { width: w, height: h }, quality });
      return { jpeg, width: w, height: h, at: Date.now() };
    } finally {
      source.free();
    }
  }

  close(): void {
    this.#scaler.close();
  }
}

export interface PreviewsDeps {
  readonly screens: Screens;
  readonly logger: Logger;
  readonly intervalMs: number;
  readonly width: number;
  readonly onPreview: (output: string, preview: PreviewJpeg) => void;
}

/**
 * Periodic JPEG previews of every output, for the status page and fleet dashboards. Off the
 * frame path: a snapshot copies the frame on screen once per interval, JavaScript encodes it.
 */
export class Previews {
  readonly #deps: PreviewsDeps;
  readonly #encoder = new JpegEncoder();
  readonly #latest = new Map<string, PreviewJpeg>();
  readonly #failing = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #busy = false;

  constructor(deps: PreviewsDeps) {
    this.#deps = deps;
  }

  start(): void {
    if (this.#deps.intervalMs <= 0) return;
    this.#timer = setInterval(() => void this.takeAll(), this.#deps.intervalMs);
    this.#timer.unref();
  }

  latest(output: string): PreviewJpeg | undefined {
    return this.#latest.get(output);
  }

  /** One preview of each output now. A slow encode skips the next tick rather than queueing. */
  async takeAll(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      for (const output of this.#deps.screens.outputs()) {
        const frame = this.#deps.screens.snapshot(output.name);
        if (!frame) continue;
        try {
          const preview = await this.#encoder.encode(frame, this.#deps.width);
          this.#latest.set(output.name, preview);
          this.#failing.delete(output.name);
          this.#deps.onPreview(output.name, preview);
        } catch (error) {
          // Once per output until it works again, not every interval.
          if (!this.#failing.has(output.name)) {
            this.#failing.add(output.name);
            this.#deps.logger.warn(
              { output: output.name, err: error },
              `output ${output.name}: preview failed: ${(error as Error).message}`,
            );
          }
        }
      }
    } finally {
      this.#busy = false;
    }
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#encoder.close();
  }
}
