//! The converted-copy fallback: a buffer no plane takes as it is (NV12 without a framebuffer, a
//! format or rotation the planes refuse) is shown through XR24 copies the CPU converts, at
//! most once per commit however many outputs show it. Where the plane also cannot scale or be
//! positioned (virtio-gpu's primaries), the copy is the whole scanout: the picture scaled into
//! its destination with black bars around it, once per frame for all outputs of that size.

use super::super::error::KmsResult;
use super::super::formats::{YuvColor, NV12, XR24};
use super::super::ids::{BufferId, Rect};
use super::scene::SceneOutput;
use super::{Engine, EngineEvent};

/// Converted XR24 copies of one source buffer. Several, because the copy on screen must not
/// be overwritten while the next frame is converted.
pub(super) struct Conversion {
    copies: Vec<BufferId>,
    reported: bool,
    /// The source generation the newest copy holds: a repeated frame is not converted again.
    latest: Option<(u64, BufferId)>,
}

/// Most copies kept per source: one on screen, one in flight, one being written.
const COPIES_MAX: usize = 3;

/// A copy scaled by the CPU: the source rectangle, where it lands in the copy, the copy's
/// width and height (the output's mode) and the degrees the picture is turned clockwise.
/// None: a copy of the whole buffer at its own size.
pub(in crate::kms) type CopyScale = Option<(Rect<u32>, Rect<u32>, u32, u32, u32)>;

/// Which copies a source has: one set per scale (outputs of different sizes differ).
pub(in crate::kms) type ConversionKey = (BufferId, CopyScale);

/// CPU work done because a plane could not take a buffer directly.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyCounters {
    pub conversions: u64,
    pub bytes: u64,
    /// Conversions that also scaled (the plane could not).
    pub scaled: u64,
}

impl Engine {
    pub(super) fn scene_has_yuv(&self, scene: &[SceneOutput]) -> bool {
        // With or without a framebuffer of its own: one without is already a converted copy,
        // which a plane that cannot scale may still refuse.
        scene
            .iter()
            .flat_map(|s| &s.layers)
            .any(|l| self.buffers.get(l.buffer).is_ok_and(|b| b.format == NV12))
    }

    /// An XR24 copy of `source` holding its current frame, converted at most once per commit
    /// however many outputs show it.
    pub(super) fn conversion_for(
        &mut self,
        source: BufferId,
        output: usize,
        color: YuvColor,
        scale: CopyScale,
    ) -> KmsResult<BufferId> {
        let key = (source, scale);
        if let Some(&(_, copy)) = self.converted_now.iter().find(|(k, _)| *k == key) {
            return Ok(copy);
        }
        let (width, height, format) = {
            let b = self.buffers.get(source)?;
            match scale {
                Some((_, _, w, h, _)) => (w, h, b.format),
                None => (b.width, b.height, b.format),
            }
        };
        let generation = self.buffers.get(source)?.generation;
        // Said once per source, whether its copies are scaled or not.
        let told = self
            .conversions
            .iter()
            .any(|((s, _), c)| *s == source && c.reported);
        let conversion = self.conversions.entry(key).or_insert(Conversion {
            copies: Vec::with_capacity(COPIES_MAX),
            reported: false,
            latest: None,
        });
        if let Some((done, copy)) = conversion.latest {
            if done == generation && self.buffers.get(copy).is_ok() {
                self.converted_now.push((key, copy));
                return Ok(copy);
            }
        }
        let free = conversion
            .copies
            .iter()
            .copied()
            .find(|&c| self.buffers.get(c).is_ok_and(|b| b.screen_refs == 0));
        let copy = match free {
            Some(copy) => copy,
            None if conversion.copies.len() < COPIES_MAX => {
                let copy = self.buffers.dumb_create(&self.card, width, height, XR24)?;
                conversion.copies.push(copy);
                copy
            }
            // Every copy is on screen or in flight: overwrite the oldest rather than stall.
            None => conversion.copies[0],
        };
        let first_time = !told;
        conversion.reported = true;
        conversion.latest = Some((generation, copy));
        let bytes = self.buffers.convert_into(
            source,
            copy,
            color,
            scale.map(|(r, p, _, _, turn)| (r, p, turn)),
        )?;
        self.copies.conversions += 1;
        self.copies.bytes += bytes as u64;
        if scale.is_some() {
            self.copies.scaled += 1;
        }
        self.converted_now.push((key, copy));
        if first_time && self.events.len() < self.events.capacity() {
            self.events.push(EngineEvent::Fallback {
                output,
                buffer: source,
                format,
            });
        }
        Ok(copy)
    }

    /// Frees `id` now or once off screen, with the converted copies made of it.
    pub fn buffer_release(&mut self, id: BufferId) -> KmsResult<bool> {
        let freed = self.buffers.release(&self.card, id)?;
        let card = &self.card;
        let buffers = &mut self.buffers;
        self.conversions.retain(|(source, _), conversion| {
            if *source != id {
                return true;
            }
            for &copy in &conversion.copies {
                let _ = buffers.release(card, copy);
            }
            false
        });
        Ok(freed)
    }
}
