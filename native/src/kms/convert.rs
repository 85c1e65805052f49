//! The fallback when no plane can scan a buffer out as it is (NV12 on a card whose planes
//! take only RGB, or a layout TEST_ONLY refuses): one CPU conversion to XR24 per frame,
//! shared by every output that needs it, with the same matrix and range a plane would use.

use super::formats::{YuvColor, YuvMatrix};

/// Fixed-point (x256) coefficients: Y scale, then V->R, U->G, V->G, U->B.
fn coefficients(color: YuvColor) -> (i32, i32, i32, i32, i32, i32) {
    // (Kr, Kb) per matrix give the rest; computed once per frame, not per pixel.
    let (kr, kb) = match color.matrix {
        YuvMatrix::Bt601 => (0.299, 0.114),
        YuvMatrix::Bt709 => (0.2126, 0.0722),
        YuvMatrix::Bt2020 => (0.2627, 0.0593),
    };
    let kg = 1.0 - kr - kb;
    let (y_scale, c_scale, y_offset) = if color.full_range {
        (1.0, 1.0, 0)
    } else {
        (255.0 / 219.0, 255.0 / 224.0, 16)
    };
    let fixed = |v: f64| (v * 256.0).round() as i32;
    (
        fixed(y_scale),
        fixed(2.0 * (1.0 - kr) * c_scale),
        fixed(2.0 * (1.0 - kb) * kb / kg * c_scale),
        fixed(2.0 * (1.0 - kr) * kr / kg * c_scale),
        fixed(2.0 * (1.0 - kb) * c_scale),
        y_offset,
    )
}

/// The fixed-point matrix of one colour encoding, applied per pixel.
#[derive(Clone, Copy)]
struct Matrix {
    ky: i32,
    vr: i32,
    ug: i32,
    vg: i32,
    ub: i32,
    y_offset: i32,
}

impl Matrix {
    fn of(color: YuvColor) -> Matrix {
        let (ky, vr, ug, vg, ub, y_offset) = coefficients(color);
        Matrix {
            ky,
            vr,
            ug,
            vg,
            ub,
            y_offset,
        }
    }

    /// One pixel: luma `y`, chroma `u`, `v`, written as B, G, R, X into `out`.
    #[inline(always)]
    fn pixel(self, y: u8, u: u8, v: u8, out: &mut [u8]) {
        let c = self.ky * (i32::from(y) - self.y_offset);
        let d = i32::from(u) - 128;
        let e = i32::from(v) - 128;
        let clamp = |v: i32| ((v + 128) >> 8).clamp(0, 255) as u8;
        out[0] = clamp(c + self.ub * d);
        out[1] = clamp(c - self.ug * d - self.vg * e);
        out[2] = clamp(c + self.vr * e);
        out[3] = 0xff;
    }
}

/// Where one frame's planes are in memory.
pub struct Nv12Src<'a> {
    pub y: &'a [u8],
    pub y_pitch: usize,
    pub uv: &'a [u8],
    pub uv_pitch: usize,
}

/// Converts `width` x `height` pixels into `dst` (XR24, `dst_pitch` bytes a row). Returns
/// the bytes written, for the copy counter. No allocation: this runs once per frame.
pub fn nv12_to_xr24(
    src: &Nv12Src<'_>,
    color: YuvColor,
    width: usize,
    height: usize,
    dst: &mut [u8],
    dst_pitch: usize,
) -> usize {
    let m = Matrix::of(color);
    for row in 0..height {
        let y_row = &src.y[row * src.y_pitch..row * src.y_pitch + width];
        let uv_at = (row / 2) * src.uv_pitch;
        let uv_row = &src.uv[uv_at..uv_at + width.div_ceil(2) * 2];
        let out = &mut dst[row * dst_pitch..row * dst_pitch + width * 4];
        for x in 0..width {
            m.pixel(
                y_row[x],
                uv_row[x & !1],
                uv_row[(x & !1) + 1],
                &mut out[x * 4..x * 4 + 4],
            );
        }
    }
    width * height * 4
}

