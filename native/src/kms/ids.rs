//! Ids and rectangles that cross modules inside the engine, typed so a plane id cannot be
//! passed where a framebuffer id is meant. JavaScript keeps plain numbers (display.rs
//! converts at the boundary).

/// A KMS plane object id.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlaneId(pub u32);

/// A KMS framebuffer id (AddFB2); `NONE` (0) switches a plane off.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct FbId(pub u32);

impl FbId {
    pub const NONE: FbId = FbId(0);

    pub fn is_none(self) -> bool {
        self == FbId::NONE
    }
}

/// A rectangle: where it starts and how big it is. Sources (buffer pixels) start at unsigned
/// positions (`Rect<u32>`); destinations (CRTC pixels) may start off screen (`Rect<i32>`).
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub struct Rect<P = i32> {
    pub x: P,
    pub y: P,
    pub w: u32,
    pub h: u32,
}

impl<P: Default> Rect<P> {
    /// `w` x `h` at the origin: a whole buffer or a whole mode.
    pub fn sized(w: u32, h: u32) -> Rect<P> {
        Rect {
            x: P::default(),
            y: P::default(),
            w,
            h,
        }
    }
}

/// A buffer in the engine's store. A buffer with a framebuffer is known by that framebuffer's
/// id; one without (CPU-only, shown through converted copies) by an id far above the kernel's.
/// `NONE` (0) is "no buffer": an empty plane.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct BufferId(pub u32);

impl BufferId {
    pub const NONE: BufferId = BufferId(0);

    pub fn is_none(self) -> bool {
        self == BufferId::NONE
    }
}

impl From<FbId> for BufferId {
    fn from(fb: FbId) -> BufferId {
        BufferId(fb.0)
    }
}

/// JavaScript and the screen-copy path name buffers by number.
impl From<u32> for BufferId {
    fn from(id: u32) -> BufferId {
        BufferId(id)
    }
}

/// Ids print as the bare numbers they were, so messages read as before.
macro_rules! id_display {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}
id_display!(BufferId, FbId, PlaneId);
