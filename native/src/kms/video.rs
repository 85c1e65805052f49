//! Decoded video on outputs, driven by the presentation thread. Outputs showing the same
//! source form a group: at every vblank of the group the newest decoded frame is uploaded (or
//! imported) ONCE and placed on each of its outputs in one atomic commit, so they stay
//! frame-locked. Groups are independent: each commits when its own CRTCs are idle (see
//! pacing.rs), and a source without frames or a refused commit stops only its own outputs.
//! No JavaScript runs per frame. Video is a client of the engine: it gets its turns from
//! engine/clients.rs and works through the engine's API (scenes, buffers, events).

use std::sync::Arc;

use crate::decode::decoder::FrameSource;
use crate::decode::prime::PrimeFrame;
use crate::dmabuf::{DmaBufDesc, Fourcc, Modifier};

use super::engine::{monotonic_ns, Engine, EngineEvent, PresentResult, SceneLayer, SceneOutput};
use super::error::{KmsError, KmsResult};
use super::formats::{YuvColor, MOD_INVALID, NV12};
use super::ids::{BufferId, Rect};
use super::pacing::group_idle;
use super::video_health::{report, Backoff, Transition, VideoCause, FIRST_FRAME_NS, STALL_NS};

/// Scanout buffers per source for CPU frames: one on screen, one in flight, one being filled.
pub const POOL: usize = 3;

/// Imported framebuffers kept per group. A decoder's surface pool is at most this big (the
/// export pool has 7, VAAPI's ~20 in a worst case); more means the source replaced its pool
/// without changing size (a variant switch), and the oldest imports go.
pub const IMPORTED_MAX: usize = 24;

/// Where one output shows the source: crop, placement and rotation.
#[derive(Clone, Debug)]
pub struct VideoPlacement {
    pub output: usize,
    /// The output's connector: indexes change when outputs are reconfigured, names do not.
    pub connector: String,
    pub src: Option<Rect<u32>>,
    pub dst: Option<Rect>,
    pub rotation: u32,
    pub color: Option<YuvColor>,
}

/// Whether the planes of a group's outputs take the source's dma-bufs as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Negotiation {
    format: u32,
    modifier: u64,
    size: (u32, u32),
    direct: bool,
}

/// One group: a source and the outputs showing it.
pub struct VideoBinding {
    source: FrameSource,
    placements: Vec<VideoPlacement>,
    /// Per placement: the cause that output was last told about (None: fine).
    reported: Vec<Option<VideoCause>>,
    /// The group's scene, built when placements change; each frame only swaps buffer ids.
    scene: Vec<SceneOutput>,
    /// Switch only to a picture: false until the first commit of a frame of this source went
    /// in. Until then the outputs stay with whatever showed them before (older groups).
    live: bool,
    bound_ns: u64,
    last_new_ns: u64,
    backoff: Backoff,
    /// The cause that stops this group now; None while it shows frames.
    fault: Option<VideoCause>,
    /// Said once per cause, for the event's message (formatted once, not per attempt).
    pub fault_detail: String,
    negotiation: Option<Negotiation>,
    /// NV12 buffers for CPU frames, made at the first frame's size.
    pool: Vec<BufferId>,
    size: (u32, u32),
    shown_sequence: u64,
    current: BufferId,
    /// Framebuffers imported from the source's dma-bufs (one per surface, cached by the
    /// buffer store), released when the binding ends or the source's surface pool changes.
    imported: Vec<BufferId>,
    /// Claims on dma-buf frames that are on screen or about to be: (framebuffer, frame).
    held: Vec<(BufferId, Arc<PrimeFrame>)>,
}

impl VideoBinding {
    pub fn connectors(&self) -> impl Iterator<Item = &str> {
        self.placements.iter().map(|p| p.connector.as_str())
    }

    pub fn shows(&self, output: usize) -> bool {
        self.placements.iter().any(|p| p.output == output)
    }

    pub fn live(&self) -> bool {
        self.live
    }

    pub fn fault(&self) -> Option<VideoCause> {
        self.fault
    }
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
    /// Import attempts skipped because the card refused that dma-buf before.
    pub imports_refused: u64,
    /// Imported framebuffers let go because the source replaced its surface pool.
    pub imports_dropped: u64,
}

