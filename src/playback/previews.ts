import type { Scaler } from 'node-av/api';
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
 * node-av (FFmpeg with its own libraries) takes most of a second to load on a small box, and far
 * longer on an emulated one: loaded on the first encode, so the supervisor's start and the first
 * frame never wait for it.
 */
let nodeAv: Promise<[typeof import('node-av'), typeof import('node-av/api')]> | undefined;
const nodeAvLoad = () => {
  nodeAv ??= Promise.all([import('node-av'), import('node-av/api')]);
  return nodeAv;
};

/**
 * Encodes what an output shows as a JPEG with FFmpeg (through node-av), optionally scaled to
 * `width` (height follows). Returns undefined when the frame cannot be encoded, with the reason
 * logged by the caller.
 */
export class JpegEncoder {
  /**
   * One node-av Scaler per input size and format: a Scaler's cached filter graph breaks when
   * the frame size changes under it ("Invalid too big or non positive size" from its crop).
   */
  readonly #scalers = new Map<string, Scaler>();

  #scalerFor(frame: ScreenFrame, api: typeof import('node-av/api')): Scaler {
    const key = `${frame.width}x${frame.height}/${frame.format}`;
    let scaler = this.#scalers.get(key);
    if (!scaler) {
      // A handful of sizes at most (outputs, sources); forget the oldest beyond that.
      if (this.#scalers.size >= 8) {
        const [oldest, old] = this.#scalers.entries().next().value as [string, Scaler];
        old.close();
        this.#scalers.delete(oldest);
      }
      scaler = new api.Scaler();
      this.#scalers.set(key, scaler);
    }
    return scaler;
  }

  async encode(frame: ScreenFrame, width?: number, quality = 80): Promise<PreviewJpeg> {
    const [{ AV_PIX_FMT_BGR0, AV_PIX_FMT_NV12, Frame }, api] = await nodeAvLoad();
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
      const jpeg = await this.#scalerFor(frame, api).toJpeg(source, { resize: { width: w, height: h }, quality });
      return { jpeg, width: w, height: h, at: Date.now() };
    } finally {
      source.free();
    }
  }

  close(): void {
    for (const scaler of this.#scalers.values()) scaler.close();
    this.#scalers.clear();
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
