//! The converted-copy fallback: a buffer no plane takes as it is (NV12 without a framebuffer, a
//! format or rotation the planes refuse) is shown through XR24 copies the CPU converts, at
//! most once per commit however many outputs show it.

use super::super::error::KmsResult;
use super::super::formats::{YuvColor, NV12, XR24};
use super::super::ids::BufferId;
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

/// CPU work done because a plane could not take a buffer directly.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyCounters {
    pub conversions: u64,
    pub bytes: u64,
}

impl Engine {
    pub(super) fn scene_has_yuv(&self, scene: &[SceneOutput]) -> bool {
        scene.iter().flat_map(|s| &s.layers).any(|l| {
            self.buffers
                .get(l.buffer)
                .is_ok_and(|b| b.format == NV12 && !b.fb.is_none())
        })
    }

    /// An XR24 copy of `source` holding its current frame, converted at most once per commit
    /// however many outputs show it.
    pub(super) fn conversion_for(
        &mut self,
        source: BufferId,
        output: usize,
        color: YuvColor,
    ) -> KmsResult<BufferId> {
        if let Some(&(_, copy)) = self.converted_now.iter().find(|(s, _)| *s == source) {
            return Ok(copy);
        }
        let (width, height, format) = {
            let b = self.buffers.get(source)?;
            (b.width, b.height, b.format)
        };
        let generation = self.buffers.get(source)?.generation;
        let conversion = self.conversions.entry(source).or_insert(Conversion {
            copies: Vec::with_capacity(COPIES_MAX),
            reported: false,
            latest: None,
        });
        if let Some((done, copy)) = conversion.latest {
            if done == generation && self.buffers.get(copy).is_ok() {
                self.converted_now.push((source, copy));
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
        let first_time = !conversion.reported;
        conversion.reported = true;
        conversion.latest = Some((generation, copy));
        let bytes = self.buffers.convert_into(source, copy, color)?;
        self.copies.conversions += 1;
        self.copies.bytes += bytes as u64;
        self.converted_now.push((source, copy));
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
        if let Some(conversion) = self.conversions.remove(&id) {
            for copy in conversion.copies {
                let _ = self.buffers.release(&self.card, copy);
            }
        }
        Ok(freed)
    }
}
