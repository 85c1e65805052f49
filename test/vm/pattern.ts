// Test images the guest scans out and the host expects back. Both sides compute the same
// pixels from a small description, so only the description crosses the serial line, and a
// mismatch can be reported at a position ("head 2 at (512, 300): got ..., want ...").
import { stampRgb } from './clips.ts';

export type Rgb = readonly [number, number, number];

export type Pattern =
  /** One colour. */
  | { kind: 'solid'; rgb: Rgb }
  /** Every pixel differs from its neighbours and from far-away pixels: shows crops and offsets. */
  | { kind: 'gradient'; seed: number }
  /** Flat 64x64 blocks from a palette: survives chroma subsampling (NV12) exactly. */
  | { kind: 'blocks'; seed: number }
  /** Frame number `number` in binary plus a chroma pattern, as test/vm/clips.ts reads it back. */
  | { kind: 'stamp'; number: number; width: number; height: number };

const PALETTE: readonly Rgb[] = [
  [235, 40, 40],
  [40, 200, 60],
  [50, 80, 230],
  [240, 220, 50],
  [30, 210, 220],
  [220, 60, 210],
  [250, 250, 250],
  [20, 20, 20],
];

export function patternRgb(p: Pattern, x: number, y: number): Rgb {
  switch (p.kind) {
    case 'solid':
      return p.rgb;
    case 'gradient':
      return [x & 255, y & 255, ((x >> 8) * 40 + (y >> 8) * 8 + p.seed * 16) & 255];
    case 'blocks': {
      const i = ((x >> 6) + (y >> 6) * 3 + p.seed) % PALETTE.length;
      return PALETTE[i] as Rgb;
    }
    case 'stamp':
      return stampRgb(p.number, x, y, p.width, p.height);
  }
}

/** XR24 (DRM_FORMAT_XRGB8888): little-endian B, G, R, X bytes per pixel, rows packed. */
export function patternXR24(p: Pattern, width: number, height: number): Uint8Array {
  const out = new Uint8Array(width * height * 4);
  let i = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const [r, g, b] = patternRgb(p, x, y);
      out[i++] = b;
      out[i++] = g;
      out[i++] = r;
      out[i++] = 255;
    }
  }
  return out;
}

// BT.601 limited range: what KMS planes assume for YUV when COLOR_ENCODING/RANGE are left alone.
function yuv(rgb: Rgb): [number, number, number] {
  const [r, g, b] = rgb;
  const y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255;
  const u = 128 + (-37.797 * r - 74.203 * g + 112 * b) / 255;
  const v = 128 + (112 * r - 93.786 * g - 18.214 * b) / 255;
  const clamp = (n: number): number => Math.max(0, Math.min(255, Math.round(n)));
  return [clamp(y), clamp(u), clamp(v)];
}

/** NV12: a full-size Y plane, then a half-size interleaved UV plane; both with `pitch` bytes a row. */
export function patternNV12(
  p: Pattern,
  width: number,
  height: number,
  pitch = width,
): { data: Uint8Array; uvOffset: number; pitch: number } {
  const rows = height + Math.ceil(height / 2);
  const data = new Uint8Array(pitch * rows);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      data[y * pitch + x] = yuv(patternRgb(p, x, y))[0];
    }
  }
  const uvOffset = pitch * height;
  for (let y = 0; y < height; y += 2) {
    for (let x = 0; x < width; x += 2) {
      const [, u, v] = yuv(patternRgb(p, x, y));
      const at = uvOffset + (y / 2) * pitch + x;
      data[at] = u;
      data[at + 1] = v;
    }
  }
  return { data, uvOffset, pitch };
}

export interface Image {
  width: number;
  height: number;
  /** Packed RGB, 3 bytes a pixel. */
  rgb: Uint8Array;
}

export interface Region {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface Comparison {
  checked: number;
  mismatched: number;
  worst: number;
  /** The first pixel out of tolerance, for the failure message. */
  first?: { x: number; y: number; got: Rgb; want: Rgb };
}

/**
 * Compares `image` inside `region` (default: all of it) with `want(x, y)`, where x and y
 * are image coordinates. A pixel matches when every channel is within `tolerance`.
 */
export function imageCompare(
  image: Image,
  want: (x: number, y: number) => Rgb,
  options: { region?: Region; tolerance?: number } = {},
): Comparison {
  const region = options.region ?? { x: 0, y: 0, width: image.width, height: image.height };
  const tolerance = options.tolerance ?? 0;
  const result: Comparison = { checked: 0, mismatched: 0, worst: 0 };
  for (let y = region.y; y < region.y + region.height; y++) {
    for (let x = region.x; x < region.x + region.width; x++) {
      const at = (y * image.width + x) * 3;
      const got: Rgb = [image.rgb[at] ?? -1, image.rgb[at + 1] ?? -1, image.rgb[at + 2] ?? -1];
      const expected = want(x, y);
      const diff = Math.max(
        Math.abs(got[0] - expected[0]),
        Math.abs(got[1] - expected[1]),
        Math.abs(got[2] - expected[2]),
      );
      result.checked++;
      result.worst = Math.max(result.worst, diff);
      if (diff > tolerance) {
        result.mismatched++;
        result.first ??= { x, y, got, want: expected };
      }
    }
  }
  return result;
}

export function comparisonText(c: Comparison): string {
  if (c.mismatched === 0) return `${c.checked} pixels match (worst difference ${c.worst})`;
  const f = c.first;
  const where = f ? ` first at (${f.x}, ${f.y}): got ${f.got.join(',')} want ${f.want.join(',')}` : '';
  return `${c.mismatched} of ${c.checked} pixels differ;${where}`;
}

/** Turns XR24 bytes (as a writeback connector or a dumb buffer holds them) into packed RGB. */
export function xr24ToImage(data: Uint8Array, width: number, height: number, pitch = width * 4): Image {
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const s = y * pitch + x * 4;
      const d = (y * width + x) * 3;
      rgb[d] = data[s + 2] ?? 0;
      rgb[d + 1] = data[s + 1] ?? 0;
      rgb[d + 2] = data[s] ?? 0;
    }
  }
  return { width, height, rgb };
}
