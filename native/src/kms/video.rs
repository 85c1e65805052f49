//! Decoded video on outputs, driven by the presentation thread: at every flip the newest
//! decoded frame is uploaded ONCE into a scanout buffer and placed on every output showing
//! that source, all in one atomic commit, so the outputs stay frame-locked. No JavaScript
//! runs per frame.

use std::sync::Arc;

use crate::decode::decoder::FrameSource;
use crate::decode::prime::PrimeFrame;

use super::buffer::DmaBufDesc;
use super::engine::{Engine, SceneLayer, SceneOutput};
use super::error::{KmsError, KmsResult};
use super::formats::{YuvColor, NV12};

/// Scanout buffers per source: one on screen, one in flight, one being filled.
const POOL: usize = 3;

/// Where one output shows the source: crop, placement and rotation.
#[derive(Clone, Debug)]
pub struct VideoPlacement {
    pub output: usize,
    /// The output's connector: indexes change when outputs are reconfigured, names do not.
    pub connector: String,
    pub src: Option<(u32, u32, u32, u32)>,
    pub dst: Option<(i32, i32, u32, u32)>,
    pub rotation: u32,
    pub color: Option<YuvColor>,
}

pub struct VideoBinding {
    source: FrameSource,
    placements: Vec<VideoPlacement>,
    /// NV12 buffers, made at the first frame's size.
    pool: Vec<u32>,
    size: (u32, u32),
    shown_sequence: u64,
    current: u32,
    /// Framebuffers imported from the source's dma-bufs (one per surface, cached by the
    /// buffer store), released when the binding ends.
    imported: Vec<u32>,
    /// Claims on dma-buf frames that are on screen or about to be: (framebuffer, frame).
    held: Vec<(u32, Arc<PrimeFrame>)>,
}

/// Claims held per source: on screen, in flight and the new one, with room for a repeat.
const HELD: usize = 6;

#[derive(Clone, Copy, Debug, Default)]
pub struct VideoCounters {
    /// Decoded frames uploaded to scanout buffers (once each, however many outputs).
    pub uploads: u64,
    pub upload_bytes: u64,
    /// Commits that showed a new frame.
    pub frames_shown: u64,
    /// Vblanks where the decoder had nothing new (the previous frame stayed).
    pub repeats: u64,
    /// Video commits that failed; the newest reason is in `Engine::video_error`.
    pub errors: u64,
    /// Frames shown straight from the decoder's dma-bufs, with no CPU copy in the engine.
    pub zero_copy: u64,
}

impl Engine {
    /// Shows `source` on the placements' outputs from the next vblank on, replacing what
    /// those outputs showed. Other outputs are untouched.
    pub fn video_play(
        &mut self,
        source: FrameSource,
        placements: Vec<VideoPlacement>,
    ) -> KmsResult<()> {
        if placements.is_empty() {
            return Err(KmsError::BadBuffer(
                "video needs at least one output".into(),
            ));
        }
        for p in &placements {
            if p.output >= self.outputs.len() {
                return Err(KmsError::OutputNotConfigured(format!("#{}", p.output)));
            }
        }
        let taken: Vec<usize> = placements.iter().map(|p| p.output).collect();
        // An output shows one thing: a new binding takes its outputs from older ones.
        for binding in &mut self.video {
            binding.placements.retain(|p| !taken.contains(&p.output));
        }
        self.video_release_empty();
        self.flip_loop = None;
        self.video.push(VideoBinding {
            source,
            placements,
            pool: Vec::with_capacity(POOL),
            size: (0, 0),
            shown_sequence: 0,
            current: 0,
            imported: Vec::with_capacity(HELD * 2),
            held: Vec::with_capacity(HELD),
        });
        self.video_scene_rebuild();
        if self.outputs.iter().all(|o| !o.pending) {
            if let Err(e) = self.video_step() {
                // The kernel refused the layout (a plane that cannot scale, say): take the new
                // binding back rather than retry a doomed commit at every vblank. The outputs
                // keep what they showed.
                if let Some(binding) = self.video.pop() {
                    for buffer in binding.pool.into_iter().chain(binding.imported) {
                        let _ = self.buffer_release(buffer);
                    }
                    self.video_retired.extend(binding.held);
                }
                self.video_scene_rebuild();
                return Err(e);
            }
        }
        Ok(())
    }

    /// After a reconfiguration: follow outputs to their new indexes, drop the ones gone
    /// (unplugged), and restart the vblank-driven commits on the rest.
    pub(super) fn video_remap(&mut self) {
        if self.video.is_empty() {
            return;
        }
        for b in 0..self.video.len() {
            let mut placements = std::mem::take(&mut self.video[b].placements);
            placements.retain_mut(|p| {
                match self.outputs.iter().position(|o| o.connector == p.connector) {
                    Some(index) => {
                        p.output = index;
                        true
                    }
                    None => false,
                }
            });
            self.video[b].placements = placements;
        }
        self.video_release_empty();
        self.video_scene_rebuild();
        if self.outputs.iter().all(|o| !o.pending) {
            let _ = self.video_step();
        }
    }

    /// Called when no flip event came for a while: with video bound and nothing in flight
    /// (a decoder that had no frame yet at the last vblank), start committing again.
    pub fn idle_tick(&mut self) {
        if !self.video.is_empty()
            && self.flip_loop.is_none()
            && self.outputs.iter().all(|o| !o.pending)
        {
            let _ = crate::alloc_count::frame_path(|| self.video_step());
        }
    }

