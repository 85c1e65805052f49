//! Errors that name the failing object, so a log line or MQTT event says which connector,
//! CRTC or plane refused, not just "Invalid argument".

use std::fmt;
use std::io;
use std::path::PathBuf;

#[derive(Debug)]
pub enum KmsError {
    Open(PathBuf, io::Error),
    NoDevice(String),
    NotKms(PathBuf, String),
    AtomicRefused(PathBuf, String),
    /// Another process is DRM master; holders are "pid (comm)" read from /proc where visible.
    MasterHeld(PathBuf, Vec<String>),
    /// The descriptor a previous instance left with the service manager cannot be taken over.
    Inherited(PathBuf, String),
    ConnectorNotFound(String, Vec<String>),
    ConnectorDisconnected(String),
    ModeNotFound {
        connector: String,
        mode: String,
        available: Vec<String>,
    },
    NoCrtc(String),
    NoPlane {
        connector: String,
        format: String,
    },
    /// TEST_ONLY or the real commit failed; names the outputs and the properties in the request.
    CommitRefused {
        outputs: Vec<String>,
        properties: String,
        source: io::Error,
    },
    OutputNotConfigured(String),
    BufferNotFound(u32),
    BadBuffer(String),
    Ioctl(&'static str, io::Error),
    /// Flips are in flight on these outputs; the operation needs the engine idle.
    Busy(String),
    /// No writeback connector can capture this output's CRTC.
    NoWriteback(String),
    /// Mesa's GBM could not be opened on the card or refused the buffer.
    Gbm(String),
    Closed,
}

impl KmsError {
    /// A stable code for JavaScript (`error.code`) and MQTT events.
    pub fn code(&self) -> &'static str {
        match self {
            KmsError::Open(..) => "ERR_KMS_OPEN",
            KmsError::NoDevice(..) => "ERR_KMS_NO_DEVICE",
            KmsError::NotKms(..) => "ERR_KMS_NOT_KMS",
            KmsError::AtomicRefused(..) => "ERR_KMS_ATOMIC_REFUSED",
            KmsError::MasterHeld(..) => "ERR_KMS_MASTER_HELD",
            KmsError::Inherited(..) => "ERR_KMS_INHERITED",
            KmsError::ConnectorNotFound(..) => "ERR_KMS_CONNECTOR_NOT_FOUND",
            KmsError::ConnectorDisconnected(..) => "ERR_KMS_CONNECTOR_DISCONNECTED",
            KmsError::ModeNotFound { .. } => "ERR_KMS_MODE_NOT_FOUND",
            KmsError::NoCrtc(..) => "ERR_KMS_NO_CRTC",
            KmsError::NoPlane { .. } => "ERR_KMS_NO_PLANE",
            KmsError::CommitRefused { .. } => "ERR_KMS_COMMIT_REFUSED",
            KmsError::OutputNotConfigured(..) => "ERR_KMS_OUTPUT_NOT_CONFIGURED",
            KmsError::BufferNotFound(..) => "ERR_KMS_BUFFER_NOT_FOUND",
            KmsError::BadBuffer(..) => "ERR_KMS_BAD_BUFFER",
            KmsError::Ioctl(..) => "ERR_KMS_IOCTL",
            KmsError::Busy(..) => "ERR_KMS_BUSY",
            KmsError::NoWriteback(..) => "ERR_KMS_NO_WRITEBACK",
            KmsError::Gbm(..) => "ERR_KMS_GBM",
            KmsError::Closed => "ERR_KMS_CLOSED",
        }
    }
}

impl fmt::Display for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KmsError::Open(p, e) => write!(f, "{}: cannot open: {e}", p.display()),
            KmsError::NoDevice(why) => write!(f, "no KMS device: {why}"),
            KmsError::NotKms(p, driver) => {
                write!(
                    f,
                    "{} ({driver}) has no KMS (no CRTCs or connectors)",
                    p.display()
                )
            }
            KmsError::AtomicRefused(p, driver) => write!(
                f,
                "{} ({driver}) refused atomic mode setting; multihead needs an atomic KMS driver",
                p.display()
            ),
            KmsError::MasterHeld(p, holders) if holders.is_empty() => write!(
                f,
                "{}: another process is DRM master (stop the display server or Plymouth)",
                p.display()
            ),
            KmsError::MasterHeld(p, holders) => write!(
                f,
                "{}: another process is DRM master; open by {}",
                p.display(),
                holders.join(", ")
            ),
            KmsError::ConnectorNotFound(c, available) => {
                write!(
                    f,
                    "connector {c} not found; available: {}",
                    available.join(", ")
                )
            }
            KmsError::Inherited(p, why) => write!(
                f,
                "{}: the descriptor kept over the restart cannot be taken over: {why}",
                p.display()
            ),
            KmsError::ConnectorDisconnected(c) => write!(f, "connector {c} is disconnected"),
            KmsError::ModeNotFound {
                connector,
                mode,
                available,
            } => write!(
                f,
                "connector {connector}: mode {mode} not offered; available: {}",
                available.join(", ")
            ),
            KmsError::NoCrtc(c) => write!(f, "connector {c}: no free CRTC can drive it"),
            KmsError::NoPlane { connector, format } => {
                write!(f, "connector {connector}: no plane accepts {format}")
            }
            KmsError::CommitRefused {
                outputs, source, ..
            } if outputs.is_empty() => {
                // The quiet form the video groups use on retries: the caller names the output.
                write!(f, "atomic commit refused: {source}")
            }
            KmsError::CommitRefused {
                outputs,
                properties,
                source,
            } => write!(
                f,
                "atomic commit for {} refused: {source}; properties: {properties}",
                outputs.join(", ")
            ),
            KmsError::OutputNotConfigured(c) => write!(f, "output {c} is not configured"),
            KmsError::BufferNotFound(id) => write!(f, "buffer {id} does not exist"),
            KmsError::BadBuffer(why) => write!(f, "bad buffer: {why}"),
            KmsError::Ioctl(what, e) => write!(f, "{what} failed: {e}"),
            KmsError::Busy(what) => {
                write!(f, "{what}: flips are in flight; try again after they land")
            }
            KmsError::NoWriteback(c) => {
                write!(f, "output {c}: no writeback connector can capture its CRTC")
            }
            KmsError::Gbm(why) => write!(f, "GBM: {why}"),
            KmsError::Closed => write!(f, "the KMS device is closed"),
        }
    }
}

impl std::error::Error for KmsError {}

pub type KmsResult<T> = Result<T, KmsError>;

/// dma-buf failures read as they did when this module made them itself.
impl From<crate::dmabuf::DmaBufError> for KmsError {
    fn from(e: crate::dmabuf::DmaBufError) -> Self {
        match e {
            crate::dmabuf::DmaBufError::Udmabuf(why) => KmsError::BadBuffer(why),
            crate::dmabuf::DmaBufError::Io(what, e) => KmsError::Ioctl(what, e),
        }
    }
}
