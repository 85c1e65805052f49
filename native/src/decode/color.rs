//! The colour encoding of decoded frames as the stream declares it (matrix and range), so
//! planes convert YUV with the encoder's coefficients instead of a guess from the height.
//! Kept in one atomic byte: the presentation thread reads it per frame without a lock.

use std::sync::atomic::{AtomicU8, Ordering};

use ffmpeg_next::color::{Range, Space};
use ffmpeg_next::format::Pixel;

use crate::dmabuf::color::{YuvColor, YuvMatrix};

/// What the stream's frames say about their colour, before defaults fill the gaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tagged {
    pub matrix: Option<YuvMatrix>,
    pub full_range: Option<bool>,
}

impl Tagged {
    /// Reads the frame's tags. `yuvj*` formats are full range whatever the range tag says
    /// (FFmpeg's JPEG formats); `converted` is true when swscale turns the frame into NV12,
    /// which maps a `yuvj*` source to limited range on the way.
    pub fn of(space: Space, range: Range, format: Pixel, converted: bool) -> Tagged {
        let matrix = match space {
            Space::BT709 => Some(YuvMatrix::Bt709),
            Space::BT470BG | Space::SMPTE170M | Space::FCC => Some(YuvMatrix::Bt601),
            Space::BT2020NCL | Space::BT2020CL => Some(YuvMatrix::Bt2020),
            _ => None,
        };
        let jpeg = matches!(
            format,
            Pixel::YUVJ420P | Pixel::YUVJ422P | Pixel::YUVJ444P | Pixel::YUVJ440P | Pixel::YUVJ411P
        );
        let full_range = if jpeg && converted {
            Some(false)
        } else if jpeg {
            Some(true)
        } else {
            match range {
                Range::JPEG => Some(true),
                Range::MPEG => Some(false),
                Range::Unspecified => None,
            }
        };
        // A JPEG-range frame without a matrix tag is a JPEG (or MJPEG) picture: BT.601.
        let matrix = matrix.or((jpeg && !converted).then_some(YuvMatrix::Bt601));
        Tagged { matrix, full_range }
    }

    /// The encoding to use: what is tagged, and for what is not, what players assume. None
    /// when nothing at all is tagged (the engine then guesses from the size, as before).
    pub fn color(&self, height: u32) -> Option<YuvColor> {
        if self.matrix.is_none() && self.full_range.is_none() {
            return None;
        }
        let guess = YuvColor::default_for(height);
        Some(YuvColor {
            matrix: self.matrix.unwrap_or(guess.matrix),
            full_range: self.full_range.unwrap_or(false),
        })
    }
}

/// The newest frame's colour, written by the decoder thread when it changes.
#[derive(Default)]
pub struct ColorCell(AtomicU8);

impl ColorCell {
    pub fn set(&self, color: Option<YuvColor>) {
        self.0.store(encode(color), Ordering::Relaxed);
    }

    pub fn get(&self) -> Option<YuvColor> {
        decode(self.0.load(Ordering::Relaxed))
    }
}

fn encode(color: Option<YuvColor>) -> u8 {
    let Some(c) = color else { return 0 };
    let matrix = match c.matrix {
        YuvMatrix::Bt601 => 1,
        YuvMatrix::Bt709 => 2,
        YuvMatrix::Bt2020 => 3,
    };
    matrix | (u8::from(c.full_range) << 2)
}

fn decode(bits: u8) -> Option<YuvColor> {
    let matrix = match bits & 3 {
        1 => YuvMatrix::Bt601,
        2 => YuvMatrix::Bt709,
        3 => YuvMatrix::Bt2020,
        _ => return None,
    };
    Some(YuvColor {
        matrix,
        full_range: bits & 4 != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_win_over_the_height_guess() {
        // An SD stream tagged BT.709, full range: not BT.601 limited as the guess would say.
        let t = Tagged::of(Space::BT709, Range::JPEG, Pixel::YUV420P, false);
        assert_eq!(
            t.color(480),
            Some(YuvColor {
                matrix: YuvMatrix::Bt709,
                full_range: true
            })
        );
        let hd601 = Tagged::of(Space::SMPTE170M, Range::MPEG, Pixel::YUV420P, false);
        assert_eq!(hd601.color(1080).map(|c| c.matrix), Some(YuvMatrix::Bt601));
        let uhd = Tagged::of(
            Space::BT2020NCL,
            Range::Unspecified,
            Pixel::YUV420P10LE,
            true,
        );
        assert_eq!(
            uhd.color(2160),
            Some(YuvColor {
                matrix: YuvMatrix::Bt2020,
                full_range: false
            })
        );
    }

    #[test]
    fn yuvj_is_full_range_unless_swscale_converted_it() {
        let mjpeg = Tagged::of(
            Space::Unspecified,
            Range::Unspecified,
            Pixel::YUVJ420P,
            false,
        );
        assert_eq!(
            mjpeg.color(720),
            Some(YuvColor {
                matrix: YuvMatrix::Bt601,
                full_range: true
            })
        );
        let scaled = Tagged::of(
            Space::Unspecified,
            Range::Unspecified,
            Pixel::YUVJ422P,
            true,
        );
        assert_eq!(scaled.full_range, Some(false));
    }

    #[test]
    fn untagged_is_none_so_the_engine_keeps_its_guess() {
        let t = Tagged::of(
            Space::Unspecified,
            Range::Unspecified,
            Pixel::YUV420P,
            false,
        );
        assert_eq!(t.color(1080), None);
    }

    #[test]
    fn the_cell_round_trips_every_encoding() {
        let cell = ColorCell::default();
        assert_eq!(cell.get(), None);
        for matrix in [YuvMatrix::Bt601, YuvMatrix::Bt709, YuvMatrix::Bt2020] {
            for full_range in [false, true] {
                let c = Some(YuvColor { matrix, full_range });
                cell.set(c);
                assert_eq!(cell.get(), c);
            }
        }
        cell.set(None);
        assert_eq!(cell.get(), None);
    }
}
