//! What went wrong with a dma-buf, naming the call that failed.

use std::fmt;
use std::io;

#[derive(Debug)]
pub enum DmaBufError {
    /// /dev/udmabuf or the memfd behind it: the message says which step.
    Udmabuf(String),
    /// A call on a dma-buf fd (mmap, sync).
    Io(&'static str, io::Error),
}

pub type DmaBufResult<T> = Result<T, DmaBufError>;

impl fmt::Display for DmaBufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DmaBufError::Udmabuf(why) => f.write_str(why),
            DmaBufError::Io(what, e) => write!(f, "{what} failed: {e}"),
        }
    }
}

impl std::error::Error for DmaBufError {}
