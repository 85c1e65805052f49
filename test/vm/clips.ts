// Test content that says in its own pixels which frame it is, so a capture taken from the
// kernel's side (a writeback frame, a QMP screendump) proves order, plane layout and tearing
// without trusting a counter the engine keeps about itself.
//
// The picture is a 16x12 grid of cells scaled to the frame (64x64 pixels at 1024x768):
//
//   rows 0-1    the frame number N, 8 bits MSB first, each bit two cells wide: white 1, black 0
//   rows 2-9    a chroma pattern: 8x4 blocks of 2x2 cells, neutral luma, each block's (U, V)
//               from a ring of 8 hues, shifted by the block's position AND by N
//   rows 10-11  the complement of N, so a torn frame (top of one frame, bottom of another), a
//               flat frame or garbage cannot read as a valid stamp
//
// Cells are whole chroma samples (2x2 luma) and flat, so 4:2:0 subsampling, H.264 at a low
// quantiser and nearest-neighbour scaling keep them intact. What a broken path shows:
//   wrong luma or chroma pitch     rows shear: stamps unreadable, blocks in the wrong places
//   wrong UV-plane offset          chroma blocks shifted or taken from luma: wrong hues
//   U and V swapped                every hue mirrored across the U=V diagonal: wrong hues
//   chroma of another frame        hues shifted by the wrong N against the luma stamp
//   frame order, reused surfaces   stamps going backward, or changing on a still screen
import { execFileSync } from 'node:child_process';
import type { Image, Region, Rgb } from './pattern.ts';

export const GRID_W = 16;
export const GRID_H = 12;
export const STAMP_BITS = 8;
/** Stamps count modulo this: a clip longer than this many frames repeats its numbers. */
export const STAMP_PERIOD = 1 << STAMP_BITS;
const RING = 8;
const HUE_RADIUS = 40;
/** Luma of the chroma pattern: mid-grey, so no hue clips in either matrix. */
const PATTERN_Y = 128;

/**
 * The (U, V) of ring entry k: 8 points on a circle round neutral. Swapping U and V mirrors a
 * point across the U=V diagonal, onto another entry's hue for 6 of the 8.
 */
export function hueUv(k: number): [number, number] {
  const a = (Math.PI / 4) * (((k % RING) + RING) % RING);
  return [128 + Math.round(HUE_RADIUS * Math.cos(a)), 128 + Math.round(HUE_RADIUS * Math.sin(a))];
}

/** Ring entry of the chroma block at (bx 0-7, by 0-3) in frame n. */
export const hueIndex = (bx: number, by: number, n: number): number => (bx + 3 * by + n) % RING;

// ------------------------------------------------------------------ generating

export interface ClipSpec {
  width: number;
  height: number;
  fps: number;
  seconds: number;
  /** Default: clipMatrix(height). */
  matrix?: Matrix;
}

/**
 * The matrix a clip of this height is tagged with: what the engine assumes for untagged video
 * (SD BT.601, HD BT.709, native/src/kms/formats.rs), so the tag and the guess agree and the
 * reader knows the colours to expect either way.
 */
export const clipMatrix = (height: number): Matrix => (height > 576 ? 'bt709' : 'bt601');

/**
 * The ffmpeg filter graph of a stamped clip. `geq` draws the grid at 16x12 and `scale` with
 * nearest-neighbour makes cells of it; `geq` is not among the filters a `lavfi:` source may use
 * (native/src/decode/policy.rs), so the decoder gets a file made from this (clipMake).
 */
export function clipGraph(spec: ClipSpec): string {
  const bit = 'mod(floor(N/pow(2,7-floor(X/2))),2)';
  const lum = `if(lt(Y,2),16+219*${bit},if(gte(Y,10),235-219*${bit},${PATTERN_Y}))`;
  // Chroma planes are 8x6: row 0 and row 5 lie under the stamps.
  const ring = `PI/4*mod(X+3*(Y-1)+N,${RING})`;
  const cb = `if(between(Y,1,4),128+round(${HUE_RADIUS}*cos(${ring})),128)`;
  const cr = `if(between(Y,1,4),128+round(${HUE_RADIUS}*sin(${ring})),128)`;
  return [
    `color=c=black:size=${GRID_W}x${GRID_H}:rate=${spec.fps}:duration=${spec.seconds}`,
    'format=yuv420p',
    `geq=lum='${lum}':cb='${cb}':cr='${cr}'`,
    `scale=${spec.width}:${spec.height}:flags=neighbor`,
  ].join(',');
}

/**
 * Writes a stamped H.264 clip to `file` (on the host; the guest sees it through the scratch
 * share), tagged with its matrix (clipMatrix) and limited range. At most STAMP_PERIOD frames,
 * so numbers do not repeat inside one pass.
 */
