/**
 * Where a picture lands on an output: the aspect-correct geometry of `fit`, `fill`, `stretch`
 * and `none`, with the output's rotation and the stream's non-square pixels. Pure: the same
 * rectangles go to a KMS plane (source crop, destination, rotation) and to the virtual
 * outputs' previews, so a screenshot shows what a viewer sees.
 */

/** How a picture is sized to its output. */
export type LayoutFit = 'fit' | 'fill' | 'stretch' | 'none';

/** Which part stays in view when a picture is cropped (`fill`, `none`) or where it sits between bars (`fit`). */
export type LayoutAnchor =
  | 'centre'
  | 'top'
  | 'bottom'
  | 'left'
  | 'right'
  | 'top-left'
  | 'top-right'
  | 'bottom-left'
  | 'bottom-right';

/** Degrees the picture is turned clockwise on the panel (a screen mounted with its top edge on the left needs 90). */
export type Rotation = 0 | 90 | 180 | 270;

export interface Layout {
  readonly fit: LayoutFit;
  /** Default centre. */
  readonly anchor?: LayoutAnchor;
  /** The bars' colour, `RRGGBB`; default black. */
  readonly background?: string;
}

export const LAYOUT_FITS: readonly LayoutFit[] = ['fit', 'fill', 'stretch', 'none'];
export const LAYOUT_ANCHORS: readonly LayoutAnchor[] = [
  'centre',
  'top',
  'bottom',
  'left',
  'right',
  'top-left',
  'top-right',
  'bottom-left',
  'bottom-right',
];
export const ROTATIONS: readonly Rotation[] = [0, 90, 180, 270];

/** What every placement gets unless told otherwise: the whole picture, undistorted, centred, black bars. */
export const LAYOUT_DEFAULT: Layout = { fit: 'fit', anchor: 'centre', background: '000000' };

export interface PixelRect {
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
}

/** The decoded picture as the decoder reports it. */
export interface LayoutSource {
  readonly width: number;
  readonly height: number;
  /** Sample (pixel) aspect ratio; 0 or absent: square pixels. */
  readonly sarNum?: number;
  readonly sarDen?: number;
  /** Degrees the decoded picture is turned clockwise to stand upright (a phone's portrait video). */
  readonly rotation?: number;
}

/** A normalised part of the picture (a video-wall tile), in 0..1. */
export interface LayoutCrop {
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
}

/** The result: what a plane is given. */
export interface Placed {
  /** Source pixels shown. */
  readonly src: PixelRect;
  /** Where they land, in the output's own (unrotated, CRTC) pixels. */
  readonly dst: PixelRect;
  readonly rotation: Rotation;
  /** Colour of the output outside `dst`, `RRGGBB`. */
  readonly background: string;
  /** The output's size, for previews composed off the frame path. */
  readonly output: { readonly width: number; readonly height: number };
  /** The layout in force, defaults filled in (status shows it). */
  readonly layout: Required<Layout>;
}

/** Horizontal and vertical share of the spare room put before the picture. */
function anchorShares(anchor: LayoutAnchor): [number, number] {
  const ax = anchor.includes('left') ? 0 : anchor.includes('right') ? 1 : 0.5;
  const ay = anchor.startsWith('top') ? 0 : anchor.startsWith('bottom') ? 1 : 0.5;
  return [ax, ay];
}

/** The crop in source pixels, at least one pixel, inside the picture. */
function cropPixels(source: LayoutSource, crop: LayoutCrop | undefined): PixelRect {
  if (!crop) return { x: 0, y: 0, width: source.width, height: source.height };
  const x = Math.min(source.width - 1, Math.max(0, Math.round(crop.x * source.width)));
  const y = Math.min(source.height - 1, Math.max(0, Math.round(crop.y * source.height)));
  return {
    x,
    y,
    width: Math.max(1, Math.min(source.width - x, Math.round(crop.width * source.width))),
    height: Math.max(1, Math.min(source.height - y, Math.round(crop.height * source.height))),
  };
}

/** A rectangle of the upright picture as the viewer sees it, moved onto the panel turned by `rotation`. */
function viewToPanel(r: PixelRect, panel: { width: number; height: number }, rotation: Rotation): PixelRect {
  const { width: W, height: H } = panel;
  switch (rotation) {
    case 0:
      return r;
    case 180:
      return { x: W - r.x - r.width, y: H - r.y - r.height, width: r.width, height: r.height };
    case 90:
      // Clockwise: the picture's top edge runs down the panel's right edge.
      return { x: W - r.y - r.height, y: r.x, width: r.height, height: r.width };
    case 270:
      return { x: r.y, y: H - r.x - r.width, width: r.height, height: r.width };
  }
}

