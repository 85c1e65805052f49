//! The fallback when no plane can scan a buffer out as it is (NV12 on a card whose planes
//! take only RGB, or a layout TEST_ONLY refuses): one CPU conversion to XR24 per frame,
//! shared by every output that needs it. Integer BT.601 limited range, which is what KMS
//! planes assume for YUV when COLOR_ENCODING and COLOR_RANGE are left at their defaults.

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
    width: usize,
    height: usize,
    dst: &mut [u8],
    dst_pitch: usize,
) -> usize {
    for row in 0..height {
        let y_row = &src.y[row * src.y_pitch..row * src.y_pitch + width];
        let uv_at = (row / 2) * src.uv_pitch;
        let uv_row = &src.uv[uv_at..uv_at + width.div_ceil(2) * 2];
        let out = &mut dst[row * dst_pitch..row * dst_pitch + width * 4];
        for x in 0..width {
            let c = 298 * (i32::from(y_row[x]) - 16);
            let d = i32::from(uv_row[x & !1]) - 128;
            let e = i32::from(uv_row[(x & !1) + 1]) - 128;
            let clamp = |v: i32| ((v + 128) >> 8).clamp(0, 255) as u8;
            out[x * 4] = clamp(c + 516 * d);
            out[x * 4 + 1] = clamp(c - 100 * d - 208 * e);
            out[x * 4 + 2] = clamp(c + 409 * e);
            out[x * 4 + 3] = 0xff;
        }
    }
    width * height * 4
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