/// Draws the `src_rect` part of a frame (x, y, width, height) scaled into `place` (x, y,
/// width, height) of an `out_w` x `out_h` XR24 buffer, nearest neighbour, turned `rotation`
/// degrees clockwise (as the layouts and vkms's planes turn), with black around it: the whole
/// scanout for a plane that can neither scale, be positioned nor turn (virtio-gpu's
/// primaries). Returns the bytes written. No allocation: source columns are recomputed.
#[allow(clippy::too_many_arguments)]
pub fn nv12_to_xr24_scaled(
    src: &Nv12Src<'_>,
    color: YuvColor,
    src_rect: (usize, usize, usize, usize),
    (place, rotation): ((usize, usize, usize, usize), u32),
    out_w: usize,
    out_h: usize,
    dst: &mut [u8],
    dst_pitch: usize,
) -> usize {
    let m = Matrix::of(color);
    let (x0, y0, w, h) = src_rect;
    let (px, py, pw, ph) = place;
    if rotation != 0 {
        return nv12_to_xr24_turned(
            src,
            &m,
            src_rect,
            (place, rotation),
            (out_w, out_h),
            dst,
            dst_pitch,
        );
    }
    for row in 0..out_h {
        let Some(out) = placed_row(dst, dst_pitch, out_w, row, (px, py, pw, ph)) else {
            continue;
        };
        let sy = y0 + (row - py) * h / ph;
        let y_row = &src.y[sy * src.y_pitch..];
        let uv_row = &src.uv[(sy / 2) * src.uv_pitch..];
        for x in 0..pw {
            let sx = x0 + x * w / pw;
            let at = x * 4;
            m.pixel(
                y_row[sx],
                uv_row[sx & !1],
                uv_row[(sx & !1) + 1],
                &mut out[at..at + 4],
            );
        }
    }
    out_w * out_h * 4
}

/// Row `row` of an `out_w`-wide XR24 scanout with black outside `place` (x, y, width,
/// height): the part inside the place, to be drawn; None when the whole row is a bar.
fn placed_row(
    dst: &mut [u8],
    dst_pitch: usize,
    out_w: usize,
    row: usize,
    (px, py, pw, ph): (usize, usize, usize, usize),
) -> Option<&mut [u8]> {
    let out = &mut dst[row * dst_pitch..row * dst_pitch + out_w * 4];
    if row < py || row >= py + ph {
        out.fill(0);
        return None;
    }
    out[..px * 4].fill(0);
    out[(px + pw) * 4..].fill(0);
    Some(&mut out[px * 4..(px + pw) * 4])
}

