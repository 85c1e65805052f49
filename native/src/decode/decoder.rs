//! One decoder: a thread that reads its source once, decodes at the pace of the stream's
//! timestamps against the monotonic clock, and keeps the newest frames in a small ring of
//! NV12 buffers that every consumer of the source reads. Looping at the end continues the
//! timeline, so outputs never see time jump back.
//!
//! Frames come out one of three ways: VAAPI surfaces exported as DRM PRIME (zero copy), software
//! frames written into udmabuf exports (the same journey without a GPU), or software frames in
//! the NV12 ring. When the hardware path fails mid-stream the decoder reopens in software and
//! continues after the last frame it delivered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ffmpeg::codec::packet::Mut as _;
use ffmpeg::format::Pixel;
use ffmpeg_next as ffmpeg;

use super::color::Tagged;
use super::error::{DecodeError, FailureCode, StreamFailure};
use super::frame_convert::{frame_recycle, nv12_fill, Scaler};
use super::frame_pace::Clock;
pub use super::frame_ring::{FrameRing, FrameSource};
use super::frame_ring::{Shared, RING};
use super::index::{media_identity, KeyframeIndex};
use super::io::{self, IoGuard};
use super::key::{HwMode, SourceKey};
use super::nv12::nv12_size;
use super::policy::{self, SourceKind};
use super::prime::{ExportPool, PrimeFrame};
use super::vaapi::{vaapi_export, HwState, VaapiDevice};

/// How long opening a source may take before the caller hears it failed: the open's own
/// deadline (the interrupt callback ends it) and a margin for the thread to answer.
const OPEN_TIMEOUT: Duration = Duration::from_secs(io::OPEN_DEADLINE.as_secs() + 2);
/// A prerolled acquire resolves once the first frame is decoded, or fails after this long
/// (ERR_DECODE_NO_PICTURE): a source that opens but yields no picture is never switched to.
pub const PREROLL_DEADLINE: Duration = Duration::from_secs(10);
/// How long a decoder whose frames are all still claimed (an export pool or the VAAPI
/// surfaces it may hand out) waits for outputs to let one go before it drops a frame.
const BACKPRESSURE_MAX: Duration = Duration::from_secs(1);
/// Frames decoded ahead of their time. The pacing thread runs real-time but FFmpeg's decode
/// workers do not: on a busy machine a frame can take longer than its period to decode, and
/// without frames in hand the next two would then be published within one vblank (a drop).
const AHEAD: usize = 4;
/// Exported frames beyond the decoder's own needs: the ring's slots, the frames decoded ahead,
/// and what the engine may hold (on screen, in flight, queued). All outputs of a source show
/// the same frame, so this does not grow with the number of outputs.
pub const EXPORT_FRAMES: usize = RING + AHEAD + ENGINE_HOLD;
/// Frames the engine may hold at once: on screen, in a commit in flight, queued, and the one
/// it is importing.
const ENGINE_HOLD: usize = 4;
/// Test hook: after this many frames on the hardware path, behave as if the hardware failed.
const FAULT_ENV: &str = "MULTIHEAD_FAULT_HW_AFTER_FRAMES";
/// Consecutive hardware decode errors that mean the hardware has given up on this stream.
const HW_ERRORS_FATAL: u32 = 3;

