//! Flips: a completed page flip frees what left the screen and lets whoever waits on that
//! output commit next (the flip loop, a queued scene, each video group on its own CRTCs).

use super::super::error::{KmsError, KmsResult};
use super::super::ids::BufferId;
use super::scene::{SceneLayer, SceneOutput};
use super::{monotonic_ns, Engine, EngineEvent};

/// A native-paced sequence of frames: each output cycles through its buffers, one step
/// per completed flip on every CRTC, with no JavaScript in between.
pub struct FlipLoop {
    pub outputs: Vec<(usize, Vec<BufferId>)>,
    pub frame: u32,
    pub frames: u32,
}

impl Engine {
    pub fn flip_loop_start(&mut self, flip_loop: FlipLoop) -> KmsResult<()> {
        for (output, buffers) in &flip_loop.outputs {
            if *output >= self.outputs.len() || buffers.is_empty() {
                return Err(KmsError::BadBuffer(
                    "a flip loop needs configured outputs and at least one buffer each".into(),
                ));
            }
            for &b in buffers {
                self.buffers.get(b)?;
            }
        }
        self.queued = None;
        self.loop_scene = flip_loop
            .outputs
            .iter()
            .map(|(output, buffers)| SceneOutput {
                output: *output,
                layers: vec![SceneLayer {
                    buffer: buffers[0],
                    src: None,
                    dst: None,
                    rotation: 0,
                    color: None,
                }],
            })
            .collect();
        self.flip_loop = Some(flip_loop);
        if self.outputs.iter().all(|o| !o.pending) {
            self.flip_loop_step()?;
        }
        Ok(())
    }

    fn flip_loop_step(&mut self) -> KmsResult<()> {
        let Some(l) = self.flip_loop.as_mut() else {
            return Ok(());
        };
        if l.frame >= l.frames {
            let frames = l.frames;
            self.flip_loop = None;
            self.events.push(EngineEvent::LoopDone { frames });
            return Ok(());
        }
        let frame = l.frame as usize;
        l.frame += 1;
        for (scene, (_, buffers)) in self.loop_scene.iter_mut().zip(&l.outputs) {
            scene.layers[0].buffer = buffers[frame % buffers.len()];
        }
        let scene = std::mem::take(&mut self.loop_scene);
        let result = self.present_now(&scene).map(|_| ());
        self.loop_scene = scene;
        result
    }

    /// A page flip completed on `crtc`: account for it, free what left the screen, and
    /// commit the next scene once every CRTC is idle.
    pub fn flip_complete(&mut self, crtc: u32, sequence: u32, timestamp_ns: u64) {
        let Some(index) = self.outputs.iter().position(|o| o.crtc_id == crtc) else {
            return;
        };
        let output = &mut self.outputs[index];
        output.pending = false;
        let stats = &mut output.stats;
        if stats.flips > 0 && sequence > stats.last_sequence {
            let step = sequence - stats.last_sequence;
            stats.max_sequence_step = stats.max_sequence_step.max(step);
            if step == 2 {
                stats.late_one += 1;
            } else if step > 2 {
                stats.late_more += 1;
            }
        }
        stats.flips += 1;
        stats.last_sequence = sequence;
        stats.last_timestamp_ns = timestamp_ns;
        let show = output.play_incoming.take();
        output.record.play_flipped(show, timestamp_ns);
        // What was shown leaves the screen; what was in flight is shown. Swapped in place.
        std::mem::swap(&mut output.shown, &mut output.incoming);
        for i in 0..self.outputs[index].incoming.len() {
            let b = self.outputs[index].incoming[i];
            if !b.is_none() {
                self.buffers.screen_unref(&self.card, b);
            }
        }
        self.outputs[index].incoming.fill(BufferId::NONE);
        if self.events.len() < self.events.capacity() {
            self.events.push(EngineEvent::Flip {
                output: index,
                crtc,
                sequence,
                timestamp_ns,
            });
        }
        // Each user of the screen goes on once ITS outputs are idle: the flip loop and a queued
        // scene from JavaScript, and every video group on its own (pacing.rs). One that waited
        // for all outputs would hold every screen to the slowest or latest one.
        let mark = monotonic_ns();
        if self.flip_loop.is_some() {
            if self.outputs.iter().all(|o| !o.pending) {
                let _ = self.flip_loop_step();
            }
        } else {
            let queued_idle = self.queued.as_ref().is_some_and(|scene| {
                scene
                    .iter()
                    .all(|s| self.outputs.get(s.output).is_some_and(|o| !o.pending))
            });
            if queued_idle {
                if let Some(scene) = self.queued.take() {
                    let _ = self.present_now(&scene);
                }
            }
            if !self.video.is_empty() {
                // Commit every vblank, new frame or not, so the flip events keep the clock.
                self.video_service(mark);
            }
        }
        // How long after ITS last flip each output's next commit went in: the part of lateness
        // that is ours, as opposed to a device (or an emulator) that flips late.
        for output in self.outputs.iter_mut().filter(|o| o.last_commit_ns >= mark) {
            let stats = &mut output.stats;
            let delay = output
                .last_commit_ns
                .saturating_sub(stats.last_timestamp_ns);
            stats.max_commit_delay_ns = stats.max_commit_delay_ns.max(delay);
            let refresh = u64::from(output.mode.vrefresh().max(1));
            if delay > 1_000_000_000 / refresh {
                stats.late_commits += 1;
            }
        }
    }
}
