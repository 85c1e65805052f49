//! How a frame's YUV samples map to RGB, as the decoder reads it from the stream and the
//! engine hands it to a plane.

/// How YUV samples map to RGB: the matrix and whether Y spans 16-235 (limited) or 0-255.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct YuvColor {
    pub matrix: YuvMatrix,
    pub full_range: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum YuvMatrix {
    Bt601,
    Bt709,
    Bt2020,
}

impl YuvColor {
    /// What an untagged frame most likely is, as FFmpeg and players guess: SD is BT.601,
    /// HD is BT.709, both limited range.
    pub fn default_for(height: u32) -> YuvColor {
        YuvColor {
            matrix: if height > 576 {
                YuvMatrix::Bt709
            } else {
                YuvMatrix::Bt601
            },
            full_range: false,
        }
    }
}
