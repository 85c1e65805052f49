//! udmabuf lives in `crate::dmabuf::udmabuf`; these keep the engine's error type for callers
//! that speak `KmsResult` (the JavaScript API, the decoder's export pool).

use std::os::fd::OwnedFd;

use super::error::KmsResult;
use crate::dmabuf::udmabuf;

/// A dma-buf holding `data`, padded to whole pages. The caller owns the returned fd.
pub fn udmabuf_create(data: &[u8]) -> KmsResult<OwnedFd> {
    Ok(udmabuf::udmabuf_create(data)?)
}

/// A memfd of at least `len` bytes (whole pages), sealed against shrinking as udmabuf requires.
pub fn memfd_sealed(len: usize) -> KmsResult<(OwnedFd, usize)> {
    Ok(udmabuf::memfd_sealed(len)?)
}

/// Wraps a sealed memfd's first `size` bytes in a dma-buf.
pub fn udmabuf_from_memfd(memfd: &OwnedFd, size: usize) -> KmsResult<OwnedFd> {
    Ok(udmabuf::udmabuf_from_memfd(memfd, size)?)
}
