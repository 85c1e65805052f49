//! Decode errors name the source, so an event or log line says which file or stream failed.

use std::fmt;

#[derive(Debug, Clone)]
pub enum DecodeError {
    /// The source could not be opened or probed (missing file, unreachable URL, not media).
    Open { source: String, reason: String },
    /// The source is not one FFmpeg may open (another protocol, a graph that reads files).
    NotAllowed { source: String, reason: String },
    /// The source has no video stream, or not the one asked for.
    NoVideo { source: String, reason: String },
    /// No decoder for the stream's codec, or it refused the stream.
    Codec { source: String, reason: String },
    /// The source opened but gave no picture before the preroll deadline, or failed first
    /// (`reason` says how: a read error, a stall, a stream that ended without a frame).
    NoPicture { source: String, reason: String },
    /// Creating another decoder would pass `max_decoders`.
    Limit { max: u32, running: Vec<String> },
    /// The consumer holds no decoder.
    UnknownConsumer(String),
    /// A request argument is out of range.
    BadRequest(String),
}

impl DecodeError {
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Open { .. } => "ERR_DECODE_OPEN",
            DecodeError::NotAllowed { .. } => "ERR_SOURCE_NOT_ALLOWED",
            DecodeError::NoVideo { .. } => "ERR_DECODE_NO_VIDEO",
            DecodeError::Codec { .. } => "ERR_DECODE_CODEC",
            DecodeError::NoPicture { .. } => "ERR_DECODE_NO_PICTURE",
            DecodeError::Limit { .. } => "ERR_DECODE_LIMIT",
            DecodeError::UnknownConsumer(..) => "ERR_DECODE_UNKNOWN_CONSUMER",
            DecodeError::BadRequest(..) => "ERR_DECODE_BAD_REQUEST",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Open { source, reason } => write!(f, "{source}: cannot open: {reason}"),
            DecodeError::NotAllowed { source, reason } => {
                write!(f, "{source}: not allowed: {reason}")
            }
            DecodeError::NoVideo { source, reason } => write!(f, "{source}: {reason}"),
            DecodeError::Codec { source, reason } => write!(f, "{source}: {reason}"),
            DecodeError::NoPicture { source, reason } => {
                write!(f, "{source}: no picture: {reason}")
            }
            DecodeError::Limit { max, running } => write!(
                f,
                "max_decoders ({max}) reached; running: {}",
                running.join(", ")
            ),
            DecodeError::UnknownConsumer(c) => write!(f, "consumer {c} holds no decoder"),
            DecodeError::BadRequest(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a running decoder stopped: the `failureCode` next to `failure` in status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureCode {
    /// Reading the source failed (a server that hung up, a file cut short, a broken index).
    Read,
    /// The source stopped delivering data: no byte within `rw_timeout`, or one read of a
    /// packet past its deadline.
    Stalled,
    /// The stream ended, or failed, before its first frame.
    NoPicture,
    /// No decoder could go on (the software decoder after a hardware failure).
    Codec,
    /// Looping needed a reopen, and that failed.
    Open,
}

impl FailureCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureCode::Read => "ERR_DECODE_READ",
            FailureCode::Stalled => "ERR_DECODE_STALLED",
            FailureCode::NoPicture => "ERR_DECODE_NO_PICTURE",
            FailureCode::Codec => "ERR_DECODE_CODEC",
            FailureCode::Open => "ERR_DECODE_OPEN",
        }
    }
}

/// A decoder that stopped mid-stream: the code and the sentence that names the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamFailure {
    pub code: FailureCode,
    pub reason: String,
}

impl StreamFailure {
    pub fn new(code: FailureCode, reason: impl Into<String>) -> StreamFailure {
        StreamFailure {
            code,
            reason: reason.into(),
        }
    }
}
