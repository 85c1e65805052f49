//! The decoder thread's loop: read a packet, decode, queue frames ahead of their time, loop
//! at the end (or hold a still image), and stop on request or on a read that fails. Where
//! the hardware path gives up it hands over to `session_fall_back`.

use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ffmpeg::codec::packet::Mut as _;
use ffmpeg_next as ffmpeg;

use super::decoder::{Event, AHEAD, BACKPRESSURE_MAX, EXPORT_FRAMES};
use super::error::{DecodeError, FailureCode, StreamFailure};
use super::frame_convert::frame_recycle;
use super::frame_pace::Clock;
use super::frame_ring::Shared;
use super::index::{media_identity, KeyframeIndex};
use super::io;
use super::key::SourceKey;
use super::policy::SourceKind;
use super::session_fall_back::HW_ERRORS_FATAL;
use super::session_open::{HwPath, Session};

/// The body of a decoder's thread: opens the source, tells `Decoder::start` how that went,
/// runs until stopped, and leaves the reason it ended early where status can read it.
pub(super) fn decoder_run(key: SourceKey, shared: Arc<Shared>, events: SyncSender<Event>) {
    let mut session = match Session::open(&key, &shared.io) {
        Ok(session) => session,
        Err(e) => {
            let _ = events.try_send(Event::Failed(e));
            return;
        }
    };
    // Before answering, so a status right after acquire() already tells.
    *shared.path.lock().unwrap_or_else(|p| p.into_inner()) =
        (session.hw.kind(), session.fallback.clone());
    if let Some(index) = &session.index {
        shared.counters.index_state.store(1, Ordering::Relaxed);
        shared
            .counters
            .index_keyframes
            .store(index.keyframes.len() as u64, Ordering::Relaxed);
    }
    let _ = events.try_send(Event::Opened(session.info.clone()));
    session.first_picture = Some(events.clone());
    // Not real-time: this thread demuxes, runs lavfi graphs and (for codecs without frame
    // threads) decodes; at SCHED_FIFO that work starved a whole emulated guest. Frames decoded
    // ahead cover its scheduling jitter instead.
    if let Err(failure) = session.run(&shared) {
        if session.first_picture.take().is_some() {
            let _ = events.try_send(Event::Failed(DecodeError::NoPicture {
                source: key.source.clone(),
                reason: failure.reason.clone(),
            }));
        }
        *shared.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(failure);
    }
}

impl Session {
    /// Why reading stopped, as status says it: a stall when the deadline or `rw_timeout`
    /// cut the read short, else a read error.
    fn read_failure(&self, error: ffmpeg::Error) -> StreamFailure {
        let stalled = self.guard().expired()
            || matches!(error, ffmpeg::Error::Other { errno } if errno == libc::ETIMEDOUT);
        if stalled {
            StreamFailure::new(
                FailureCode::Stalled,
                format!(
                    "{}: stalled: no data within {} s ({error})",
                    self.source,
                    io::RW_TIMEOUT.as_secs()
                ),
            )
        } else {
            StreamFailure::new(
                FailureCode::Read,
                format!("{}: read failed: {error}", self.source),
            )
        }
    }