    /// Stops all video; the outputs keep their last frame.
    pub fn video_stop(&mut self) {
        for binding in &mut self.video {
            binding.placements.clear();
        }
        self.video_release_empty();
        self.video_scene.clear();
    }

    fn video_release_empty(&mut self) {
        let mut i = 0;
        while i < self.video.len() {
            if self.video[i].placements.is_empty() {
                let binding = self.video.remove(i);
                for buffer in binding.pool.into_iter().chain(binding.imported) {
                    // Freed once no CRTC shows it.
                    let _ = self.buffer_release(buffer);
                }
                self.video_retired.extend(binding.held);
            } else {
                i += 1;
            }
        }
    }

    /// One scene for all bindings, built when they change; each frame only swaps buffer ids.
    fn video_scene_rebuild(&mut self) {
        self.video_scene.clear();
        for binding in &self.video {
            for p in &binding.placements {
                self.video_scene.push(SceneOutput {
                    output: p.output,
                    layers: vec![SceneLayer {
                        buffer: 0,
                        src: p.src,
                        dst: p.dst,
                        rotation: p.rotation,
                        color: p.color,
                    }],
                });
            }
        }
    }

    /// At a vblank with every output idle: upload what is new and commit all video outputs.
    pub(super) fn video_step(&mut self) -> KmsResult<()> {
        if !self.video_retired.is_empty() {
            let buffers = &self.buffers;
            self.video_retired
                .retain(|(id, _)| buffers.get(*id).is_ok_and(|b| b.screen_refs > 0));
        }
        if self.video.is_empty() {
            return Ok(());
        }
        let mut any_new = false;
        for b in 0..self.video.len() {
            any_new |= self.video_upload(b)?;
        }
        if self.video.iter().any(|b| b.current == 0) {
            // A source with no decoded frame yet: keep what the outputs show.
            return Ok(());
        }
        let mut at = 0;
        for binding in &self.video {
            for _ in &binding.placements {
                self.video_scene[at].layers[0].buffer = binding.current;
                at += 1;
            }
        }
        if any_new {
            self.video_counters.frames_shown += 1;
        } else {
            self.video_counters.repeats += 1;
        }
        let scene = std::mem::take(&mut self.video_scene);
        let result = self.present_now(&scene).map(|_| ());
        self.video_scene = scene;
        if let Err(e) = &result {
            self.video_counters.errors += 1;
            self.video_error = Some(e.to_string());
        }
        result
    }

    /// Binding `b`'s newest decoded frame if it is new: a dma-buf frame is imported (cached per
    /// surface) and shown as it is; an NV12 frame is copied into a free pool buffer.
    fn video_upload(&mut self, b: usize) -> KmsResult<bool> {
        let shown = self.video[b].shown_sequence;
        let source = self.video[b].source.clone();
        if let Some((prime, sequence)) = source.take_newest_prime() {
            if sequence == shown {
                return Ok(false);
            }
            return self.video_import(b, prime, sequence).map(|()| true);
        }
        let size = source.with_newest(|_, w, h, seq, _| (w, h, seq));
        let Some((width, height, sequence)) = size else {
            return Ok(false);
        };
        if sequence == shown {
            return Ok(false);
        }
        if self.video[b].size != (width, height) {
            for buffer in std::mem::take(&mut self.video[b].pool) {
                let _ = self.buffer_release(buffer);
            }
            self.video[b].size = (width, height);
            self.video[b].current = 0;
        }
        let free = self.video[b]
            .pool
            .iter()
            .copied()
            .find(|&id| self.buffers.get(id).is_ok_and(|buf| buf.screen_refs == 0));
        let target = match free {
            Some(id) => id,
            None if self.video[b].pool.len() < POOL => {
                let id = self.buffers.dumb_create(&self.card, width, height, NV12)?;
                self.video[b].pool.push(id);
                id
            }
            // Every buffer is on screen or in flight: skip this frame rather than tear.
            None => return Ok(false),
        };
        let buffers = &mut self.buffers;
        let written = source
            .take_newest(|data, _, _, _, _| buffers.dumb_write(target, data).map(|()| data.len()));
        let Some(written) = written else {
            return Ok(false);
        };
        let written = written?;
        self.video_counters.uploads += 1;
        self.video_counters.upload_bytes += written as u64;
        self.copies.bytes += written as u64;
        let binding = &mut self.video[b];
        binding.shown_sequence = sequence;
        binding.current = target;
        Ok(true)
    }

    fn video_import(&mut self, b: usize, prime: Arc<PrimeFrame>, sequence: u64) -> KmsResult<()> {
        let (buffer, cached) = prime.with_layout(|objects, planes| {
            let desc = DmaBufDesc {
                width: prime.width,
                height: prime.height,
                format: prime.format,
                modifier: prime.modifier,
                objects,
                planes,
            };
            self.buffers.dmabuf_import(&self.card, &desc)
        })?;
        if let Ok(buf) = self.buffers.get_mut(buffer) {
            // The surface holds a new frame: a converted copy of its old content is stale.
            buf.generation += 1;
        }
        let buffers = &self.buffers;
        let binding = &mut self.video[b];
        if !cached || !binding.imported.contains(&buffer) {
            binding.imported.push(buffer);
        }
        // Claims on frames no CRTC shows any more go back to the decoder.
        let current = binding.current;
        binding.held.retain(|(id, _)| {
            *id == current || buffers.get(*id).is_ok_and(|buf| buf.screen_refs > 0)
        });
        binding.held.push((buffer, prime));
        binding.shown_sequence = sequence;
        binding.current = buffer;
        self.video_counters.zero_copy += 1;
        Ok(())
    }
}