export function clipMake(file: string, spec: ClipSpec): void {
  if (spec.fps * spec.seconds > STAMP_PERIOD) {
    throw new Error(`a stamped clip holds at most ${STAMP_PERIOD} frames (asked ${spec.fps * spec.seconds})`);
  }
  if (spec.width % (GRID_W * 2) !== 0 || spec.height % (GRID_H * 2) !== 0) {
    throw new Error(
      `a stamped clip needs a size divisible by ${GRID_W * 2}x${GRID_H * 2}, not ${spec.width}x${spec.height}`,
    );
  }
  execFileSync('ffmpeg', [
    '-v',
    'error',
    '-y',
    '-f',
    'lavfi',
    '-i',
    clipGraph(spec),
    '-c:v',
    'libx264',
    '-preset',
    'ultrafast',
    // Near-lossless: flat cells stay within a level or two of what geq drew.
    '-qp',
    '4',
    '-pix_fmt',
    'yuv420p',
    ...colourTags(spec.matrix ?? clipMatrix(spec.height)),
    '-color_range',
    'tv',
    file,
  ]);
}

function colourTags(matrix: Matrix): string[] {
  const name = matrix === 'bt709' ? 'bt709' : 'smpte170m';
  return ['-colorspace', name, '-color_primaries', name, '-color_trc', name];
}

/** The RGB of a stamped picture for XR24 test buffers (pattern.ts 'stamp'): same layout, RGB hues. */
export function stampRgb(n: number, x: number, y: number, width: number, height: number): Rgb {
  const gx = Math.floor((x * GRID_W) / width);
  const gy = Math.floor((y * GRID_H) / height);
  const bit = (n >> (STAMP_BITS - 1 - (gx >> 1))) & 1;
  if (gy < 2) return bit ? [255, 255, 255] : [0, 0, 0];
  if (gy >= GRID_H - 2) return bit ? [0, 0, 0] : [255, 255, 255];
  return yuvToRgb(PATTERN_Y, ...hueUv(hueIndex(gx >> 1, (gy - 2) >> 1, n)), 'bt709');
}

// ------------------------------------------------------------------ reading

export type Matrix = 'bt601' | 'bt709';

/** Limited-range YCbCr to RGB, as a plane with COLOR_RANGE limited converts it. */
export function yuvToRgb(y: number, u: number, v: number, matrix: Matrix): Rgb {
  const [kr, kb] = matrix === 'bt709' ? [0.2126, 0.0722] : [0.299, 0.114];
  const kg = 1 - kr - kb;
  const yy = ((y - 16) * 255) / 219;
  const pb = ((u - 128) * 255) / 224;
  const pr = ((v - 128) * 255) / 224;
  const r = yy + 2 * (1 - kr) * pr;
  const b = yy + 2 * (1 - kb) * pb;
  const g = (yy - kr * r - kb * b) / kg;
  const c = (n: number): number => Math.max(0, Math.min(255, Math.round(n)));
  return [c(r), c(g), c(b)];
}

export interface StampReading {
  /** The frame number when both stamps read cleanly and agree, else undefined. */
  number?: number;
  top?: number;
  bottom?: number;
  /** Why the stamp is not a number: an unreadable bit, or top and bottom from different frames. */
  problem?: string;
}

export interface ChromaReading {
  /** Blocks whose pixels are not the hue the frame number says. */
  wrong: number;
  blocks: number;
  /** The first wrong block, for the failure message. */
  first?: string;
}

const cellRect = (region: Region, gx: number, gy: number, w: number, h: number, margin: number): Region => {
  const x0 = region.x + Math.round((gx * region.width) / GRID_W);
  const y0 = region.y + Math.round((gy * region.height) / GRID_H);
  const x1 = region.x + Math.round(((gx + w) * region.width) / GRID_W);
  const y1 = region.y + Math.round(((gy + h) * region.height) / GRID_H);
  return { x: x0 + margin, y: y0 + margin, width: x1 - x0 - 2 * margin, height: y1 - y0 - 2 * margin };
};

function meanRgb(image: Image, r: Region): Rgb {
  let sr = 0;
  let sg = 0;
  let sb = 0;
  for (let y = r.y; y < r.y + r.height; y++) {
    for (let x = r.x; x < r.x + r.width; x++) {
      const at = (y * image.width + x) * 3;
      sr += image.rgb[at] ?? 0;
      sg += image.rgb[at + 1] ?? 0;
      sb += image.rgb[at + 2] ?? 0;
    }
  }
  const n = Math.max(1, r.width * r.height);
  return [sr / n, sg / n, sb / n];
}