    /// Decodes until told to stop. Returns why it stopped early, if it did.
    fn run(&mut self, shared: &Shared) -> Result<(), StreamFailure> {
        let mut packet = ffmpeg::Packet::empty();
        let mut clock = Clock::default();
        while !shared.io.stop.load(Ordering::Relaxed) {
            // av_read_frame does not release what the packet held: without this every packet
            // of the stream would leak (found by bench:soak, gigabytes within minutes).
            unsafe { ffmpeg::ffi::av_packet_unref(packet.as_mut_ptr()) };
            self.backpressure(&mut clock, shared)?;
            self.guard().arm(io::READ_DEADLINE);
            let read = packet.read(&mut self.input);
            self.guard().disarm();
            if shared.io.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            match read {
                Ok(()) => {
                    if packet.stream() != self.stream {
                        continue;
                    }
                    if self.index.is_none() && packet.is_key() {
                        if let Some(pts) = packet.pts() {
                            self.keyframes_seen.push((pts, packet.position() as i64));
                        }
                    }
                    // A damaged packet is skipped, not fatal: the next keyframe recovers. On the
                    // hardware, errors in a row mean the hardware gave up on this stream.
                    match self.decoder.send_packet(&packet) {
                        Err(e) if matches!(self.hw, HwPath::Vaapi(_)) => {
                            self.hw_errors += 1;
                            if self.hw_errors >= HW_ERRORS_FATAL {
                                self.fallback_pending = Some(format!(
                                    "VAAPI failed {} times in a row: {e}",
                                    self.hw_errors
                                ));
                            }
                        }
                        _ => self.hw_errors = 0,
                    }
                    self.drain(&mut clock, shared)?;
                    self.cpu_request_take(shared);
                    if let Some(reason) = self.fallback_pending.take() {
                        self.fall_back(reason, shared)?;
                    }
                }
                Err(ffmpeg::Error::Eof) => {
                    // Demuxers report a failed read (a timeout, a reset) as the end.
                    if let Some(rc) = io::io_error(&self.input) {
                        return Err(self.read_failure(ffmpeg::Error::from(rc)));
                    }
                    let _ = self.decoder.send_eof();
                    self.drain(&mut clock, shared)?;
                    self.index_save(shared);
                    let published = shared.counters.frames.load(Ordering::Relaxed);
                    if published + self.ahead.len() as u64 == 0 {
                        return Err(StreamFailure::new(
                            FailureCode::NoPicture,
                            format!(
                                "{}: the stream ended without a decodable frame",
                                self.source
                            ),
                        ));
                    }
                    let loops = shared.counters.loops.load(Ordering::Relaxed);
                    if loops == 0 && self.pass_frames + self.ahead.len() as u64 == 1 {
                        self.pace(&mut clock, shared, 0)?;
                        // A still image: its one frame stays on show; decoding it again
                        // 25 times a second would only burn CPU and disk. An output that
                        // cannot show its dma-buf gets it decoded once more, in software.
                        while !shared.io.stop.load(Ordering::Relaxed) {
                            self.cpu_request_take(shared);
                            if let Some(reason) = self.fallback_pending.take() {
                                // The one frame is shown again, now in software: from the
                                // start, not after it.
                                self.last_pts_us = None;
                                self.fall_back(reason, shared)?;
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        continue;
                    }
                    if shared.hold_at_end.load(Ordering::Relaxed) {
                        self.hold_last_frame(&mut clock, shared)?;
                        continue;
                    }
                    // Loop: back to the start offset, with the timeline running on.
                    self.rewind()?;
                    self.decoder.flush();
                    clock.loop_end(self.period_us);
                    // For viewers the pass ends with its last frame, still in the queue of
                    // frames decoded ahead: a playlist advancing on `loops` now would cut it.
                    let last =
                        shared.counters.frames.load(Ordering::Relaxed) + self.ahead.len() as u64;
                    self.loop_ends.push_back(last);
                    self.loop_ends_count(shared);
                }
                Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(self.read_failure(e)),
            }
        }
        Ok(())
    }

    /// On the VAAPI path every frame handed out holds a surface of the decoder's pool until
    /// outputs let it go. When the frames out and the frames decoded ahead fill the room the
    /// pool was sized for, decoding waits (publishing what it has at its time) instead of
    /// running the pool dry, which the driver answers with errors and the decoder with a
    /// fallback to software.
    /// The end of a file that does not start over (`hold_at_end`): its last frames go out on
    /// time, the end is counted once the last one is published (a playlist moves on at that
    /// count), and that frame stays on show until the decoder is stopped. Looping here would
    /// put the file's first frame on screen for the vblanks before the next item takes over.
    fn hold_last_frame(&mut self, clock: &mut Clock, shared: &Shared) -> Result<(), StreamFailure> {
        self.pace(clock, shared, 0)?;
        self.loop_ends
            .push_back(shared.counters.frames.load(Ordering::Relaxed));
        self.loop_ends_count(shared);
        while !shared.io.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn backpressure(&mut self, clock: &mut Clock, shared: &Shared) -> Result<(), StreamFailure> {
        if !matches!(self.hw, HwPath::Vaapi(_)) {
            return Ok(());
        }
        let full = |s: &Session| {
            shared.claims.load(Ordering::Relaxed) + s.ahead.len() + 1 >= EXPORT_FRAMES
        };
        if !full(self) {
            return Ok(());
        }
        self.pace(clock, shared, 0)?;
        let until = Instant::now() + BACKPRESSURE_MAX;
        while full(self) && Instant::now() < until && !shared.io.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// After the first complete pass from the beginning: keep what it learned beside the file.
    fn index_save(&mut self, shared: &Shared) {
        if self.index.is_some() || self.start_us != 0 || self.keyframes_seen.is_empty() {
            return;
        }
        let Some((media_size, media_mtime_ns)) = media_identity(&self.source) else {
            return;
        };
        let index = KeyframeIndex {
            media_size,
            media_mtime_ns,
            stream: self.stream as u32,
            time_base: self.time_base_raw,
            keyframes: std::mem::take(&mut self.keyframes_seen),
        };
        // An unwritable media directory only means no index next time.
        if index.save(&self.source).is_ok() {
            shared.counters.index_state.store(2, Ordering::Relaxed);
            shared
                .counters
                .index_keyframes
                .store(index.keyframes.len() as u64, Ordering::Relaxed);
        }
        self.index = Some(index);
    }

    /// Takes every frame the decoder has ready into the queue of frames decoded ahead, and
    /// publishes queued frames as they fall due.
    fn drain(&mut self, clock: &mut Clock, shared: &Shared) -> Result<(), StreamFailure> {
        loop {
            let mut frame = self.spare.pop().unwrap_or_else(ffmpeg::frame::Video::empty);
            if self.decoder.receive_frame(&mut frame).is_err() {
                self.spare.push(frame);
                return Ok(());
            }
            if shared.io.stop.load(Ordering::Relaxed) {
                self.spare.push(frame);
                return Ok(());
            }
            let pts = frame
                .timestamp()
                .map(|t| (t as f64 * self.time_base * 1_000_000.0) as i64);
            // Decoding starts at the keyframe before the start offset: frames before it are
            // needed as references but are not shown. After a fallback, frames up to the last
            // one shown are skipped the same way.
            let before_start = pts.is_some_and(|p| p < self.start_us);
            let shown_already = match (pts, self.skip_until_us) {
                (Some(p), Some(until)) if p <= until => true,
                (_, Some(_)) => {
                    self.skip_until_us = None;
                    false
                }
                _ => false,
            };
            if before_start || shown_already {
                frame_recycle(&mut frame);
                self.spare.push(frame);
                continue;
            }
            let timeline = clock.timeline_for(pts, self.period_us);
            self.ahead.push_back((frame, pts, timeline));
            // A drawn picture has no decoder whose hiccups frames ahead would cover, and each
            // of its frames is a whole raw packet (3 MB at 1080p): one is enough.
            let keep = if self.kind == SourceKind::Pattern {
                1
            } else {
                AHEAD
            };
            self.pace(clock, shared, keep)?;
            if self.fallback_pending.is_some() {
                // Resume in software before decoding further on a path that failed; frames
                // decoded ahead on that path are dropped and decoded again.
                while let Some((mut f, _, _)) = self.ahead.pop_front() {
                    frame_recycle(&mut f);
                    self.spare.push(f);
                }
                return Ok(());
            }
        }
    }
}
