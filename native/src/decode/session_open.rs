//! Opening a source for one decoder thread: the FFmpeg input, the video stream, the codec on
//! the hardware path the key asks for (and software when that path cannot open), and the
//! seek to the start offset. Everything the thread then owns lives in `Session`.

use std::sync::mpsc::SyncSender;

use ffmpeg_next as ffmpeg;

use super::decoder::{Event, HwPathKind, StreamInfo, AHEAD, EXPORT_FRAMES};
use super::error::DecodeError;
use super::frame_convert::Scaler;
use super::index::KeyframeIndex;
use super::io::{self, IoGuard};
use super::key::{HwMode, SourceKey};
use super::policy::{self, SourceKind};
use super::prime::ExportPool;
use super::session_fall_back::FAULT_ENV;
use super::vaapi::{HwState, VaapiDevice};

/// The FFmpeg side of one decoder, owned by its thread.
pub(super) struct Session {
    pub(super) source: String,
    pub(super) kind: SourceKind,
    /// The decoder's `Shared::io`, which outlives the session (the thread holds the Arc):
    /// FFmpeg calls back into it on every blocking read of `input`.
    pub(super) guard: *const IoGuard,
    pub(super) input: ffmpeg::format::context::Input,
    /// A `pattern:` source's I/O context: after `input`, so dropped after it.
    pub(super) pattern_io: Option<super::pattern::PatternIo>,
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
    /// The publish count at which each pass reached by the demuxer ends on screen: its last
    /// frame (`loops` counts passes shown to their end, not read to their end).
    pub(super) loop_ends: std::collections::VecDeque<u64>,
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
    pub(super) fn kind(&self) -> HwPathKind {
        match self {
            HwPath::Vaapi(_) => HwPathKind::Vaapi,
            HwPath::Dmabuf(_) => HwPathKind::Dmabuf,
            HwPath::Software => HwPathKind::Software,
        }
    }
}

/// A decoder for the stream, on the VAAPI device when one is given.
pub(super) fn decoder_open(
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
    /// Runs on the decoder's own thread: `Decoder::start` waits at most `OPEN_TIMEOUT` for
    /// the answer, whatever the source does.
    pub(super) fn open(key: &SourceKey, guard: &IoGuard) -> Result<Session, DecodeError> {
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
        let (mut input, pattern_io) =
            unsafe { io::input_open(&key.source, kind, guard) }.map_err(open_err)?;
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
        let rotation = stream_rotation(&stream);
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
            sar: sample_aspect(decoder.aspect_ratio()),
            rotation,
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
            pattern_io,
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
            loop_ends: std::collections::VecDeque::with_capacity(4),
            first_picture: None,
        })
    }

    /// Armed around every blocking FFmpeg call, so a stalled server cannot hold the thread.
    pub(super) fn guard(&self) -> &IoGuard {
        // SAFETY: see the field.
        unsafe { &*self.guard }
    }
}

/// Degrees the picture must be turned clockwise to stand upright (a phone's portrait video),
/// from the stream's display matrix, to the nearest quarter turn; 0 without one.
fn stream_rotation(stream: &ffmpeg::format::stream::Stream) -> u32 {
    use ffmpeg::codec::packet::side_data::Type;
    for side in stream.side_data() {
        let data = side.data();
        if side.kind() != Type::DisplayMatrix || data.len() < 36 {
            continue;
        }
        // SAFETY: a display matrix is nine int32s; `data` holds at least 36 bytes in a buffer
        // FFmpeg allocated (aligned). The angle it gives is counter-clockwise.
        let ccw = unsafe { ffmpeg::ffi::av_display_rotation_get(data.as_ptr().cast::<i32>()) };
        if !ccw.is_finite() {
            return 0;
        }
        let quarter = (-ccw / 90.0).round() as i64;
        return (quarter.rem_euclid(4) * 90) as u32;
    }
    0
}

/// A stream's sample aspect ratio as layouts read it: (0, 1) for unknown or nonsense values,
/// which they treat as square pixels.
fn sample_aspect(r: ffmpeg::Rational) -> (u32, u32) {
    match (u32::try_from(r.numerator()), u32::try_from(r.denominator())) {
        (Ok(n), Ok(d)) if n > 0 && d > 0 => (n, d),
        _ => (0, 1),
    }
}