/// The video client of the engine: groups of outputs showing decoded sources. The engine
/// holds one and hands it its turns (a flip, a reconfiguration, an idle tick; see
/// engine/clients.rs); at each, every group whose outputs are idle hands the engine one scene
/// (`Engine::present_video`).
#[derive(Default)]
pub struct Video {
    groups: Vec<VideoBinding>,
    /// Claims on dma-buf frames of stopped video that outputs may still show: dropped once no
    /// CRTC scans them out, so the decoder cannot overwrite a surface on screen.
    retired: Vec<(BufferId, Arc<PrimeFrame>)>,
}

/// What stopped a step: the cause and, for the once-per-cause message, the error.
type StepError = (VideoCause, KmsError);

impl Video {
    /// Shows `source` on the placements' outputs from its first frame on; until then the
    /// outputs keep what they show. Other outputs are untouched.
    pub fn video_play(
        &mut self,
        engine: &mut Engine,
        source: FrameSource,
        placements: Vec<VideoPlacement>,
    ) -> KmsResult<()> {
        if placements.is_empty() {
            return Err(KmsError::BadBuffer(
                "video needs at least one output".into(),
            ));
        }
        for p in &placements {
            if p.output >= engine.outputs.len() {
                return Err(KmsError::OutputNotConfigured(format!("#{}", p.output)));
            }
        }
        engine.flip_loop = None;
        let now = monotonic_ns();
        let mut binding = VideoBinding {
            source,
            reported: vec![None; placements.len()],
            placements,
            scene: Vec::new(),
            live: false,
            bound_ns: now,
            last_new_ns: now,
            backoff: Backoff::default(),
            fault: None,
            fault_detail: String::new(),
            negotiation: None,
            pool: Vec::with_capacity(POOL),
            size: (0, 0),
            shown_sequence: 0,
            current: BufferId::NONE,
            imported: Vec::with_capacity(IMPORTED_MAX),
            held: Vec::with_capacity(HELD),
        };
        scene_build(&mut binding);
        self.groups.push(binding);
        let b = self.groups.len() - 1;
        if self.video_group_idle(engine, b) {
            let events = engine.events.len();
            if let Err((_, e)) = self.video_step(engine, b, now) {
                engine.events.truncate(events);
                // The first frame is here and the kernel refused its layout (a plane that cannot
                // scale, say): answer the caller rather than retry a doomed binding. The
                // outputs keep what they showed.
                let binding = self.groups.pop().expect("pushed above");
                self.video_binding_release(engine, binding);
                return Err(e);
            }
            self.video_release_empty(engine);
        }
        Ok(())
    }

    /// After a reconfiguration: follow outputs to their new indexes, drop the ones gone
    /// (unplugged), and restart the vblank-driven commits on the rest.
    pub(super) fn video_remap(&mut self, engine: &mut Engine) {
        if self.groups.is_empty() {
            return;
        }
        for b in 0..self.groups.len() {
            let binding = &mut self.groups[b];
            let outputs = &engine.outputs;
            placements_retain(
                &mut binding.placements,
                &mut binding.reported,
                |p| match outputs.iter().position(|o| o.connector == p.connector) {
                    Some(index) => {
                        p.output = index;
                        true
                    }
                    None => false,
                },
            );
            // Other outputs, other planes: ask again.
            binding.negotiation = None;
            binding.backoff.succeeded();
            scene_build(binding);
        }
        self.video_release_empty(engine);
        self.video_service(engine, monotonic_ns());
    }

    /// Steps every group whose outputs are all idle and that is not backing off. Groups that
    /// wait for their first frame go first, and take it even while their outputs are busy:
    /// a group with its first picture ready is yielded to by the groups it replaces, so it
    /// finds its outputs idle together even when their CRTCs are not in phase.
    pub(super) fn video_service(&mut self, engine: &mut Engine, now: u64) {
        self.retired_prune(engine);
        for b in 0..self.groups.len() {
            let binding = &self.groups[b];
            if binding.live || binding.placements.is_empty() || !binding.backoff.due(now) {
                continue;
            }
            if self.video_group_idle(engine, b) {
                let _ = self.video_step(engine, b, now);
            } else if let Ok(true) = self.video_upload(engine, b) {
                self.groups[b].last_new_ns = now;
            }
        }
        for b in 0..self.groups.len() {
            let binding = &self.groups[b];
            if !binding.live
                || binding.placements.is_empty()
                || !binding.backoff.due(now)
                || !self.video_group_idle(engine, b)
                || self.video_yields(b, now)
            {
                continue;
            }
            let _ = self.video_step(engine, b, now);
        }
        self.video_release_empty(engine);
    }

