//! One decoder: a thread that reads its source once, decodes at the pace of the stream's
//! timestamps against the monotonic clock, and keeps the newest frames in a small ring of
//! NV12 buffers that every consumer of the source reads. Looping at the end continues the
//! timeline, so outputs never see time jump back.
//!
//! Frames come out one of three ways: VAAPI surfaces exported as DRM PRIME (zero copy), software
//! frames written into udmabuf exports (the same journey without a GPU), or software frames in
//! the NV12 ring. When the hardware path fails mid-stream the decoder reopens in software and
//! continues after the last frame it delivered.
//!
//! This file is the handle the registry holds (start, status, stop) and the sizes the rest is
//! built around. The thread's side is split by concept: `session_open` (input, stream,
//! codec), `session_run` (the read/decode loop), `session_reopen` (looping), `session_fall_back`
//! (hardware to software), `frame_pace` (the clock and the frames decoded ahead),
//! `frame_publish` (into the ring), `frame_convert` (NV12 on the CPU) and `frame_ring` (what
//! the thread shares with its readers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::error::{DecodeError, StreamFailure};
pub use super::frame_ring::{FrameRing, FrameSource};
use super::frame_ring::{Shared, RING};
use super::io;
use super::key::SourceKey;
use super::session_run::decoder_run;

/// How long opening a source may take before the caller hears it failed: the open's own
/// deadline (the interrupt callback ends it) and a margin for the thread to answer.
const OPEN_TIMEOUT: Duration = Duration::from_secs(io::OPEN_DEADLINE.as_secs() + 2);
/// A prerolled acquire resolves once the first frame is decoded, or fails after this long
/// (ERR_DECODE_NO_PICTURE): a source that opens but yields no picture is never switched to.
pub const PREROLL_DEADLINE: Duration = Duration::from_secs(10);
/// How long a decoder whose frames are all still claimed (an export pool or the VAAPI
/// surfaces it may hand out) waits for outputs to let one go before it drops a frame.
pub(super) const BACKPRESSURE_MAX: Duration = Duration::from_secs(1);
/// Frames decoded ahead of their time. The pacing thread runs real-time but FFmpeg's decode
/// workers do not: on a busy machine a frame can take longer than its period to decode, and
/// without frames in hand the next two would then be published within one vblank (a drop).
pub(super) const AHEAD: usize = 4;
/// Exported frames beyond the decoder's own needs: the ring's slots, the frames decoded ahead,
/// and what the engine may hold (on screen, in flight, queued). All outputs of a source show
/// the same frame, so this does not grow with the number of outputs.
pub const EXPORT_FRAMES: usize = RING + AHEAD + ENGINE_HOLD;
/// Frames the engine may hold at once: on screen, in a commit in flight, queued, and the one
/// it is importing.
const ENGINE_HOLD: usize = 4;

/// What the decoder learned when it opened the source.
#[derive(Clone, Debug, Default)]
pub struct StreamInfo {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Nominal frame rate of the stream.
    pub frame_rate: f64,
    /// Sample (pixel) aspect ratio, numerator and denominator; (0, 1) when unknown (square).
    pub sar: (u32, u32),
    /// Degrees the picture is turned clockwise to stand upright (display matrix); 0, 90, 180, 270.
    pub rotation: u32,
}

/// Counters read by status calls; written only by the decoder thread.
#[derive(Default)]
pub struct DecoderCounters {
    pub frames: AtomicU64,
    /// Frames decoded later than one frame period after they were due.
    pub late: AtomicU64,
    /// Frames published more than 4 ms after they were due: the machine held the (real-time)
    /// pacing thread or the decode up. Lets a drop be told from an engine fault.
    pub delayed: AtomicU64,
    pub loops: AtomicU64,
    /// Bytes the CPU copied for the newest frame (0 on a zero-copy path).
    pub bytes_copied_last: AtomicU64,
    /// Smoothed time between frames, in microseconds.
    pub interval_us: AtomicU64,
    /// Keyframe index: 0 none, 1 loaded from beside the file, 2 built and saved by this decoder.
    pub index_state: AtomicU64,
    pub index_keyframes: AtomicU64,
    /// Frames delivered as dma-bufs (VAAPI or export pool).
    pub exported: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HwPathKind {
    Vaapi,
    Dmabuf,
    Software,
}

impl HwPathKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            HwPathKind::Vaapi => "vaapi",
            HwPathKind::Dmabuf => "dmabuf",
            HwPathKind::Software => "software",
        }
    }
}

