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
