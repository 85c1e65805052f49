//! When each decoded frame is published: stream timestamps mapped onto the monotonic clock,
//! a timeline that keeps running forward across loops (outputs never see time jump back),
//! and the queue of frames decoded ahead that covers the decode thread's scheduling jitter.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::decoder::DecoderCounters;
use super::error::{FailureCode, StreamFailure};
use super::frame_convert::frame_recycle;
use super::frame_ring::Shared;
use super::session_open::Session;

/// Maps stream timestamps onto the monotonic clock, continuing across loops.
#[derive(Default)]
pub(super) struct Clock {
    /// Wall time and timeline position of the first frame.
    origin: Option<(Instant, i64)>,
    /// Added to pts after each loop, so the timeline keeps running forward.
    loop_offset_us: i64,
    /// pts of the first and the latest frame of the current pass.
    first_pts_us: Option<i64>,
    last_pts_us: i64,
    timeline_us: i64,
    last_frame_at: Option<Instant>,
}

impl Clock {
    /// The frame's place on the timeline (called once per frame, in decode order).
    pub(super) fn timeline_for(&mut self, pts_us: Option<i64>, period_us: i64) -> i64 {
        let pts = pts_us.unwrap_or(self.last_pts_us + period_us);
        let first = *self.first_pts_us.get_or_insert(pts);
        self.last_pts_us = pts;
        self.timeline_us = self.loop_offset_us + (pts - first);
        self.timeline_us
    }

    /// When the frame at `timeline` is due; the first frame asked about is due now.
    pub(super) fn due_of(&mut self, timeline: i64) -> Instant {
        let (at, base) = *self.origin.get_or_insert((Instant::now(), timeline));
        let ahead = timeline - base;
        if ahead <= 0 {
            at
        } else {
            at + Duration::from_micros(ahead as u64)
        }
    }

    /// The frame at `timeline` went on show at `at`: time the next ones from there.
    pub(super) fn restart_at(&mut self, at: Instant, timeline: i64) {
        self.origin = Some((at, timeline));
    }

    pub(super) fn loop_end(&mut self, period_us: i64) {
        if let Some(first) = self.first_pts_us.take() {
            self.loop_offset_us += self.last_pts_us - first + period_us;
        }
    }

    pub(super) fn interval(&mut self, counters: &DecoderCounters) {
        let now = Instant::now();
        if let Some(previous) = self.last_frame_at.replace(now) {
            let sample = (now - previous).as_micros() as u64;
            let old = counters.interval_us.load(Ordering::Relaxed);
            let smoothed = if old == 0 {
                sample
            } else {
                (old * 7 + sample) / 8
            };
            counters.interval_us.store(smoothed, Ordering::Relaxed);
        }
    }
}

impl Session {
    /// Counts a pass as looped once its last frame is published: `loops` is what a playlist
    /// advances on, and an item must show to its last frame.
    pub(super) fn loop_ends_count(&mut self, shared: &Shared) {
        let published = shared.counters.frames.load(Ordering::Relaxed);
        while self.loop_ends.front().is_some_and(|&end| end <= published) {
            self.loop_ends.pop_front();
            shared.counters.loops.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Publishes queued frames whose time has come. With fewer than `keep` frames queued it
    /// returns as soon as the oldest is not yet due (so the caller decodes more); with the
    /// queue full it waits for the oldest's time.
    pub(super) fn pace(
        &mut self,
        clock: &mut Clock,
        shared: &Shared,
        keep: usize,
    ) -> Result<(), StreamFailure> {
        while let Some(&(_, pts, timeline)) = self.ahead.front() {
            let due = clock.due_of(timeline);
            let now = Instant::now();
            if now < due {
                if self.ahead.len() < keep {
                    return Ok(());
                }
                // Short naps, so a stop request is never kept waiting.
                while Instant::now() < due && !shared.io.stop.load(Ordering::Relaxed) {
                    std::thread::sleep((due - Instant::now()).min(Duration::from_millis(20)));
                }
                if shared.io.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
            } else {
                if now > due + Duration::from_millis(4) {
                    shared.counters.delayed.fetch_add(1, Ordering::Relaxed);
                }
                if now > due + Duration::from_micros(self.period_us as u64) {
                    shared.counters.late.fetch_add(1, Ordering::Relaxed);
                }
            }
            let (mut frame, _, _) = self.ahead.pop_front().expect("front exists");
            let published = self.publish(&frame, timeline, shared);
            frame_recycle(&mut frame);
            self.spare.push(frame);
            published.map_err(|e| StreamFailure::new(FailureCode::Codec, e))?;
            self.loop_ends_count(shared);
            if pts.is_some() {
                self.last_pts_us = pts;
            }
            clock.interval(&shared.counters);
            if self.fallback_pending.is_some() {
                return Ok(());
            }
            if shared.hold.load(Ordering::Relaxed) {
                // Prerolled: wait with the first frame ready until an output takes it, then
                // time the following frames from that moment.
                while shared.hold.load(Ordering::Relaxed) && !shared.io.stop.load(Ordering::Relaxed)
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                clock.restart_at(Instant::now(), timeline);
            }
        }
        Ok(())
    }
}