pub struct Decoder {
    pub id: u32,
    pub key: SourceKey,
    pub info: StreamInfo,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Decoder {
    /// Opens `key.source` on a new thread and returns once it is decoding, or with the reason
    /// it cannot.
    pub fn start(id: u32, key: SourceKey, preroll: bool) -> Result<Decoder, DecodeError> {
        let shared = Arc::new(Shared::new(preroll));
        // Room for both messages, so the thread never blocks on a caller that gave up.
        let (events_tx, events_rx) = sync_channel(2);
        let thread_key = key.clone();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("multihead-decode-{id}"))
            .spawn(move || decoder_run(thread_key, thread_shared, events_tx))
            .map_err(|e| DecodeError::Open {
                source: key.source.clone(),
                reason: format!("cannot start a decoder thread: {e}"),
            })?;
        let mut decoder = Decoder {
            id,
            key,
            info: StreamInfo::default(),
            shared,
            thread: Some(thread),
        };
        let source = decoder.key.source.clone();
        match events_rx.recv_timeout(OPEN_TIMEOUT) {
            Ok(Event::Opened(info)) => decoder.info = info,
            Ok(Event::Failed(e)) => return Err(e),
            Ok(Event::Picture) | Err(_) => {
                return Err(DecodeError::Open {
                    source,
                    reason: format!("no answer within {} s", OPEN_TIMEOUT.as_secs()),
                })
            }
        }
        if !preroll {
            return Ok(decoder);
        }
        // Dropping the decoder on the way out stops its thread (the interrupt callback ends
        // any read in progress) and frees what it held: no registry entry is made.
        match events_rx.recv_timeout(PREROLL_DEADLINE) {
            Ok(Event::Picture) => Ok(decoder),
            Ok(Event::Failed(e)) => Err(e),
            Ok(Event::Opened(_)) | Err(RecvTimeoutError::Disconnected) => {
                Err(DecodeError::NoPicture {
                    source,
                    reason: decoder
                        .failure()
                        .map_or_else(|| "the decoder stopped".to_owned(), |f| f.reason),
                })
            }
            Err(RecvTimeoutError::Timeout) => Err(DecodeError::NoPicture {
                source,
                reason: format!("no frame decoded within {} s", PREROLL_DEADLINE.as_secs()),
            }),
        }
    }

    /// At the end of the file, keep the last frame instead of starting over (see
    /// `DecodeRequest::hold_at_end`).
    pub fn hold_at_end_set(&self, on: bool) {
        self.shared.hold_at_end.store(on, Ordering::Relaxed);
    }

    pub fn counters(&self) -> &DecoderCounters {
        &self.shared.counters
    }

