//! Pixel formats and modifiers as KMS sees them: fourcc names, the IN_FORMATS blob and the
//! plane colour properties' values. The fourccs and the frame colour themselves live in
//! `crate::dmabuf`, shared with the decoder; they are re-exported here for the engine.

/// DRM_FORMAT_MOD_INVALID: "no explicit modifier", as FFmpeg's descriptors write it.
pub const MOD_INVALID: u64 = 0x00ff_ffff_ffff_ffff;

pub use crate::dmabuf::color::{YuvColor, YuvMatrix};
pub use crate::dmabuf::format::{fourcc, AR24, NV12, XR24};

/// The kernel's enum names for a plane's COLOR_ENCODING and COLOR_RANGE properties.
pub fn kms_color_names(color: YuvColor) -> (&'static str, &'static str) {
    (
        match color.matrix {
            YuvMatrix::Bt601 => "ITU-R BT.601 YCbCr",
            YuvMatrix::Bt709 => "ITU-R BT.709 YCbCr",
            YuvMatrix::Bt2020 => "ITU-R BT.2020 YCbCr",
        },
        if color.full_range {
            "YCbCr full range"
        } else {
            "YCbCr limited range"
        },
    )
}

pub fn is_yuv(code: u32) -> bool {
    code == NV12
}

pub fn fourcc_name(code: u32) -> String {
    code.to_le_bytes()
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

pub fn fourcc_parse(name: &str) -> Option<u32> {
    let bytes = name.as_bytes();
    if bytes.len() > 4 || bytes.is_empty() || !bytes.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    let mut padded = [b' '; 4];
    padded[..bytes.len()].copy_from_slice(bytes);
    Some(fourcc(&padded))
}

/// Bytes per pixel of each plane, and the horizontal and vertical subsampling of the
/// planes after the first.
pub fn format_layout(code: u32) -> Option<(&'static [u32], u32, u32)> {
    match code {
        XR24 | AR24 => Some((&[4], 1, 1)),
        NV12 => Some((&[1, 2], 2, 2)),
        _ => None,
    }
}

/// (format, modifier) pairs a plane accepts, from its IN_FORMATS blob
/// (`struct drm_format_modifier_blob`).
pub fn in_formats_parse(blob: &[u8]) -> Vec<(u32, u64)> {
    let u32_at = |at: usize| {
        blob.get(at..at + 4)
            .map(|b| u32::from_ne_bytes(b.try_into().unwrap()))
    };
    let u64_at = |at: usize| {
        blob.get(at..at + 8)
            .map(|b| u64::from_ne_bytes(b.try_into().unwrap()))
    };
    let (Some(count_formats), Some(formats_offset), Some(count_mods), Some(mods_offset)) =
        (u32_at(8), u32_at(12), u32_at(16), u32_at(20))
    else {
        return Vec::new();
    };
    let formats: Vec<u32> = (0..count_formats as usize)
        .filter_map(|i| u32_at(formats_offset as usize + 4 * i))
        .collect();
    let mut pairs = Vec::new();
    for m in 0..count_mods as usize {
        let at = mods_offset as usize + 24 * m;
        let (Some(mask), Some(offset), Some(modifier)) =
            (u64_at(at), u32_at(at + 8), u64_at(at + 16))
        else {
            break;
        };
        for bit in 0..64 {
            if mask & (1 << bit) != 0 {
                if let Some(&f) = formats.get(offset as usize + bit) {
                    pairs.push((f, modifier));
                }
            }
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOD_LINEAR: u64 = 0;

    #[test]
    fn fourcc_round_trip() {
        assert_eq!(fourcc_name(XR24), "XR24");
        assert_eq!(fourcc_parse("NV12"), Some(NV12));
        assert_eq!(fourcc_parse("toolong"), None);
    }

    #[test]
    fn in_formats_blob() {
        let mut blob = Vec::new();
        for v in [1u32, 0, 2, 24, 2, 32] {
            blob.extend_from_slice(&v.to_ne_bytes());
        }
        blob.extend_from_slice(&XR24.to_ne_bytes());
        blob.extend_from_slice(&NV12.to_ne_bytes());
        // linear for both formats, a vendor modifier for XR24 only
        for (mask, modifier) in [(0b11u64, MOD_LINEAR), (0b01, 0x0100_0000_0000_0001)] {
            blob.extend_from_slice(&mask.to_ne_bytes());
            blob.extend_from_slice(&0u32.to_ne_bytes());
            blob.extend_from_slice(&0u32.to_ne_bytes());
            blob.extend_from_slice(&modifier.to_ne_bytes());
        }
        assert_eq!(
            in_formats_parse(&blob),
            vec![
                (XR24, MOD_LINEAR),
                (NV12, MOD_LINEAR),
                (XR24, 0x0100_0000_0000_0001)
            ]
        );
        assert!(in_formats_parse(&blob[..10]).is_empty());
    }
}