    /// Whether live group `b` holds back for a new group that has its first frame and wants
    /// one of `b`'s outputs.
    fn video_yields(&self, b: usize, now: u64) -> bool {
        let live = &self.groups[b];
        self.groups.iter().any(|o| {
            !o.live
                && !o.current.is_none()
                && o.backoff.due(now)
                && o.placements.iter().any(|p| live.shows(p.output))
        })
    }

    /// Stops all video; the outputs keep their last frame.
    pub fn video_stop(&mut self, engine: &mut Engine) {
        for binding in &mut self.groups {
            binding.placements.clear();
        }
        self.video_release_empty(engine);
    }

    fn video_group_idle(&self, engine: &Engine, b: usize) -> bool {
        let outputs = &engine.outputs;
        group_idle(self.groups[b].placements.iter().map(|p| p.output), |o| {
            outputs.get(o).is_none_or(|o| o.pending)
        })
    }

    fn retired_prune(&mut self, engine: &mut Engine) {
        if !self.retired.is_empty() {
            let buffers = &engine.buffers;
            self.retired
                .retain(|(id, _)| buffers.get(*id).is_ok_and(|b| b.screen_refs > 0));
        }
    }

    fn video_release_empty(&mut self, engine: &mut Engine) {
        let mut i = 0;
        while i < self.groups.len() {
            if self.groups[i].placements.is_empty() {
                let binding = self.groups.remove(i);
                self.video_binding_release(engine, binding);
            } else {
                i += 1;
            }
        }
    }

    fn video_binding_release(&mut self, engine: &mut Engine, binding: VideoBinding) {
        for buffer in binding.pool.into_iter().chain(binding.imported) {
            // Freed once no CRTC shows it.
            let _ = engine.buffer_release(buffer);
        }
        self.retired.extend(binding.held);
    }

    /// One vblank of group `b`, its outputs idle: take the newest frame and commit it on all
    /// of them, or note why not (once per cause) and back off.
    pub(super) fn video_step(
        &mut self,
        engine: &mut Engine,
        b: usize,
        now: u64,
    ) -> Result<(), StepError> {
        let new = match self.video_upload(engine, b) {
            Ok(new) => new,
            Err((cause, e)) => return Err(self.video_failed_as(engine, b, now, cause, e)),
        };
        if new {
            self.groups[b].last_new_ns = now;
        }
        let binding = &self.groups[b];
        if binding.current.is_none() {
            if !binding.live && now.saturating_sub(binding.bound_ns) > FIRST_FRAME_NS {
                self.video_report(engine, b, Some(VideoCause::NoFirstFrame));
            }
            return Ok(());
        }
        let current = binding.current;
        // The stream's own tags (matrix, range) unless the placement says otherwise; the
        // engine's guess from the height only when the stream tags neither.
        let stream_color = binding.source.color();
        let mut scene = std::mem::take(&mut self.groups[b].scene);
        for (s, p) in scene.iter_mut().zip(&self.groups[b].placements) {
            s.layers[0].buffer = current;
            s.layers[0].color = p.color.or(stream_color);
        }
        let result = engine.present_video(&scene);
        self.groups[b].scene = scene;
        match result {
            // A commit of someone else (a scene from JavaScript) holds a CRTC: next vblank.
            Ok(PresentResult::Queued) => Ok(()),
            Ok(PresentResult::Committed) => {
                if new {
                    engine.video_counters.frames_shown += 1;
                } else {
                    engine.video_counters.repeats += 1;
                }
                let binding = &mut self.groups[b];
                binding.backoff.succeeded();
                if !binding.live {
                    binding.live = true;
                    self.video_take_outputs(b);
                }
                let stalled = now.saturating_sub(self.groups[b].last_new_ns) > STALL_NS;
                if new || stalled || self.groups[b].fault.is_some_and(|c| c.retried()) {
                    self.video_report(engine, b, stalled.then_some(VideoCause::SourceStalled));
                }
                Ok(())
            }
            Err(e) => {
                let cause = match e {
                    KmsError::NoPlane { .. } => VideoCause::NoPlane,
                    KmsError::BadBuffer(_) | KmsError::BufferNotFound(_) => VideoCause::BadFrame,
                    _ => VideoCause::CommitRefused,
                };
                Err(self.video_failed_as(engine, b, now, cause, e))
            }
        }
    }

