//! One vblank of a group: the newest frame committed on all its outputs, or why not, told
//! once per output and cause.

use super::super::engine::{Engine, EngineEvent, PresentResult};
use super::super::error::KmsError;
use super::super::video_health::{report, Transition, VideoCause, FIRST_FRAME_NS, STALL_NS};
use super::{placements_retain, scene_build, StepError, Video};
use crate::play_record::{PlayMark, PlayShow};
use std::sync::Arc;

impl Video {
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
                self.video_play_mark(engine, b, new);
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

    /// Notes on each output of group `b` what its commit in flight shows, for the play
    /// record its flip completes (a new frame's pass asked of the source once, not per output).
    fn video_play_mark(&self, engine: &mut Engine, b: usize, new: bool) {
        let binding = &self.groups[b];
        let show = if new {
            PlayShow::New(PlayMark {
                consumer: Arc::clone(&binding.consumer),
                sequence: binding.shown_sequence,
                pass: binding.source.pass_of(binding.shown_sequence),
            })
        } else {
            PlayShow::Repeat
        };
        for p in &binding.placements {
            if let Some(output) = engine.outputs.get_mut(p.output) {
                output.play_incoming = Some(show.clone());
            }
        }
    }

    pub(super) fn video_failed_as(
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
    pub(super) fn video_report(&mut self, engine: &mut Engine, b: usize, now: Option<VideoCause>) {
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
    pub(super) fn video_take_outputs(&mut self, b: usize) {
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
}