function bitsRead(image: Image, region: Region, gy: number, invert: boolean): { value?: number; problem?: string } {
  let value = 0;
  for (let b = 0; b < STAMP_BITS; b++) {
    const cell = cellRect(region, 2 * b, gy, 2, 2, Math.round(region.height / GRID_H / 4));
    const [r, g, bl] = meanRgb(image, cell);
    const level = (r + g + bl) / 3;
    // Clean cells are ~0 or ~255; anything in between is a mix of frames or a sheared picture.
    if (level > 40 && level < 215)
      return { problem: `bit ${b} of the stamp at grid row ${gy} reads ${level.toFixed(0)}` };
    value = (value << 1) | (level >= 128 !== invert ? 1 : 0);
  }
  return { value };
}

/** Reads the frame number of a stamped picture shown in `region` of `image` (default: all of it). */
export function stampRead(
  image: Image,
  region: Region = { x: 0, y: 0, width: image.width, height: image.height },
): StampReading {
  const top = bitsRead(image, region, 0, false);
  const bottom = bitsRead(image, region, GRID_H - 2, true);
  const reading: StampReading = {};
  if (top.value !== undefined) reading.top = top.value;
  if (bottom.value !== undefined) reading.bottom = bottom.value;
  const problem = top.problem ?? bottom.problem;
  if (problem !== undefined) reading.problem = problem;
  else if (top.value !== bottom.value)
    reading.problem = `top stamp ${top.value}, bottom stamp ${bottom.value}: a torn frame`;
  else if (top.value !== undefined) reading.number = top.value;
  return reading;
}

/**
 * Checks the chroma blocks of frame `n`: every pixel of a block's interior (one pixel off its
 * edges, where the kernel's and the encoder's rounding meet) within `tolerance` of the hue the
 * block must have. More than 1 % of a block off counts the block wrong: a UV plane offset by a
 * few rows moves that much of each block's edge into its neighbour's hue.
 */
export function chromaCheck(
  image: Image,
  n: number,
  options: { region?: Region; matrix?: Matrix; tolerance?: number } = {},
): ChromaReading {
  const region = options.region ?? { x: 0, y: 0, width: image.width, height: image.height };
  const matrix = options.matrix ?? 'bt709';
  const tolerance = options.tolerance ?? 12;
  const margin = 1;
  const result: ChromaReading = { wrong: 0, blocks: 0 };
  for (let by = 0; by < 4; by++) {
    for (let bx = 0; bx < GRID_W / 2; bx++) {
      const want = yuvToRgb(PATTERN_Y, ...hueUv(hueIndex(bx, by, n)), matrix);
      const r = cellRect(region, 2 * bx, 2 + 2 * by, 2, 2, margin);
      let off = 0;
      let firstOff: string | undefined;
      for (let y = r.y; y < r.y + r.height; y++) {
        for (let x = r.x; x < r.x + r.width; x++) {
          const at = (y * image.width + x) * 3;
          const got = [image.rgb[at] ?? -1, image.rgb[at + 1] ?? -1, image.rgb[at + 2] ?? -1];
          if (got.some((c, i) => Math.abs(c - (want[i] as number)) > tolerance)) {
            off++;
            firstOff ??= `(${x}, ${y}) ${got.join(',')}`;
          }
        }
      }
      result.blocks++;
      if (off > (r.width * r.height) / 100) {
        result.wrong++;
        result.first ??= `block (${bx}, ${by}) of frame ${n}: ${off} of ${r.width * r.height} px off, first ${firstOff}, want ${want.join(',')}`;
      }
    }
  }
  return result;
}

/** A stamp and its chroma, read together: `number` set only when both are right. */
export interface FrameReading extends StampReading {
  chroma?: ChromaReading;
}

export function frameRead(
  image: Image,
  options: { region?: Region; matrix?: Matrix; tolerance?: number } = {},
): FrameReading {
  const stamp = stampRead(image, options.region);
  if (stamp.number === undefined) return stamp;
  const chroma = chromaCheck(image, stamp.number, options);
  if (chroma.wrong > 0) {
    const { number: _, ...rest } = stamp;
    return { ...rest, chroma, problem: `${chroma.wrong} of ${chroma.blocks} chroma blocks wrong: ${chroma.first}` };
  }
  return { ...stamp, chroma };
}

/**
 * How far `next` is ahead of `previous` in a sequence that counts modulo `period` (a looping
 * clip, a ring of loop buffers): 0 is the same frame. A step of more than half the period is
 * taken as going backward, which is what it is for any sampling faster than half a loop.
 */
export function stepForward(previous: number, next: number, period: number): number {
  return (((next - previous) % period) + period) % period;
}

export function isForward(previous: number, next: number, period: number): boolean {
  return stepForward(previous, next, period) < period / 2;
}
