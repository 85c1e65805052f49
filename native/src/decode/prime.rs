//! Decoded frames that live in dma-bufs: a VAAPI surface exported as DRM PRIME, or a buffer of
//! the udmabuf export pool. The KMS engine imports them through PRIME and scans them out with
//! no CPU copy. A `PrimeFrame` is the claim on the underlying surface: while any output shows
//! it (or a commit that will) the engine holds an `Arc` of it, and the decoder cannot reuse the
//! surface until the last one is dropped.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ffmpeg_next::ffi;

use super::layout::{flatten, Layer};
use crate::dmabuf::format::NV12;
use crate::dmabuf::udmabuf::{memfd_sealed, udmabuf_from_memfd};

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
    backing: Backing,
}

enum Backing {
    /// The DRM_PRIME mapping of a VAAPI frame: it references the surface, so the decoder's
    /// pool skips that surface until this is freed.
    /// The counter is the decoder's count of frames alive, for back-pressure.
    Av(*mut ffi::AVFrame, Arc<AtomicUsize>),
    /// A buffer of the export pool; `Arc::strong_count` tells the pool whether it is free.
    Pool(Arc<PoolBuffer>),
}

// The AVFrame is only read (descriptor) and freed once, from whichever thread drops the last Arc.
unsafe impl Send for PrimeFrame {}
unsafe impl Sync for PrimeFrame {}