    fn video_failed_as(
        &mut self,
        engine: &mut Engine,
        b: usize,
        now: u64,
        cause: VideoCause,
        e: KmsError,
    ) -> StepError {
        engine.video_counters.errors += 1;
        let binding = &mut self.groups[b];
        binding.backoff.failed(now);
        if binding.fault != Some(cause) {
            // New cause: worth the text, once.
            let mut detail = e.to_string();
            if let KmsError::CommitRefused { .. } = e {
                detail.push_str("; request: ");
                detail.push_str(&engine.request.describe(|id| engine.prop_label(id)));
            }
            engine.video_error = Some(detail.clone());
            self.groups[b].fault_detail = detail;
        }
        self.video_report(engine, b, Some(cause));
        (cause, e)
    }

    /// Tells each output of group `b` about `now` (an error or that it is fine), once.
    fn video_report(&mut self, engine: &mut Engine, b: usize, now: Option<VideoCause>) {
        let binding = &mut self.groups[b];
        binding.fault = now;
        let events = &mut engine.events;
        let placements = &binding.placements;
        report(&mut binding.reported, now, |slot, transition| {
            if events.len() >= events.capacity() {
                return;
            }
            let output = placements[slot].output;
            events.push(match transition {
                Transition::Error(cause) => EngineEvent::VideoError { output, cause },
                Transition::Recovered(cause) => EngineEvent::VideoRecovered { output, cause },
            });
        });
    }

    /// Group `b` showed its first picture: older groups let go of its outputs.
    fn video_take_outputs(&mut self, b: usize) {
        for other in 0..self.groups.len() {
            if other == b {
                continue;
            }
            let (taken, binding) = if other < b {
                let (left, right) = self.groups.split_at_mut(b);
                (&right[0], &mut left[other])
            } else {
                let (left, right) = self.groups.split_at_mut(other);
                (&left[b], &mut right[0])
            };
            if placements_retain(&mut binding.placements, &mut binding.reported, |p| {
                !taken.shows(p.output)
            }) {
                scene_build(binding);
            }
        }
    }

    /// Binding `b`'s newest decoded frame if it is new: a dma-buf frame the planes take is
    /// imported (cached per surface) and shown as it is; otherwise the frame's bytes are
    /// copied into a free pool buffer (and converted further if no plane takes NV12).
    fn video_upload(&mut self, engine: &mut Engine, b: usize) -> Result<bool, StepError> {
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
        let size = source.with_newest(|_, w, h, seq, _| (w, h, seq));
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
        let written = source
            .take_newest(|data, _, _, _, _| buffers.dumb_write(target, data).map(|()| data.len()));
        let Some(written) = written else {
            return Ok(false);
        };
        self.video_uploaded(engine, b, target, sequence, written.map_err(bad)?);
        Ok(true)
    }

