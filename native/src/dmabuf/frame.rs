//! A frame that lives in dma-bufs, as the decoder hands it on and the engine scans it out: its
//! descriptor (the objects and planes of one layer), the CPU's view of it when it has one, and
//! the claim that keeps its storage from being reused. While any output shows the frame (or a
//! commit that will) the engine holds an `Arc` of it; the exporter reuses the storage only once
//! the last one is dropped.

use std::ffi::c_void;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{DmaBufDesc, Fourcc, Modifier};

/// What keeps a frame's storage from being reused, given back when the frame is dropped.
/// Making one allocates nothing.
pub struct FrameClaim(Claim);

enum Claim {
    /// A share of a buffer its owner reuses once it holds the only reference (a buffer of the
    /// decoder's export pool: `Arc::strong_count` tells the pool whether it is free).
    Shared { _owner: Arc<dyn Send + Sync> },
    /// A handle of the exporter's, given back through `release` (a VAAPI surface mapped as
    /// DRM PRIME: the decoder's surface pool skips that surface until then). `alive` counts
    /// the handles out, for the exporter's back-pressure.
    Handle {
        handle: *mut c_void,
        release: unsafe fn(*mut c_void),
        alive: Arc<AtomicUsize>,
    },
}

// The handle is only given back, once, from whichever thread drops the claim; the caller of
// `FrameClaim::handle` vouches that this may be any thread.
unsafe impl Send for FrameClaim {}
unsafe impl Sync for FrameClaim {}

impl FrameClaim {
    /// A share of `owner`, dropped with the frame.
    pub fn shared(owner: Arc<dyn Send + Sync>) -> FrameClaim {
        FrameClaim(Claim::Shared { _owner: owner })
    }

    /// Counts one more handle in `alive`; dropping the claim calls `release(handle)` and
    /// counts it back.
    ///
    /// # Safety
    /// `release(handle)` must be sound exactly once, from any thread, and nothing else may
    /// free `handle`.
    pub unsafe fn handle(
        handle: *mut c_void,
        release: unsafe fn(*mut c_void),
        alive: &Arc<AtomicUsize>,
    ) -> FrameClaim {
        alive.fetch_add(1, Ordering::Relaxed);
        FrameClaim(Claim::Handle {
            handle,
            release,
            alive: Arc::clone(alive),
        })
    }
}