impl Drop for PrimeFrame {
    fn drop(&mut self) {
        if let Backing::Av(frame, claims) = &mut self.backing {
            unsafe { ffi::av_frame_free(frame) };
            claims.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl PrimeFrame {
    /// Calls `f` with the objects and planes in the form `DmaBufDesc` takes, built on the stack.
    pub fn with_layout<R>(
        &self,
        f: impl FnOnce(&[(BorrowedFd<'_>, u64)], &[(usize, u32, u32)]) -> R,
    ) -> R {
        let objects: [(BorrowedFd<'_>, u64); 4] = std::array::from_fn(|i| {
            let (fd, size) = self.objects[i.min(self.object_count - 1)];
            // The fds stay open as long as self does (owned by the mapping or the pool).
            (unsafe { BorrowedFd::borrow_raw(fd) }, size)
        });
        f(
            &objects[..self.object_count],
            &self.planes[..self.plane_count],
        )
    }

    /// The frame's NV12 bytes when the CPU can see them (pool buffers); VAAPI surfaces are not
    /// mapped for the CPU: reading them would defeat the point.
    pub fn cpu_bytes(&self) -> Option<&[u8]> {
        match &self.backing {
            Backing::Pool(buffer) => Some(&buffer.bytes()[..buffer.used]),
            Backing::Av(..) => None,
        }
    }

    /// Takes ownership of a DRM_PRIME frame mapped from a VAAPI surface and lays its layers
    /// out as one framebuffer (`layout::flatten`: NV12 and P010 split into layers, CCS aux
    /// planes after the main ones). A layout it does not understand is an error naming it;
    /// the frame is freed either way. `claims` counts the frames alive (back-pressure).
    ///
    /// # Safety
    /// `frame` must be a valid AVFrame of format AV_PIX_FMT_DRM_PRIME; this takes ownership.
    pub unsafe fn from_drm_frame(
        frame: *mut ffi::AVFrame,
        claims: &Arc<AtomicUsize>,
    ) -> Result<PrimeFrame, String> {
        claims.fetch_add(1, Ordering::Relaxed);
        let mut owned = PrimeFrame {
            width: unsafe { (*frame).width } as u32,
            height: unsafe { (*frame).height } as u32,
            format: 0,
            modifier: 0,
            objects: [(-1, 0); 4],
            object_count: 0,
            planes: [(0, 0, 0); 4],
            plane_count: 0,
            backing: Backing::Av(frame, Arc::clone(claims)),
        };
        let desc = unsafe { &*((*frame).data[0] as *const DrmFrameDescriptor) };
        let objects = desc.nb_objects.clamp(0, 4) as usize;
        if objects == 0 {
            return Err("the DRM PRIME descriptor has no objects".into());
        }
        for (i, o) in desc.objects[..objects].iter().enumerate() {
            owned.objects[i] = (o.fd, o.size as u64);
        }
        owned.object_count = objects;
        // One modifier per framebuffer: objects that disagree cannot be one.
        owned.modifier = desc.objects[0].format_modifier;
        if let Some(o) = desc.objects[..objects]
            .iter()
            .find(|o| o.format_modifier != owned.modifier)
        {
            return Err(format!(
                "objects with different modifiers ({:#018x}, {:#018x})",
                owned.modifier, o.format_modifier
            ));
        }
        let mut planes = [[(0usize, 0u32, 0u32); 4]; 4];
        let count = desc.nb_layers.clamp(0, 4) as usize;
        let mut layers = [Layer {
            format: 0,
            planes: &[],
        }; 4];
        for (i, layer) in desc.layers[..count].iter().enumerate() {
            let n = layer.nb_planes.clamp(0, 4) as usize;
            for (j, p) in layer.planes[..n].iter().enumerate() {
                planes[i][j] = (
                    p.object_index.max(0) as usize,
                    p.offset as u32,
                    p.pitch as u32,
                );
            }
        }
        for (i, layer) in desc.layers[..count].iter().enumerate() {
            layers[i] = Layer {
                format: layer.format,
                planes: &planes[i][..layer.nb_planes.clamp(0, 4) as usize],
            };
        }
        let flat = flatten(&layers[..count], objects, owned.modifier)?;
        owned.format = flat.format;
        owned.planes = flat.planes;
        owned.plane_count = flat.count;
        Ok(owned)
    }
}

/// A fixed set of udmabuf-backed NV12 buffers. Software decode writes each frame into a free
/// one and hands it on as a `PrimeFrame`: the same journey a VAAPI surface makes, so the
/// engine's zero-copy path (import cache, claims until flipped away) runs without a GPU.
pub struct ExportPool {
    buffers: Vec<Arc<PoolBuffer>>,
    /// Why the buffers are plain memfds rather than dma-bufs (no /dev/udmabuf): CPU readers
    /// such as virtual outputs still work, KMS cannot import them.
    pub memfd_only: Option<String>,
    size: usize,
    width: u32,
    height: u32,
}

pub struct PoolBuffer {
    dmabuf: OwnedFd,
    // Kept open: the dma-buf's pages belong to it.
    _memfd: OwnedFd,
    map: *mut u8,
    len: usize,
    used: usize,
}

unsafe impl Send for PoolBuffer {}
unsafe impl Sync for PoolBuffer {}

impl PoolBuffer {
    fn bytes(&self) -> &[u8] {
        unsafe { std::slice::from_raw_parts(self.map, self.len) }
    }
}

impl Drop for PoolBuffer {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.map.cast(), self.len) };
    }
}

impl ExportPool {
    /// Buffers for `count` frames of `width`x`height` NV12; `count` must cover the newest frame,
    /// the one being written and every frame the engine may hold (on screen and in flight).
    pub fn new(count: usize, width: u32, height: u32) -> Result<ExportPool, String> {
        let size = crate::decode::nv12::nv12_size(width as usize, height as usize);
        let mut buffers = Vec::with_capacity(count);
        let mut memfd_only = None;
        for _ in 0..count {
            let (memfd, len) = memfd_sealed(size).map_err(|e| e.to_string())?;
            let dmabuf = match udmabuf_from_memfd(&memfd, len) {
                Ok(fd) => fd,
                Err(e) => {
                    memfd_only = Some(e.to_string());
                    memfd
                        .try_clone()
                        .map_err(|e| format!("dup of the export memfd: {e}"))?
                }
            };
            let map = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    memfd.as_raw_fd(),
                    0,
                )
            };
            if map == libc::MAP_FAILED {
                return Err(format!(
                    "mmap of the export buffer: {}",
                    std::io::Error::last_os_error()
                ));
            }
            buffers.push(Arc::new(PoolBuffer {
                dmabuf,
                _memfd: memfd,
                map: map.cast(),
                len,
                used: size,
            }));
        }
        Ok(ExportPool {
            buffers,
            memfd_only,
            size,
            width,
            height,
        })
    }

    pub fn fits(&self, width: u32, height: u32) -> bool {
        (self.width, self.height) == (width, height)
    }

    /// Whether a buffer is free (no output and no ring slot holds it).
    pub fn has_free(&self) -> bool {
        self.buffers.iter().any(|b| Arc::strong_count(b) == 1)
    }

    /// Buffers in the pool.
    pub fn buffer_count(&self) -> usize {
        self.buffers.len()
    }

    /// Fills a free buffer with `write` and returns it as a frame, or None when every buffer
    /// is still claimed (the caller drops this frame rather than overwrite one on screen).
    pub fn export(&mut self, write: impl FnOnce(&mut [u8]) -> usize) -> Option<PrimeFrame> {
        let buffer = self.buffers.iter().find(|b| Arc::strong_count(b) == 1)?;
        // Only the pool holds this buffer, so nothing reads it while it is written.
        let bytes = unsafe { std::slice::from_raw_parts_mut(buffer.map, self.size) };
        write(bytes);
        let (w, h) = (self.width, self.height);
        let luma = w * h;
        Some(PrimeFrame {
            width: w,
            height: h,
            format: NV12,
            // Linear: what a memfd holds.
            modifier: 0,
            objects: [
                (buffer.dmabuf.as_raw_fd(), buffer.len as u64),
                (-1, 0),
                (-1, 0),
                (-1, 0),
            ],
            object_count: 1,
            planes: [
                (0, 0, w),
                (0, luma, w.div_ceil(2) * 2),
                (0, 0, 0),
                (0, 0, 0),
            ],
            plane_count: 2,
            backing: Backing::Pool(Arc::clone(buffer)),
        })
    }
}

/// libavutil/hwcontext_drm.h, which the ffmpeg-sys bindings leave out. Its layout is part of
/// FFmpeg's stable ABI.
#[repr(C)]
struct DrmObjectDescriptor {
    fd: libc::c_int,
    size: libc::size_t,
    format_modifier: u64,
}

#[repr(C)]
struct DrmPlaneDescriptor {
    object_index: libc::c_int,
    offset: libc::ptrdiff_t,
    pitch: libc::ptrdiff_t,
}

#[repr(C)]
struct DrmLayerDescriptor {
    format: u32,
    nb_planes: libc::c_int,
    planes: [DrmPlaneDescriptor; 4],
}

#[repr(C)]
struct DrmFrameDescriptor {
    nb_objects: libc::c_int,
    objects: [DrmObjectDescriptor; 4],
    nb_layers: libc::c_int,
    layers: [DrmLayerDescriptor; 4],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_pool_hands_out_nothing_until_a_frame_is_let_go() {
        let mut pool = ExportPool::new(3, 16, 8).unwrap();
        assert_eq!(pool.buffer_count(), 3);
        let held: Vec<PrimeFrame> = (0..3)
            .map(|i| {
                pool.export(|out| {
                    out.fill(i);
                    out.len()
                })
            })
            .map(|f| f.expect("a free buffer"))
            .collect();
        assert!(!pool.has_free());
        assert!(
            pool.export(|out| out.len()).is_none(),
            "never overwrites a held frame"
        );
        let mut held = held;
        let second = held.remove(1);
        assert_eq!(second.cpu_bytes().unwrap()[0], 1);
        drop(second);
        assert!(pool.has_free());
        let again = pool.export(|out| {
            out.fill(9);
            out.len()
        });
        assert_eq!(
            again.unwrap().cpu_bytes().unwrap()[0],
            9,
            "the freed buffer, rewritten"
        );
        assert_eq!(held[0].cpu_bytes().unwrap()[0], 0, "held frames untouched");
    }
}