    pub fn failure(&self) -> Option<StreamFailure> {
        self.shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The path frames take ("vaapi", "dmabuf", "software") and why it is not the hardware one.
    pub fn path(&self) -> (HwPathKind, Option<String>) {
        self.shared
            .path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Prerolled and waiting for an output to take its first frame.
    pub fn held(&self) -> bool {
        self.shared.hold.load(Ordering::Relaxed)
    }

    /// Frames decoded but not yet superseded: 0 or 1 with the newest-frame ring.
    pub fn queue_depth(&self) -> u32 {
        let ring = self.shared.ring.lock().unwrap_or_else(|p| p.into_inner());
        u32::from(ring.newest.is_some())
    }

    /// Runs `f` on the newest frame (NV12 bytes, width, height, sequence, pts µs).
    pub fn with_newest<R>(&self, f: impl FnOnce(&[u8], u32, u32, u64, i64) -> R) -> Option<R> {
        self.shared.newest(f)
    }
}

impl Decoder {
    pub fn source(&self) -> FrameSource {
        FrameSource::of(Arc::clone(&self.shared))
    }

    /// Tells the thread to stop without waiting for it: any FFmpeg read in progress returns
    /// at its next interrupt check. Dropping the decoder then joins a thread that is ending.
    pub fn stop(&self) {
        self.shared.io.stop.store(true, Ordering::Relaxed);
    }

    /// Told to stop (its thread may still be ending).
    pub fn stopping(&self) -> bool {
        self.shared.io.stop.load(Ordering::Relaxed)
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        self.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the decoder thread tells `Decoder::start`: opened (or not), then the first picture
/// (or why there is none).
pub(super) enum Event {
    Opened(StreamInfo),
    Picture,
    Failed(DecodeError),
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::decode::key::HwMode;
    use crate::dmabuf::FrameFeed;

    fn key(source: &str, hw: HwMode) -> SourceKey {
        SourceKey {
            source: source.into(),
            hw,
            start_ms: 0,
            stream: None,
            exclusive_to: None,
            instance: 0,
        }
    }

    fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !ready() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn cpu_frames_request_moves_a_dmabuf_decoder_to_software_once_and_frames_go_on() {
        let decoder = Decoder::start(
            1,
            key("lavfi:testsrc2=size=64x48:rate=30", HwMode::Dmabuf),
            true,
        )
        .expect("a generated source opens");
        let source = decoder.source();
        // Prerolled: the first frame is there when start returns, as a dma-buf.
        assert!(source.take_newest_prime().is_some());
        assert_eq!(decoder.path().0, HwPathKind::Dmabuf);
        source.cpu_frames_request("HDMI-A-1: no plane takes NV12 with modifier 0x0");
        source.cpu_frames_request("a second binding: ignored");
        wait_for("the software path", || {
            decoder.path().0 == HwPathKind::Software
        });
        assert_eq!(
            decoder.path().1.as_deref(),
            Some("HDMI-A-1: no plane takes NV12 with modifier 0x0")
        );
        let before = decoder.counters().frames.load(Ordering::Relaxed);
        wait_for("a frame with a CPU view", || {
            decoder.counters().frames.load(Ordering::Relaxed) > before + 2
                && source.take_newest_prime().is_none()
        });
        let bytes = source.with_newest(|data, w, h, _, _| (data.len(), w, h));
        assert_eq!(bytes, Some((64 * 48 * 3 / 2, 64, 48)));
        assert!(decoder.failure().is_none());
    }

    #[test]
    fn a_still_image_on_the_dmabuf_path_is_decoded_again_in_software_when_asked() {
        let dir = std::env::temp_dir().join(format!("multihead-still-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let png = dir.join("still.png");
        let made = std::process::Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "color=c=white:size=32x16",
                "-frames:v",
                "1",
            ])
            .arg(&png)
            .status()
            .expect("ffmpeg runs");
        assert!(made.success());
        let decoder = Decoder::start(2, key(png.to_str().unwrap(), HwMode::Dmabuf), true).unwrap();
        let source = decoder.source();
        assert!(source.take_newest_prime().is_some());
        source.cpu_frames_request("no plane takes it");
        wait_for("the still image in software", || {
            decoder.path().0 == HwPathKind::Software && source.take_newest_prime().is_none()
        });
        assert_eq!(
            decoder.counters().frames.load(Ordering::Relaxed),
            2,
            "decoded once more, then still"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_colour_of_a_tagged_stream_reaches_the_frame_source() {
        let decoder = Decoder::start(
            3,
            key(
                "lavfi:color=size=32x32:rate=30,format=yuvj420p",
                HwMode::Software,
            ),
            true,
        )
        .unwrap();
        let color = decoder.source().color().expect("tagged");
        assert!(color.full_range, "yuvj420p is full range");
        assert_eq!(color.matrix, crate::dmabuf::YuvMatrix::Bt601);
    }

    #[test]
    fn a_full_export_pool_makes_the_decoder_wait_not_skip_frames() {
        let period_us = 1_000_000 / 30;
        let decoder = Decoder::start(
            5,
            key("lavfi:testsrc2=size=32x32:rate=30", HwMode::Dmabuf),
            false,
        )
        .unwrap();
        let source = decoder.source();
        // An output that never lets go of a frame: every export buffer ends up held.
        let mut held = Vec::new();
        let mut last = (0, Instant::now());
        wait_for("the pool to run full", || {
            if let Some((frame, seq)) = source.take_newest_prime() {
                if seq != last.0 {
                    last = (seq, Instant::now());
                    held.push(frame);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
            // Starved: nothing new for 9 frame periods.
            last.0 > 0 && last.1.elapsed() > Duration::from_millis(300)
        });
        assert!(held.len() >= EXPORT_FRAMES - RING, "held {}", held.len());
        held.clear();
        let resumed = last.0;
        wait_for("frames again", || {
            decoder.counters().frames.load(Ordering::Relaxed) > resumed + 5
        });
        // Every decoded frame was published: the newest frame's place on the timeline is its
        // sequence number's, so none was skipped while the pool was full.
        let (seq, pts) = source.with_newest(|_, _, _, seq, pts| (seq, pts)).unwrap();
        let expected = (seq as i64 - 1) * period_us;
        assert!(
            (pts - expected).abs() < 2000,
            "frame {seq} at {pts} µs, not {expected}: frames were dropped"
        );
        assert_eq!(
            decoder.path().0,
            HwPathKind::Dmabuf,
            "never tipped into software"
        );
    }

    #[test]
    fn the_docs_give_the_pool_sizes_the_code_has() {
        let docs = include_str!("../../../docs/decode.md");
        let docs = docs.split_whitespace().collect::<Vec<_>>().join(" ");
        for said in [
            format!("`EXPORT_FRAMES` = **{EXPORT_FRAMES}**: the ring ({RING}) + frames decoded ahead ({AHEAD}) + what the engine may hold ({ENGINE_HOLD}:"),
            format!("a pool of {EXPORT_FRAMES} udmabuf dma-bufs"),
            format!("NV12 ring of {RING} buffers"),
        ] {
            assert!(docs.contains(&said), "docs/decode.md should say: {said}");
        }
    }

    #[test]
    fn preroll_of_a_stream_without_a_frame_is_no_picture() {
        // Generated, but ends at once: opens, never yields a frame.
        let e = Decoder::start(
            4,
            key(
                "lavfi:color=size=32x32:rate=30,trim=end_frame=0",
                HwMode::Software,
            ),
            true,
        )
        .err()
        .expect("no picture");
        assert_eq!(e.code(), "ERR_DECODE_NO_PICTURE", "{e}");
    }
}
