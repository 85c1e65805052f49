//! The frame descriptor: how a frame lies in its dma-bufs.

use std::os::fd::BorrowedFd;

use super::{Fourcc, Modifier};

/// An external buffer described the way FFmpeg's AVDRMFrameDescriptor is.
pub struct DmaBufDesc<'a> {
    pub width: u32,
    pub height: u32,
    pub format: Fourcc,
    pub modifier: Modifier,
    /// (fd, size) per object. Slices, so a per-frame import can describe itself on the stack.
    pub objects: &'a [(BorrowedFd<'a>, u64)],
    /// (object index, offset, pitch) per plane of the single layer.
    pub planes: &'a [(usize, u32, u32)],
}