/**
 * The source crop, destination and rotation that show `source` (its `crop` part) on an output
 * of `output` pixels turned by `rotation`, sized by `layout`. `fit` and `fill` are computed on
 * the size the viewer sees (a portrait screen is taller than wide) and on the picture's
 * display aspect (sample aspect ratio applied).
 */
export function layoutPlace(
  source: LayoutSource,
  output: { width: number; height: number },
  options: { crop?: LayoutCrop; rotation?: Rotation; layout?: Layout } = {},
): Placed {
  const screenTurn = options.rotation ?? 0;
  // The stream's own turn (display matrix) and the screen's add up on the plane.
  const streamTurn = ROTATIONS.includes(source.rotation as Rotation) ? (source.rotation as Rotation) : 0;
  const rotation = ((screenTurn + streamTurn) % 360) as Rotation;
  const layout = { ...LAYOUT_DEFAULT, ...options.layout };
  const sideways = screenTurn === 90 || screenTurn === 270;
  const view = sideways ? { width: output.height, height: output.width } : output;
  const crop = cropPixels(source, options.crop);
  const uprightSideways = streamTurn === 90 || streamTurn === 270;
  const sarRaw = source.sarNum && source.sarDen ? source.sarNum / source.sarDen : 1;
  // The crop as it stands upright: its size and pixel aspect (turned with it).
  const cw = uprightSideways ? crop.height : crop.width;
  const ch = uprightSideways ? crop.width : crop.height;
  const sar = uprightSideways ? 1 / sarRaw : sarRaw;
  // The crop's size in square display pixels.
  const aw = cw * sar;
  const ah = ch;
  const inForce: Required<Layout> = {
    fit: layout.fit,
    anchor: layout.anchor ?? 'centre',
    background: (layout.background ?? '000000').toLowerCase(),
  };
  const base = { rotation, background: inForce.background, output: { ...output }, layout: inForce };
  if (layout.fit === 'stretch') {
    return { ...base, src: crop, dst: viewToPanel({ x: 0, y: 0, ...view }, output, screenTurn) };
  }
  const scale =
    layout.fit === 'fit'
      ? Math.min(view.width / aw, view.height / ah)
      : layout.fit === 'fill'
        ? Math.max(view.width / aw, view.height / ah)
        : 1;
  // Shown size on the view; what does not fit is cropped from the source, not squeezed.
  const shownW = aw * scale;
  const shownH = ah * scale;
  const dw = Math.max(1, Math.min(view.width, Math.round(shownW)));
  const dh = Math.max(1, Math.min(view.height, Math.round(shownH)));
  const sw = Math.max(1, Math.min(cw, Math.round((cw * dw) / shownW)));
  const sh = Math.max(1, Math.min(ch, Math.round((ch * dh) / shownH)));
  const [ax, ay] = anchorShares(layout.anchor ?? 'centre');
  // The part kept, in the upright crop, then back in the decoded picture's own axes.
  const kept = viewToPanel(
    { x: Math.round((cw - sw) * ax), y: Math.round((ch - sh) * ay), width: sw, height: sh },
    { width: crop.width, height: crop.height },
    ((360 - streamTurn) % 360) as Rotation,
  );
  const src = { ...kept, x: crop.x + kept.x, y: crop.y + kept.y };
  const dstView = {
    x: Math.round((view.width - dw) * ax),
    y: Math.round((view.height - dh) * ay),
    width: dw,
    height: dh,
  };
  return { ...base, src, dst: viewToPanel(dstView, output, screenTurn) };
}

/** Why a layout given by a user is refused, or undefined when it is fine. */
export function layoutProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'is not an object';
  const v = value as Record<string, unknown>;
  for (const key of Object.keys(v)) {
    if (!['fit', 'anchor', 'background'].includes(key)) return `has an unknown field "${key}"`;
  }
  if (!LAYOUT_FITS.includes(v.fit as LayoutFit)) return `fit must be one of ${LAYOUT_FITS.join(', ')}`;
  if (v.anchor !== undefined && !LAYOUT_ANCHORS.includes(v.anchor as LayoutAnchor)) {
    return `anchor must be one of ${LAYOUT_ANCHORS.join(', ')}`;
  }
  if (v.background !== undefined && !(typeof v.background === 'string' && /^[0-9a-fA-F]{6}$/.test(v.background))) {
    return 'background must be a colour as RRGGBB';
  }
  return undefined;
}
