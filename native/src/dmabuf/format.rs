//! DRM fourccs (drm_fourcc.h) as a frame names its pixel layout: the constructor and the
//! formats both the decoder's exports and the engine's buffers use.

pub const fn fourcc(code: &[u8; 4]) -> u32 {
    (code[0] as u32) | (code[1] as u32) << 8 | (code[2] as u32) << 16 | (code[3] as u32) << 24
}

pub const XR24: u32 = fourcc(b"XR24");
pub const AR24: u32 = fourcc(b"AR24");
pub const NV12: u32 = fourcc(b"NV12");
/// 10-bit 4:2:0, two planes (what VAAPI decodes 10-bit streams into).
pub const P010: u32 = fourcc(b"P010");
