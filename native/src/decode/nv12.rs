//! Decoded software frames land in NV12, the layout overlay planes take for video, so one
//! upload serves every output. The copy is counted: it is the CPU cost the hardware path
//! avoids.

/// Interleaves planar 4:2:0 (Y, U, V planes) into NV12 (Y plane, then UV pairs) in `out`,
/// which holds `width * height * 3 / 2` bytes (even sizes rounded up). Returns bytes written.
#[allow(clippy::too_many_arguments)]
pub fn yuv420p_to_nv12(
    y: &[u8],
    y_stride: usize,
    u: &[u8],
    u_stride: usize,
    v: &[u8],
    v_stride: usize,
    width: usize,
    height: usize,
    out: &mut [u8],
) -> usize {
    for row in 0..height {
        out[row * width..row * width + width]
            .copy_from_slice(&y[row * y_stride..row * y_stride + width]);
    }
    let chroma_w = width.div_ceil(2);
    let uv_base = width * height;
    for row in 0..height.div_ceil(2) {
        let dst = &mut out[uv_base + row * chroma_w * 2..uv_base + (row + 1) * chroma_w * 2];
        let (us, vs) = (&u[row * u_stride..], &v[row * v_stride..]);
        for x in 0..chroma_w {
            dst[2 * x] = us[x];
            dst[2 * x + 1] = vs[x];
        }
    }
    uv_base + height.div_ceil(2) * chroma_w * 2
}

pub fn nv12_size(width: usize, height: usize) -> usize {
    width * height + height.div_ceil(2) * width.div_ceil(2) * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_chroma_and_skips_stride_padding() {
        // 4x2 luma with stride 6, 2x1 chroma with stride 3.
        let y = [1, 2, 3, 4, 0, 0, 5, 6, 7, 8, 0, 0];
        let u = [10, 11, 0];
        let v = [20, 21, 0];
        let mut out = [0u8; 12];
        let n = yuv420p_to_nv12(&y, 6, &u, 3, &v, 3, 4, 2, &mut out);
        assert_eq!(n, 12);
        assert_eq!(nv12_size(4, 2), 12);
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 10, 20, 11, 21]);
    }
}