/// What the decoder learned when it opened the source.
#[derive(Clone, Debug, Default)]
pub struct StreamInfo {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Nominal frame rate of the stream.
    pub frame_rate: f64,
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

fn decoder_run(key: SourceKey, shared: Arc<Shared>, events: SyncSender<Event>) {
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

/// The FFmpeg side of one decoder, owned by its thread.
pub(super) struct Session {
    pub(super) source: String,
    pub(super) kind: SourceKind,
    /// The decoder's `Shared::io`, which outlives the session (the thread holds the Arc):
    /// FFmpeg calls back into it on every blocking read of `input`.
    pub(super) guard: *const IoGuard,
    pub(super) input: ffmpeg::format::context::Input,
    /// Whether looping can seek back; else the source is opened again.
    pub(super) seekable: bool,
    pub(super) decoder: ffmpeg::decoder::Video,
    pub(super) stream: usize,
    /// Seconds per timestamp unit.
    pub(super) time_base: f64,
    pub(super) start_us: i64,
    pub(super) period_us: i64,
    pub(super) info: StreamInfo,
    pub(super) index: Option<KeyframeIndex>,
    /// Keyframes seen on the first pass, saved as the index when it completes.
    pub(super) keyframes_seen: Vec<(i64, i64)>,
    pub(super) time_base_raw: (i32, i32),
    pub(super) scaler: Option<Scaler>,
    pub(super) hw: HwPath,
    /// Why frames do not take the hardware path, once known.
    pub(super) fallback: Option<String>,
    /// Read by FFmpeg's get_format callback through the codec context's opaque pointer, so it
    /// is boxed (a stable address) and lives as long as the session.
    pub(super) hw_state: Box<HwState>,
    /// Set by publish when the hardware path failed; acted on between packets.
    pub(super) fallback_pending: Option<String>,
    /// Stream pts (µs) of the newest published frame: where a fallback resumes.
    pub(super) last_pts_us: Option<i64>,
    /// After a fallback: frames up to here were shown already.
    pub(super) skip_until_us: Option<i64>,
    pub(super) hw_frames: u64,
    pub(super) hw_errors: u32,
    pub(super) fault_after: Option<u64>,
    /// Decoded frames waiting for their time: (frame, stream pts µs, timeline µs).
    pub(super) ahead: std::collections::VecDeque<(ffmpeg::frame::Video, Option<i64>, i64)>,
    /// Emptied frames to decode into, so frames in flight are never copied.
    pub(super) spare: Vec<ffmpeg::frame::Video>,
    /// Frames published since the last rewind: a pass of exactly one is a still image.
    pub(super) pass_frames: u64,
    /// Told when the first frame is in the ring (a prerolled acquire waits for it).
    pub(super) first_picture: Option<SyncSender<Event>>,
}

// The guard pointer is only dereferenced on the session's own thread while the Arc that owns
// it is alive.
unsafe impl Send for Session {}

/// Where decoded frames go.
pub(super) enum HwPath {
    Vaapi(VaapiDevice),
    /// The pool is made at the first frame's size.
    Dmabuf(Option<ExportPool>),
    Software,
}

impl HwPath {
    fn kind(&self) -> HwPathKind {
        match self {
            HwPath::Vaapi(_) => HwPathKind::Vaapi,
            HwPath::Dmabuf(_) => HwPathKind::Dmabuf,
            HwPath::Software => HwPathKind::Software,
        }
    }
}

/// A decoder for the stream, on the VAAPI device when one is given.
fn decoder_open(
    parameters: ffmpeg::codec::Parameters,
    vaapi: Option<(&VaapiDevice, &HwState)>,
) -> Result<ffmpeg::decoder::Video, String> {
    let mut context = ffmpeg::codec::context::Context::from_parameters(parameters)
        .map_err(|e| format!("decoder parameters: {e}"))?;
    match vaapi {
        Some((device, state)) => unsafe {
            device.attach(context.as_mut_ptr(), state, EXPORT_FRAMES as i32)?
        },
        None => context.set_threading(ffmpeg::codec::threading::Config {
            kind: ffmpeg::codec::threading::Type::Frame,
            count: 0,
            ..Default::default()
        }),
    }
    context
        .decoder()
        .video()
        .map_err(|e| format!("no decoder for this stream: {e}"))
}

impl Session {
    fn open(key: &SourceKey, guard: &IoGuard) -> Result<Session, DecodeError> {
        let source = key.source.clone();
        let open_err = |reason: String| DecodeError::Open {
            source: source.clone(),
            reason,
        };
        ffmpeg::init().map_err(|e| open_err(format!("FFmpeg init: {e}")))?;
        // FFmpeg's own stderr chatter would bypass the structured log; every failure reaches
        // the caller as an error naming the source instead.
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Quiet);
        // Refused before FFmpeg sees it: nothing of a refused source is opened, read or written.
        let kind = policy::classify(&key.source).map_err(|reason| DecodeError::NotAllowed {
            source: source.clone(),
            reason,
        })?;
        // SAFETY: the guard is the decoder's Shared::io, alive as long as the session.
        let mut input = unsafe { io::input_open(&key.source, kind, guard) }.map_err(open_err)?;
        let seekable = io::seekable(&input);
        let stream = match key.stream {
            Some(index) => input
                .streams()
                .find(|s| s.index() == index as usize)
                .filter(|s| s.parameters().medium() == ffmpeg::media::Type::Video)
                .ok_or_else(|| DecodeError::NoVideo {
                    source: source.clone(),
                    reason: format!("stream {index} is not a video stream"),
                })?,
            None => input
                .streams()
                .best(ffmpeg::media::Type::Video)
                .ok_or_else(|| DecodeError::NoVideo {
                    source: source.clone(),
                    reason: "no video stream".into(),
                })?,
        };
        let stream_index = stream.index();
        let tb = stream.time_base();
        let time_base = f64::from(tb.numerator()) / f64::from(tb.denominator().max(1));
        let rate = stream.avg_frame_rate();
        let frame_rate = if rate.numerator() > 0 && rate.denominator() > 0 {
            f64::from(rate.numerator()) / f64::from(rate.denominator())
        } else {
            30.0
        };
        let codec_err = |reason: String| DecodeError::Codec {
            source: source.clone(),
            reason,
        };
        let hw_state = Box::new(HwState::default());
        let (mut hw, mut fallback) = match key.hw {
            HwMode::Software => (HwPath::Software, None),
            HwMode::Dmabuf => (HwPath::Dmabuf(None), None),
            HwMode::Auto => match VaapiDevice::open() {
                Ok(device) => (HwPath::Vaapi(device), None),
                Err(reason) => (HwPath::Software, Some(reason)),
            },
        };
        let decoder = match &hw {
            HwPath::Vaapi(device) => {
                match decoder_open(stream.parameters(), Some((device, &hw_state))) {
                    Ok(decoder) => Some(decoder),
                    Err(reason) => {
                        fallback = Some(format!("VAAPI on {}: {reason}", device.path));
                        None
                    }
                }
            }
            _ => None,
        };
        let decoder = match decoder {
            Some(decoder) => decoder,
            None => {
                if matches!(hw, HwPath::Vaapi(_)) {
                    hw = HwPath::Software;
                }
                decoder_open(stream.parameters(), None).map_err(codec_err)?
            }
        };
        let codec = decoder
            .codec()
            .map(|c| c.name().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let info = StreamInfo {
            codec,
            width: decoder.width(),
            height: decoder.height(),
            frame_rate,
        };
        let start_us = (key.start_ms * 1000) as i64;
        let index = KeyframeIndex::load(&key.source, stream_index as u32);
        if start_us > 0 {
            // With an index, go straight to the keyframe before the start: the demuxer need
            // not search (slow for formats without their own index, such as MPEG-TS).
            let target = index
                .as_ref()
                .and_then(|i| i.keyframe_before((start_us as f64 / 1_000_000.0 / time_base) as i64))
                .map(|(pts, _)| (pts as f64 * time_base * 1_000_000.0) as i64)
                .unwrap_or(start_us);
            // A source that cannot seek is decoded from its start; the frames before the
            // offset are skipped as references.
            if seekable {
                guard.arm(io::READ_DEADLINE);
                let sought = input.seek(target, ..target + 1);
                guard.disarm();
                sought.map_err(|e| open_err(format!("seek to {} ms: {e}", key.start_ms)))?;
            }
        }
        Ok(Session {
            source,
            kind,
            guard,
            input,
            seekable,
            decoder,
            stream: stream_index,
            time_base,
            start_us,
            period_us: (1_000_000.0 / frame_rate) as i64,
            info,
            scaler: None,
            index,
            keyframes_seen: Vec::with_capacity(1024),
            time_base_raw: (tb.numerator(), tb.denominator()),
            hw,
            fallback,
            hw_state,
            fallback_pending: None,
            last_pts_us: None,
            skip_until_us: None,
            hw_frames: 0,
            hw_errors: 0,
            fault_after: std::env::var(FAULT_ENV).ok().and_then(|v| v.parse().ok()),
            ahead: std::collections::VecDeque::with_capacity(AHEAD + 1),
            spare: (0..=AHEAD).map(|_| ffmpeg::frame::Video::empty()).collect(),
            pass_frames: 0,
            first_picture: None,
        })
    }

    fn guard(&self) -> &IoGuard {
        // SAFETY: see the field.
        unsafe { &*self.guard }
    }

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

    /// Back to the start of the source for the next pass: a seek where the source can seek,
    /// else the source is opened again (HTTP without Range, live streams, generated graphs).
    fn rewind(&mut self) -> Result<(), StreamFailure> {
        self.pass_frames = 0;
        if self.seekable {
            self.guard().arm(io::READ_DEADLINE);
            let sought = self.input.seek(self.start_us, ..self.start_us.max(0) + 1);
            self.guard().disarm();
            match sought {
                Ok(()) => return Ok(()),
                // A server that stopped honouring Range: open again, as for a stream.
                Err(_) => self.seekable = false,
            }
        }
        let input =
            unsafe { io::input_open(&self.source, self.kind, self.guard()) }.map_err(|e| {
                StreamFailure::new(
                    FailureCode::Open,
                    format!("{}: cannot open again to loop: {e}", self.source),
                )
            })?;
        let same = input
            .stream(self.stream)
            .is_some_and(|s| s.parameters().medium() == ffmpeg::media::Type::Video);
        if !same {
            return Err(StreamFailure::new(
                FailureCode::Open,
                format!(
                    "{}: opened again, stream {} is no longer video",
                    self.source, self.stream
                ),
            ));
        }
        self.input = input;
        Ok(())
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
                    // Loop: back to the start offset, with the timeline running on.
                    self.rewind()?;
                    self.decoder.flush();
                    clock.loop_end(self.period_us);
                    shared.counters.loops.fetch_add(1, Ordering::Relaxed);
                }
                Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(self.read_failure(e)),
            }
        }
        Ok(())
    }

    /// An output asked for frames with a CPU view (`FrameSource::cpu_frames_request`): on a
    /// dma-buf path, that becomes a fallback to software at this packet boundary.
    fn cpu_request_take(&mut self, shared: &Shared) {
        if self.fallback_pending.is_some()
            || matches!(self.hw, HwPath::Software)
            || !shared.cpu_asked.load(Ordering::Relaxed)
        {
            return;
        }
        let wanted = shared.cpu_wanted.lock().unwrap_or_else(|p| p.into_inner());
        self.fallback_pending.clone_from(&wanted);
    }

    /// On the VAAPI path every frame handed out holds a surface of the decoder's pool until
    /// outputs let it go. When the frames out and the frames decoded ahead fill the room the
    /// pool was sized for, decoding waits (publishing what it has at its time) instead of
    /// running the pool dry, which the driver answers with errors and the decoder with a
    /// fallback to software.
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

    /// The hardware path failed (or an output cannot show its dma-bufs): continue in software
    /// from just after the last frame shown, or from the start when none was.
    fn fall_back(&mut self, reason: String, shared: &Shared) -> Result<(), StreamFailure> {
        let codec_failure = |e: String| StreamFailure::new(FailureCode::Codec, e);
        let parameters = self
            .input
            .stream(self.stream)
            .map(|s| s.parameters())
            .ok_or_else(|| {
                codec_failure(format!("{}: stream {} vanished", self.source, self.stream))
            })?;
        let opened = decoder_open(parameters, None);
        self.decoder = opened.map_err(|e| {
            codec_failure(format!(
                "{}: software decoder after \"{reason}\": {e}",
                self.source
            ))
        })?;
        self.hw = HwPath::Software;
        match self.last_pts_us {
            // The keyframe at or before the last frame shown; frames up to it are decoded as
            // references but not shown again.
            Some(last) if self.seekable => {
                self.guard().arm(io::READ_DEADLINE);
                let sought = self.input.seek(last, ..last + 1);
                self.guard().disarm();
                sought.map_err(|e| {
                    StreamFailure::new(
                        FailureCode::Read,
                        format!("{}: seek to resume after fallback: {e}", self.source),
                    )
                })?;
                self.skip_until_us = Some(last);
            }
            Some(last) => {
                self.rewind()?;
                self.skip_until_us = Some(last);
            }
            // Nothing shown yet (the first frame's export was refused): from the start.
            None => self.rewind()?,
        }
        self.fallback = Some(reason);
        *shared.path.lock().unwrap_or_else(|p| p.into_inner()) =
            (HwPathKind::Software, self.fallback.clone());
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
            self.pace(clock, shared, AHEAD)?;
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

    /// Puts the frame into the ring: as a dma-buf on the hardware and export paths, else as NV12
    /// bytes, converting once.
    pub(super) fn publish(
        &mut self,
        frame: &ffmpeg::frame::Video,
        pts_us: i64,
        shared: &Shared,
    ) -> Result<(), String> {
        let (width, height) = (frame.width(), frame.height());
        let converted = !matches!(
            frame.format(),
            Pixel::VAAPI | Pixel::YUV420P | Pixel::YUVJ420P | Pixel::NV12
        );
        let tagged = Tagged::of(
            frame.color_space(),
            frame.color_range(),
            frame.format(),
            converted,
        );
        shared.color.set(tagged.color(height));
        if frame.format() == Pixel::VAAPI {
            // The layout is checked here, before the frame reaches any output: a surface the
            // engine could not describe to the kernel makes the decoder go on in software.
            return match unsafe { vaapi_export(frame.as_ptr(), &shared.claims) } {
                Ok(prime) => {
                    self.ring_put_prime(prime, pts_us, 0, shared);
                    self.hw_frame_count();
                    Ok(())
                }
                Err(reason) => {
                    self.fallback_pending = Some(reason);
                    Ok(())
                }
            };
        }
        if self.hw_state.refused.load(Ordering::Relaxed) && matches!(self.hw, HwPath::Vaapi(_)) {
            // FFmpeg fell back inside the same context: software frames from here on.
            self.hw = HwPath::Software;
            self.fallback = Some(format!(
                "the VAAPI driver refused this {} stream",
                self.info.codec
            ));
            *shared.path.lock().unwrap_or_else(|p| p.into_inner()) =
                (HwPathKind::Software, self.fallback.clone());
        }
        if let HwPath::Dmabuf(pool) = &mut self.hw {
            if !pool.as_ref().is_some_and(|p| p.fits(width, height)) {
                match ExportPool::new(EXPORT_FRAMES, width, height) {
                    Ok(made) => *pool = Some(made),
                    Err(reason) => {
                        self.fallback_pending = Some(format!("export pool: {reason}"));
                        return Ok(());
                    }
                }
            }
            let pool = pool.as_mut().expect("made above");
            // Outputs still hold every buffer: wait for one rather than overwrite a frame on
            // screen or drop this one at once.
            let until = Instant::now() + BACKPRESSURE_MAX;
            while !pool.has_free()
                && Instant::now() < until
                && !shared.io.stop.load(Ordering::Relaxed)
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            let mut failed = None;
            let exported =
                pool.export(
                    |out| match nv12_fill(&mut self.scaler, &self.source, frame, out) {
                        Ok(n) => n,
                        Err(e) => {
                            failed = Some(e);
                            0
                        }
                    },
                );
            if let Some(e) = failed {
                return Err(e);
            }
            let Some(prime) = exported else {
                // Every export buffer is still claimed by the ring or an output: skip this frame.
                shared.counters.late.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            };
            let copied = nv12_size(width as usize, height as usize) as u64;
            self.ring_put_prime(prime, pts_us, copied, shared);
            self.hw_frame_count();
            return Ok(());
        }
        let mut ring = shared.ring.lock().unwrap_or_else(|p| p.into_inner());
        let slot = ring.newest.map_or(0, |n| (n + 1) % RING);
        let size = nv12_size(width as usize, height as usize);
        if ring.slots[slot].len() != size {
            // Only when the stream's size changes: steady state reuses the ring.
            ring.slots[slot] = vec![0; size];
        }
        let copied = nv12_fill(&mut self.scaler, &self.source, frame, &mut ring.slots[slot])?;
        ring.prime[slot] = None;
        let seq = shared.counters.frames.fetch_add(1, Ordering::Relaxed) + 1;
        ring.meta[slot] = (seq, pts_us);
        ring.newest = Some(slot);
        ring.width = width;
        ring.height = height;
        drop(ring);
        shared
            .counters
            .bytes_copied_last
            .store(copied as u64, Ordering::Relaxed);
        self.picture_told();
        Ok(())
    }

    /// The first frame is in the ring: a prerolled acquire may resolve.
    fn picture_told(&mut self) {
        self.pass_frames += 1;
        if let Some(events) = self.first_picture.take() {
            let _ = events.try_send(Event::Picture);
        }
    }

    fn ring_put_prime(&mut self, prime: PrimeFrame, pts_us: i64, copied: u64, shared: &Shared) {
        let (width, height) = (prime.width, prime.height);
        let prime = Arc::new(prime);
        let mut ring = shared.ring.lock().unwrap_or_else(|p| p.into_inner());
        let slot = ring.newest.map_or(0, |n| (n + 1) % RING);
        // Drops the claim of the frame that was here; an output may still hold its own.
        ring.prime[slot] = Some(prime);
        let seq = shared.counters.frames.fetch_add(1, Ordering::Relaxed) + 1;
        ring.meta[slot] = (seq, pts_us);
        ring.newest = Some(slot);
        ring.width = width;
        ring.height = height;
        drop(ring);
        shared.counters.exported.fetch_add(1, Ordering::Relaxed);
        shared
            .counters
            .bytes_copied_last
            .store(copied, Ordering::Relaxed);
        self.picture_told();
    }

    fn hw_frame_count(&mut self) {
        self.hw_frames += 1;
        if self.fault_after.is_some_and(|n| self.hw_frames == n) {
            self.fallback_pending = Some(format!(
                "injected hardware failure after {} frames ({FAULT_ENV})",
                self.hw_frames
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(source: &str, hw: HwMode) -> SourceKey {
        SourceKey {
            source: source.into(),
            hw,
            start_ms: 0,
            stream: None,
            exclusive_to: None,
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
        assert_eq!(color.matrix, crate::kms::formats::YuvMatrix::Bt601);
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