    fn video_copy(
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

    fn video_uploaded(
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
    fn video_pool_target(
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

    /// Whether every output of group `b` has a plane that takes `prime`'s fourcc and modifier
    /// (IN_FORMATS). Decided once per format, modifier and size; when not, the decoder is asked
    /// for frames with a CPU view, once, and the outputs are told.
    fn video_negotiate(&mut self, engine: &mut Engine, b: usize, prime: &PrimeFrame) -> bool {
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
    fn video_format_fallback(&mut self, engine: &mut Engine, b: usize, prime: &PrimeFrame) {
        let modifier = engine.fault_modifier.unwrap_or(prime.modifier);
        if let Some(n) = self.groups[b].negotiation.as_mut() {
            n.direct = false;
        }
        let first = &self.groups[b].placements[0];
        let reason = format!(
            "{}: no plane takes {} with modifier {:#x}; decoding in software",
            first.connector,
            super::formats::fourcc_name(prime.format),
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
    fn video_imports_drop(&mut self, engine: &mut Engine, b: usize, keep: usize) {
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

    fn video_import(
        &mut self,
        engine: &mut Engine,
        b: usize,
        prime: &Arc<PrimeFrame>,
        sequence: u64,
    ) -> KmsResult<()> {
        let (buffer, cached) = prime
            .with_layout(|objects, planes| {
                let desc = DmaBufDesc {
                    width: prime.width,
                    height: prime.height,
                    format: Fourcc(prime.format),
                    modifier: Modifier(prime.modifier),
                    objects,
                    planes,
                };
                engine.buffers.dmabuf_import(&engine.card, &desc)
            })
            .inspect_err(|e| {
                if matches!(e, KmsError::Ioctl(super::buffer::REFUSED_BEFORE, _)) {
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

/// Keeps the placements (and their reported causes, kept parallel) that `keep` accepts, in
/// order. Returns whether any went.
fn placements_retain(
    placements: &mut Vec<VideoPlacement>,
    reported: &mut Vec<Option<VideoCause>>,
    mut keep: impl FnMut(&mut VideoPlacement) -> bool,
) -> bool {
    let before = placements.len();
    let mut kept = 0;
    for i in 0..placements.len() {
        if keep(&mut placements[i]) {
            placements.swap(kept, i);
            reported.swap(kept, i);
            kept += 1;
        }
    }
    placements.truncate(kept);
    reported.truncate(kept);
    kept != before
}

/// The group's scene: one layer per output, buffer ids filled in per frame.
fn scene_build(binding: &mut VideoBinding) {
    binding.scene.clear();
    for p in &binding.placements {
        binding.scene.push(SceneOutput {
            output: p.output,
            layers: vec![SceneLayer {
                buffer: BufferId::NONE,
                src: p.src,
                dst: p.dst,
                rotation: p.rotation,
                color: p.color,
            }],
        });
    }
}

impl Video {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Forgets every group and claim, at close (the engine frees the buffers itself).
    pub fn clear(&mut self) {
        self.groups.clear();
        self.retired.clear();
    }

    /// The text of the fault `cause` of a video group on `output` (formatted once per cause;
    /// empty for causes without more to say).
    pub fn fault_detail(&self, output: usize, cause: VideoCause) -> Option<&str> {
        self.groups
            .iter()
            .filter(|b| b.shows(output) && b.fault == Some(cause))
            .map(|b| b.fault_detail.as_str())
            .next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(output: usize) -> VideoPlacement {
        VideoPlacement {
            output,
            connector: format!("HDMI-A-{}", output + 1),
            src: None,
            dst: None,
            rotation: 0,
            color: None,
        }
    }

    #[test]
    fn a_group_taking_outputs_leaves_the_others_and_their_reports_in_step() {
        // An older group on outputs 0, 1, 2; a new one showed its first picture on 1.
        let mut placements = vec![placement(0), placement(1), placement(2)];
        let mut reported = vec![
            None,
            Some(VideoCause::SourceStalled),
            Some(VideoCause::NoPlane),
        ];
        let taken = [1usize];
        assert!(placements_retain(&mut placements, &mut reported, |p| {
            !taken.contains(&p.output)
        }));
        let outputs: Vec<usize> = placements.iter().map(|p| p.output).collect();
        assert_eq!(outputs, vec![0, 2]);
        assert_eq!(reported, vec![None, Some(VideoCause::NoPlane)]);
        assert!(!placements_retain(&mut placements, &mut reported, |_| true));
    }

    #[test]
    fn outputs_follow_their_connectors_after_a_reconfiguration() {
        // Output 0 was unplugged: the others moved down one index.
        let mut placements = vec![placement(0), placement(1), placement(2)];
        let mut reported = vec![Some(VideoCause::CommitRefused), None, None];
        let now = ["HDMI-A-2", "HDMI-A-3"];
        placements_retain(&mut placements, &mut reported, |p| {
            match now.iter().position(|c| *c == p.connector) {
                Some(i) => {
                    p.output = i;
                    true
                }
                None => false,
            }
        });
        let moved: Vec<(usize, &str)> = placements
            .iter()
            .map(|p| (p.output, p.connector.as_str()))
            .collect();
        assert_eq!(moved, vec![(0, "HDMI-A-2"), (1, "HDMI-A-3")]);
        assert_eq!(reported, vec![None, None]);
    }
}
