//! Frames the CPU can see: copied once into a small pool of NV12 scanout buffers.

use super::super::engine::Engine;
use super::super::error::KmsResult;
use super::super::formats::NV12;
use super::super::ids::BufferId;
use super::super::video_health::VideoCause;
use super::{StepError, Video, POOL};

impl Video {
    /// Binding `b`'s newest decoded frame if it is new: a dma-buf frame the planes take is
    /// imported (cached per surface) and shown as it is; otherwise the frame's bytes are
    /// copied into a free pool buffer (and converted further if no plane takes NV12).
    pub(super) fn video_upload(
        &mut self,
        engine: &mut Engine,
        b: usize,
    ) -> Result<bool, StepError> {
        let bad = |e| (VideoCause::BadFrame, e);
        let shown = self.groups[b].shown_sequence;
        let source = self.groups[b].source.clone();
        if let Some((prime, sequence)) = source.take_newest_prime() {
            if sequence == shown {
                return Ok(false);
            }
            if self.video_negotiate(engine, b, &prime) {
                match self.video_import(engine, b, &prime, sequence) {
                    Ok(()) => return Ok(true),
                    // Refused (and remembered by the store): the CPU path below, if it can.
                    Err(e) if prime.cpu_bytes().is_none() => {
                        return Err((VideoCause::ImportRefused, e))
                    }
                    Err(_) => self.video_format_fallback(engine, b, &prime),
                }
            }
            let Some(bytes) = prime.cpu_bytes() else {
                // No CPU view: the decoder was asked for CPU frames; the outputs keep their
                // last frame until those come.
                return Ok(false);
            };
            return self
                .video_copy(engine, b, bytes, prime.width, prime.height, sequence)
                .map_err(bad);
        }
        let mut size = None;
        source.with_newest(&mut |_, w, h, seq, _| size = Some((w, h, seq)));
        let Some((width, height, sequence)) = size else {
            return Ok(false);
        };
        if sequence == shown {
            return Ok(false);
        }
        let target = match self
            .video_pool_target(engine, b, width, height)
            .map_err(bad)?
        {
            Some(target) => target,
            None => return Ok(false),
        };
        let buffers = &mut engine.buffers;
        let mut written = None;
        source.take_newest(&mut |data, _, _, _, _| {
            written = Some(buffers.dumb_write(target, data).map(|()| data.len()));
        });
        let Some(written) = written else {
            return Ok(false);
        };
        self.video_uploaded(engine, b, target, sequence, written.map_err(bad)?);
        Ok(true)
    }

    pub(super) fn video_copy(
        &mut self,
        engine: &mut Engine,
        b: usize,
        bytes: &[u8],
        width: u32,
        height: u32,
        sequence: u64,
    ) -> KmsResult<bool> {
        let Some(target) = self.video_pool_target(engine, b, width, height)? else {
            return Ok(false);
        };
        engine.buffers.dumb_write(target, bytes)?;
        self.video_uploaded(engine, b, target, sequence, bytes.len());
        Ok(true)
    }

    pub(super) fn video_uploaded(
        &mut self,
        engine: &mut Engine,
        b: usize,
        target: BufferId,
        sequence: u64,
        written: usize,
    ) {
        engine.video_counters.uploads += 1;
        engine.video_counters.upload_bytes += written as u64;
        engine.copies.bytes += written as u64;
        let binding = &mut self.groups[b];
        binding.shown_sequence = sequence;
        binding.current = target;
    }

    /// A free NV12 pool buffer of this size, made on demand; None when every one is on screen
    /// or in flight (the frame is skipped rather than torn).
    pub(super) fn video_pool_target(
        &mut self,
        engine: &mut Engine,
        b: usize,
        width: u32,
        height: u32,
    ) -> KmsResult<Option<BufferId>> {
        if self.groups[b].size != (width, height) {
            for buffer in std::mem::take(&mut self.groups[b].pool) {
                let _ = engine.buffer_release(buffer);
            }
            self.groups[b].size = (width, height);
        }
        let free = self.groups[b]
            .pool
            .iter()
            .copied()
            .find(|&id| engine.buffers.get(id).is_ok_and(|buf| buf.screen_refs == 0));
        Ok(match free {
            Some(id) => Some(id),
            None if self.groups[b].pool.len() < POOL => {
                let id = engine
                    .buffers
                    .dumb_create(&engine.card, width, height, NV12)?;
                self.groups[b].pool.push(id);
                Some(id)
            }
            None => None,
        })
    }
}
