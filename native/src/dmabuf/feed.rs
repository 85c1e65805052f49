//! How a consumer reads a source of frames. The decoder's frame handle implements it; the KMS
//! engine holds one per video group as an `Arc<dyn FrameFeed>` and calls it per vblank, so
//! nothing here may block on the source or allocate (closures come as `&mut dyn FnMut`).

use std::sync::Arc;

use super::{PrimeFrame, YuvColor};

/// Called with a frame the CPU can see: NV12 bytes, width, height, sequence, pts µs.
pub type CpuFrameFn<'a> = &'a mut dyn FnMut(&[u8], u32, u32, u64, i64);

/// The newest frames of a source, for a consumer that shows them.
pub trait FrameFeed: Send + Sync {
    /// The newest frame when it lives in a dma-buf, with its sequence number. The returned
    /// `Arc` is the claim that keeps the storage from being reused; cloning it does not
    /// allocate. The first take starts a prerolled source's clock.
    fn take_newest_prime(&self) -> Option<(Arc<PrimeFrame>, u64)>;

    /// Runs `f` on the newest frame with a CPU view; false when there is none. The first take
    /// starts a prerolled source's clock.
    fn take_newest(&self, f: CpuFrameFn<'_>) -> bool;

    /// Like `take_newest`, without starting anything: to look at the newest frame.
    fn with_newest(&self, f: CpuFrameFn<'_>) -> bool;

    /// Which pass of the file frame `sequence` belongs to (0 first, +1 per loop), while the
    /// frame is among the newest few; 0 otherwise.
    fn pass_of(&self, sequence: u64) -> u32;

    /// The colour encoding of the newest frame as the stream tags it (matrix and range).
    /// None until a frame is there, or when the stream tags neither: the consumer's guess
    /// from the size is then all there is.
    fn color(&self) -> Option<YuvColor>;

    /// Asks for frames with a CPU view from now on, because no plane takes the source's
    /// dma-buf frames (`reason` names the output, fourcc and modifier). Meant to be called
    /// once per consumer; later calls change nothing and do not allocate.
    fn cpu_frames_request(&self, reason: &str);
}
