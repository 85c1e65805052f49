//! Decoded video on outputs, driven by the presentation thread. Outputs showing the same
//! source form a group: at every vblank of the group the newest decoded frame is uploaded (or
//! imported) ONCE and placed on each of its outputs in one atomic commit, so they stay
//! frame-locked. Groups are independent: each commits when its own CRTCs are idle (see
//! pacing.rs), and a source without frames or a refused commit stops only its own outputs.
//! No JavaScript runs per frame. Video is a client of the engine: it gets its turns from
//! engine/clients.rs and works through the engine's API (scenes, buffers, events).

mod import;
mod step;
mod upload;

use std::sync::Arc;

use crate::dmabuf::{FrameFeed, PrimeFrame};

use super::engine::{monotonic_ns, Engine, SceneLayer, SceneOutput};
use super::error::{KmsError, KmsResult};
use super::formats::YuvColor;
use super::ids::{BufferId, Rect};
use super::pacing::group_idle;
use super::video_health::{Backoff, VideoCause};

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
/// One group: a source and the outputs showing it.
pub struct VideoBinding {
    /// The decode manager's consumer name, for the outputs' play records.
    consumer: Arc<str>,
    /// The source's frames (a decoder's handle, handed over by the napi glue).
    source: Arc<dyn FrameFeed>,
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
    negotiation: Option<import::Negotiation>,
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
        consumer: Arc<str>,
        source: Arc<dyn FrameFeed>,
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
            consumer,
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
            for p in binding.placements.drain(..) {
                if let Some(output) = engine.outputs.get_mut(p.output) {
                    output.play_incoming = None;
                    output.record.play_stopped();
                }
            }
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