/// `nv12_to_xr24_scaled` for a turned picture: output pixel (u, v) of `place` shows the
/// source pixel that turning the source clockwise puts there, so rows of the output walk
/// columns of the source (slower than the straight case; only planes that cannot turn need it).
fn nv12_to_xr24_turned(
    src: &Nv12Src<'_>,
    m: &Matrix,
    (x0, y0, w, h): (usize, usize, usize, usize),
    ((px, py, pw, ph), rotation): ((usize, usize, usize, usize), u32),
    (out_w, out_h): (usize, usize),
    dst: &mut [u8],
    dst_pitch: usize,
) -> usize {
    for row in 0..out_h {
        let Some(out) = placed_row(dst, dst_pitch, out_w, row, (px, py, pw, ph)) else {
            continue;
        };
        let v = row - py;
        for u in 0..pw {
            let (sx, sy) = match rotation {
                90 => (v * w / ph, (pw - 1 - u) * h / pw),
                180 => ((pw - 1 - u) * w / pw, (ph - 1 - v) * h / ph),
                _ => ((ph - 1 - v) * w / ph, u * h / pw),
            };
            let (sx, sy) = (x0 + sx, y0 + sy);
            let uv = (sy / 2) * src.uv_pitch + (sx & !1);
            let at = u * 4;
            m.pixel(
                src.y[sy * src.y_pitch + sx],
                src.uv[uv],
                src.uv[uv + 1],
                &mut out[at..at + 4],
            );
        }
    }
    out_w * out_h * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    const BT601: YuvColor = YuvColor {
        matrix: YuvMatrix::Bt601,
        full_range: false,
    };

    fn convert_one(y: u8, u: u8, v: u8) -> [u8; 4] {
        let ys = [y; 4];
        let uv = [u, v, u, v];
        let mut out = [0u8; 16];
        let n = nv12_to_xr24(
            &Nv12Src {
                y: &ys,
                y_pitch: 2,
                uv: &uv,
                uv_pitch: 4,
            },
            BT601,
            2,
            2,
            &mut out,
            8,
        );
        assert_eq!(n, 16);
        [out[0], out[1], out[2], out[3]]
    }

    #[test]
    fn limited_range_black_white_and_primaries() {
        assert_eq!(convert_one(16, 128, 128), [0, 0, 0, 255]);
        assert_eq!(convert_one(235, 128, 128), [255, 255, 255, 255]);
        // BT.601 red (Y 81, U 90, V 240) comes back as red within rounding; bytes are B, G, R, X.
        let [b, g, r, _] = convert_one(81, 90, 240);
        assert!(r >= 253 && g <= 2 && b <= 2, "got r{r} g{g} b{b}");
    }

    #[test]
    fn coefficients_match_the_published_ones() {
        // BT.601 limited: 1.164, 1.596, 0.392, 0.813, 2.017 (x256).
        assert_eq!(coefficients(BT601), (298, 409, 100, 208, 516, 16));
        let bt709 = YuvColor {
            matrix: YuvMatrix::Bt709,
            full_range: false,
        };
        // BT.709 limited: 1.164, 1.793, 0.213, 0.533, 2.112.
        assert_eq!(coefficients(bt709), (298, 459, 55, 136, 541, 16));
    }

    #[test]
    fn chroma_is_shared_by_pixel_pairs_and_row_pairs() {
        let y = [100u8; 8]; // 4x2
        let uv = [60u8, 200, 200, 60]; // two chroma samples for the row pair
        let mut out = [0u8; 32];
        nv12_to_xr24(
            &Nv12Src {
                y: &y,
                y_pitch: 4,
                uv: &uv,
                uv_pitch: 4,
            },
            BT601,
            4,
            2,
            &mut out,
            16,
        );
        assert_eq!(out[0..4], out[4..8]);
        assert_eq!(out[8..12], out[12..16]);
        assert_ne!(out[0..4], out[8..12]);
        assert_eq!(out[0..16], out[16..32]);
    }

    #[test]
    fn scaled_picks_the_nearest_source_pixel_of_the_rectangle() {
        // 4x2 luma 16, 80, 160, 235 per column (rows alike), neutral chroma.
        let y = [16u8, 80, 160, 235, 16, 80, 160, 235];
        let uv = [128u8; 4];
        let src = Nv12Src {
            y: &y,
            y_pitch: 4,
            uv: &uv,
            uv_pitch: 4,
        };
        // Columns 1..3 (80, 160) doubled into 4x1 at (1, 1) of a 6x3 scanout, black around.
        let mut out = [0x55u8; 6 * 3 * 4];
        let n = nv12_to_xr24_scaled(
            &src,
            BT601,
            (1, 0, 2, 2),
            ((1, 1, 4, 1), 0),
            6,
            3,
            &mut out,
            24,
        );
        assert_eq!(n, 72);
        let greens: Vec<u8> = out.chunks(4).map(|p| p[1]).collect();
        let g80 = convert_one(80, 128, 128)[1];
        let g160 = convert_one(160, 128, 128)[1];
        assert_eq!(greens[..6], [0; 6]);
        assert_eq!(greens[6..12], [0, g80, g80, g160, g160, 0]);
        assert_eq!(greens[12..], [0; 6]);
    }

    #[test]
    fn scaled_turns_the_picture_clockwise() {
        // 2x2 luma: 16 80 / 160 235. Turned 90° clockwise into a 2x2 place: 160 16 / 235 80.
        let y = [16u8, 80, 160, 235];
        let uv = [128u8; 2];
        let src = Nv12Src {
            y: &y,
            y_pitch: 2,
            uv: &uv,
            uv_pitch: 2,
        };
        let g = |l: u8| convert_one(l, 128, 128)[1];
        let turned = |rotation: u32| {
            let mut out = [0u8; 2 * 2 * 4];
            nv12_to_xr24_scaled(
                &src,
                BT601,
                (0, 0, 2, 2),
                ((0, 0, 2, 2), rotation),
                2,
                2,
                &mut out,
                8,
            );
            out.chunks(4).map(|p| p[1]).collect::<Vec<u8>>()
        };
        assert_eq!(turned(90), [g(160), g(16), g(235), g(80)]);
        assert_eq!(turned(180), [g(235), g(160), g(80), g(16)]);
        assert_eq!(turned(270), [g(80), g(235), g(16), g(160)]);
    }
}
