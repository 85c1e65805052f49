//! Frames as dma-bufs: negotiated against the planes' formats and modifiers, imported once per
//! surface and shown as they are, with the decoder's claim held while a CRTC shows them.

use std::sync::Arc;

use super::super::buffer::REFUSED_BEFORE;
use super::super::engine::{Engine, EngineEvent};
use super::super::error::{KmsError, KmsResult};
use super::super::formats::{fourcc_name, MOD_INVALID};
use super::super::ids::BufferId;
use super::{Video, IMPORTED_MAX};
use crate::dmabuf::PrimeFrame;

/// Whether the planes of a group's outputs take the source's dma-bufs as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Negotiation {
    format: u32,
    modifier: u64,
    size: (u32, u32),
    direct: bool,
}

impl Video {
    /// Whether every output of group `b` has a plane that takes `prime`'s fourcc and modifier
    /// (IN_FORMATS). Decided once per format, modifier and size; when not, the decoder is asked
    /// for frames with a CPU view, once, and the outputs are told.
    pub(super) fn video_negotiate(
        &mut self,
        engine: &mut Engine,
        b: usize,
        prime: &PrimeFrame,
    ) -> bool {
        let modifier = engine.fault_modifier.unwrap_or(prime.modifier);
        let asked = Negotiation {
            format: prime.format,
            modifier,
            size: (prime.width, prime.height),
            direct: false,
        };
        if let Some(n) = self.groups[b].negotiation {
            if (n.format, n.modifier, n.size) == (asked.format, asked.modifier, asked.size) {
                return n.direct;
            }
            // A new surface pool (another size or layout): its predecessor's framebuffers
            // would stay pinned in the import cache otherwise.
            self.video_imports_drop(engine, b, 0);
        }
        let wanted = (modifier != MOD_INVALID).then_some(modifier);
        let refusing = self.groups[b].placements.iter().position(|p| {
            !engine.outputs[p.output].planes.iter().any(|&plane| {
                engine
                    .plane_res(plane)
                    .is_ok_and(|r| r.accepts(prime.format, wanted))
            })
        });
        let direct = refusing.is_none();
        self.groups[b].negotiation = Some(Negotiation { direct, ..asked });
        if !direct {
            self.video_format_fallback(engine, b, prime);
        }
        direct
    }

    /// No plane takes the source's dma-bufs: the decoder goes on in software (its frames then
    /// have a CPU view) and the outputs are told once; meanwhile frames with a CPU view are
    /// copied.
    pub(super) fn video_format_fallback(
        &mut self,
        engine: &mut Engine,
        b: usize,
        prime: &PrimeFrame,
    ) {
        let modifier = engine.fault_modifier.unwrap_or(prime.modifier);
        if let Some(n) = self.groups[b].negotiation.as_mut() {
            n.direct = false;
        }
        let first = &self.groups[b].placements[0];
        let reason = format!(
            "{}: no plane takes {} with modifier {:#x}; decoding in software",
            first.connector,
            fourcc_name(prime.format),
            modifier
        );
        self.groups[b].source.cpu_frames_request(&reason);
        for p in &self.groups[b].placements {
            if engine.events.len() < engine.events.capacity() {
                engine.events.push(EngineEvent::FormatFallback {
                    output: p.output,
                    format: prime.format,
                    modifier,
                });
            }
        }
    }

    /// Lets go of group `b`'s imported framebuffers beyond the newest `keep`, oldest first,
    /// except the one it shows (claimed ones go once they leave the screen).
    pub(super) fn video_imports_drop(&mut self, engine: &mut Engine, b: usize, keep: usize) {
        loop {
            let binding = &mut self.groups[b];
            if binding.imported.len() <= keep {
                return;
            }
            // The oldest, but not the one on show while others can go; with `keep` 0 (a
            // replaced pool) that one too: it leaves the kernel once off screen, and the group
            // shows nothing new until the next frame is imported.
            let current = binding.current;
            let at = binding
                .imported
                .iter()
                .position(|&id| id != current || keep == 0)
                .unwrap_or(0);
            let id = binding.imported.remove(at);
            if id == current {
                binding.current = BufferId::NONE;
            }
            engine.video_counters.imports_dropped += 1;
            let _ = engine.buffer_release(id);
        }
    }

    pub(super) fn video_import(
        &mut self,
        engine: &mut Engine,
        b: usize,
        prime: &Arc<PrimeFrame>,
        sequence: u64,
    ) -> KmsResult<()> {
        let (buffer, cached) = prime
            .with_desc(|desc| engine.buffers.dmabuf_import(&engine.card, desc))
            .inspect_err(|e| {
                if matches!(e, KmsError::Ioctl(REFUSED_BEFORE, _)) {
                    engine.video_counters.imports_refused += 1;
                }
            })?;
        if let Ok(buf) = engine.buffers.get_mut(buffer) {
            // The surface holds a new frame: a converted copy of its old content is stale.
            buf.generation += 1;
        }
        let fresh = !cached || !self.groups[b].imported.contains(&buffer);
        if fresh && self.groups[b].imported.len() >= IMPORTED_MAX {
            self.video_imports_drop(engine, b, IMPORTED_MAX - 1);
        }
        let buffers = &engine.buffers;
        let binding = &mut self.groups[b];
        if fresh {
            binding.imported.push(buffer);
        }
        // Claims on frames no CRTC shows any more go back to the decoder.
        let current = binding.current;
        binding.held.retain(|(id, _)| {
            *id == current || buffers.get(*id).is_ok_and(|buf| buf.screen_refs > 0)
        });
        binding.held.push((buffer, Arc::clone(prime)));
        binding.shown_sequence = sequence;
        binding.current = buffer;
        engine.video_counters.zero_copy += 1;
        Ok(())
    }
}