impl Drop for FrameClaim {
    fn drop(&mut self) {
        if let Claim::Handle {
            handle,
            release,
            alive,
        } = &self.0
        {
            unsafe { release(*handle) };
            alive.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

pub struct PrimeFrame {
    pub width: u32,
    pub height: u32,
    /// DRM fourcc of the single (possibly flattened) layer.
    pub format: u32,
    pub modifier: u64,
    objects: [(RawFd, u64); 4],
    object_count: usize,
    planes: [(usize, u32, u32); 4],
    plane_count: usize,
    /// The frame's bytes when the CPU can see them (a mapping the claim keeps alive).
    cpu: Option<(*const u8, usize)>,
    _claim: FrameClaim,
}

// The fds and the CPU view are only read, and stay valid as long as the claim (see `new`).
unsafe impl Send for PrimeFrame {}
unsafe impl Sync for PrimeFrame {}

impl PrimeFrame {
    /// The frame `desc` describes (1 to 4 objects, at most 4 planes), held by `claim`; `cpu`
    /// is its bytes when the CPU can see them.
    ///
    /// # Safety
    /// The fds of `desc` and the bytes of `cpu` must stay valid, and `cpu` unwritten, as long
    /// as `claim` is held.
    pub unsafe fn new(desc: &DmaBufDesc<'_>, cpu: Option<&[u8]>, claim: FrameClaim) -> PrimeFrame {
        assert!(
            (1..=4).contains(&desc.objects.len()) && desc.planes.len() <= 4,
            "a frame has 1 to 4 objects and at most 4 planes"
        );
        let mut objects = [(-1, 0); 4];
        for (to, (fd, size)) in objects.iter_mut().zip(desc.objects) {
            *to = (fd.as_raw_fd(), *size);
        }
        let mut planes = [(0, 0, 0); 4];
        planes[..desc.planes.len()].copy_from_slice(desc.planes);
        PrimeFrame {
            width: desc.width,
            height: desc.height,
            format: desc.format.0,
            modifier: desc.modifier.0,
            objects,
            object_count: desc.objects.len(),
            planes,
            plane_count: desc.planes.len(),
            cpu: cpu.map(|bytes| (bytes.as_ptr(), bytes.len())),
            _claim: claim,
        }
    }

    /// Calls `f` with the frame's descriptor, built on the stack.
    pub fn with_desc<R>(&self, f: impl FnOnce(&DmaBufDesc<'_>) -> R) -> R {
        let objects: [(BorrowedFd<'_>, u64); 4] = std::array::from_fn(|i| {
            let (fd, size) = self.objects[i.min(self.object_count - 1)];
            // The fds stay open as long as self does (kept by the claim).
            (unsafe { BorrowedFd::borrow_raw(fd) }, size)
        });
        f(&DmaBufDesc {
            width: self.width,
            height: self.height,
            format: Fourcc(self.format),
            modifier: Modifier(self.modifier),
            objects: &objects[..self.object_count],
            planes: &self.planes[..self.plane_count],
        })
    }

    /// The frame's bytes when the CPU can see them (buffers of the export pool); VAAPI
    /// surfaces are not mapped for the CPU: reading them would defeat the point.
    pub fn cpu_bytes(&self) -> Option<&[u8]> {
        // Valid and unwritten while the claim is held (see `new`).
        self.cpu
            .map(|(ptr, len)| unsafe { std::slice::from_raw_parts(ptr, len) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static RELEASED: AtomicUsize = AtomicUsize::new(0);

    unsafe fn count_release(handle: *mut c_void) {
        assert_eq!(handle as usize, 0x1000);
        RELEASED.fetch_add(1, Ordering::Relaxed);
    }

    #[test]
    fn a_claim_is_given_back_once_when_its_frame_goes() {
        let alive = Arc::new(AtomicUsize::new(0));
        let fd = std::fs::File::open("/dev/null").unwrap();
        let objects = [(std::os::fd::AsFd::as_fd(&fd), 4096u64)];
        let desc = DmaBufDesc {
            width: 16,
            height: 8,
            format: Fourcc(super::super::format::NV12),
            modifier: Modifier::LINEAR,
            objects: &objects,
            planes: &[(0, 0, 16), (0, 128, 16)],
        };
        let claim = unsafe { FrameClaim::handle(0x1000 as *mut c_void, count_release, &alive) };
        let frame = Arc::new(unsafe { PrimeFrame::new(&desc, None, claim) });
        assert_eq!(alive.load(Ordering::Relaxed), 1);
        let held = Arc::clone(&frame);
        drop(frame);
        assert_eq!(RELEASED.load(Ordering::Relaxed), 0, "still held");
        held.with_desc(|d| {
            assert_eq!(
                (d.objects.len(), d.planes),
                (1, &[(0, 0, 16), (0, 128, 16)][..])
            );
        });
        drop(held);
        assert_eq!(RELEASED.load(Ordering::Relaxed), 1);
        assert_eq!(alive.load(Ordering::Relaxed), 0);

        // A shared claim: the owner sees the frame as a reference until it goes.
        let owner = Arc::new(vec![7u8; 4]);
        let shared: Arc<dyn Send + Sync> = owner.clone();
        let frame = unsafe { PrimeFrame::new(&desc, Some(&owner[..]), FrameClaim::shared(shared)) };
        assert_eq!(Arc::strong_count(&owner), 2);
        assert_eq!(frame.cpu_bytes(), Some(&[7u8; 4][..]));
        drop(frame);
        assert_eq!(Arc::strong_count(&owner), 1);
    }
}
