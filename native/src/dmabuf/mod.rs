//! dma-bufs as both sides of the crate see them: the decoder exports them, the KMS engine
//! scans them out. Neither side owns the vocabulary, so it lives here: the fourcc, modifier and
//! colour of a frame, its descriptor, the exported frame and the claim it holds, the feed the
//! engine reads frames through, the CPU's read view of a dma-buf, and udmabuf (dma-bufs made
//! from memfds, for frames the CPU fills). `kms` and `decode` never name each other: they
//! meet here and in the napi glue (display.rs, playback.rs), which hands the engine a
//! decoder's `FrameSource` as an `Arc<dyn FrameFeed>`.

pub mod color;
pub mod desc;
pub mod error;
pub mod feed;
pub mod format;
pub mod frame;
pub mod read;
pub mod udmabuf;

pub use color::{YuvColor, YuvMatrix};
pub use desc::DmaBufDesc;
pub use error::{DmaBufError, DmaBufResult};
pub use feed::FrameFeed;
pub use frame::{FrameClaim, PrimeFrame};

/// A DRM fourcc (drm_fourcc.h), e.g. NV12 or XR24.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Fourcc(pub u32);

/// A DRM format modifier (tiling, compression); `INVALID` means "implicit, ask the driver".
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Modifier(pub u64);

impl Modifier {
    pub const LINEAR: Modifier = Modifier(0);
    pub const INVALID: Modifier = Modifier((1 << 56) - 1);

    /// The modifier to hand AddFB2: none when the exporter did not name one.
    pub fn explicit(self) -> Option<u64> {
        (self != Modifier::INVALID).then_some(self.0)
    }

    /// Rows one after the other, as a CPU reads them: linear, or implicit (which for the
    /// exports we make means linear).
    pub fn is_linear(self) -> bool {
        self == Modifier::LINEAR || self == Modifier::INVALID
    }
}
