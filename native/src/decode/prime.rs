//! Decoded frames that live in dma-bufs, made into `PrimeFrame`s (`crate::dmabuf::frame`): a
//! VAAPI surface exported as DRM PRIME, or a buffer of the udmabuf export pool. The KMS engine
//! imports them through PRIME and scans them out with no CPU copy; each frame's claim keeps
//! its surface or buffer from being reused until the last holder lets go.

use std::ffi::c_void;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use ffmpeg_next::ffi;

use super::layout::{flatten, Layer};
use crate::dmabuf::format::NV12;
use crate::dmabuf::udmabuf::{memfd_sealed, udmabuf_from_memfd};
use crate::dmabuf::{DmaBufDesc, Fourcc, FrameClaim, Modifier, PrimeFrame};

/// Takes ownership of a DRM_PRIME frame mapped from a VAAPI surface and lays its layers out as
/// one framebuffer (`layout::flatten`: NV12 and P010 split into layers, CCS aux planes after
/// the main ones). A layout it does not understand is an error naming it; the frame is freed
/// either way. `claims` counts the frames alive (back-pressure): the frame's claim holds the
/// mapping, which references the surface, so the decoder's pool skips that surface until the
/// frame is dropped.
///
/// # Safety
/// `frame` must be a valid AVFrame of format AV_PIX_FMT_DRM_PRIME; this takes ownership.
pub unsafe fn from_drm_frame(
    frame: *mut ffi::AVFrame,
    claims: &Arc<AtomicUsize>,
) -> Result<PrimeFrame, String> {
    // The AVFrame is only read (descriptor) and freed once, by whichever thread drops the
    // claim: here on an error, or with the frame.
    let claim = unsafe { FrameClaim::handle(frame.cast(), av_frame_release, claims) };
    let (width, height) = unsafe { ((*frame).width as u32, (*frame).height as u32) };
    let desc = unsafe { &*((*frame).data[0] as *const DrmFrameDescriptor) };
    let objects = desc.nb_objects.clamp(0, 4) as usize;
    if objects == 0 {
        return Err("the DRM PRIME descriptor has no objects".into());
    }
    // The fds stay open as long as the mapping, which the claim holds.
    let fds: [(BorrowedFd<'_>, u64); 4] = std::array::from_fn(|i| {
        let o = &desc.objects[i.min(objects - 1)];
        (unsafe { BorrowedFd::borrow_raw(o.fd) }, o.size as u64)
    });
    // One modifier per framebuffer: objects that disagree cannot be one.
    let modifier = desc.objects[0].format_modifier;
    if let Some(o) = desc.objects[..objects]
        .iter()
        .find(|o| o.format_modifier != modifier)
    {
        return Err(format!(
            "objects with different modifiers ({:#018x}, {:#018x})",
            modifier, o.format_modifier
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
    let flat = flatten(&layers[..count], objects, modifier)?;
    let desc = DmaBufDesc {
        width,
        height,
        format: Fourcc(flat.format),
        modifier: Modifier(modifier),
        objects: &fds[..objects],
        planes: &flat.planes[..flat.count],
    };
    Ok(unsafe { PrimeFrame::new(&desc, None, claim) })
}

/// The release of a DRM_PRIME mapping: `handle` is the mapped AVFrame.
unsafe fn av_frame_release(handle: *mut c_void) {
    let mut frame = handle.cast::<ffi::AVFrame>();
    unsafe { ffi::av_frame_free(&mut frame) };
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
        let objects = [(buffer.dmabuf.as_fd(), buffer.len as u64)];
        let planes = [(0, 0, w), (0, luma, w.div_ceil(2) * 2)];
        let desc = DmaBufDesc {
            width: w,
            height: h,
            format: Fourcc(NV12),
            // Linear: what a memfd holds.
            modifier: Modifier::LINEAR,
            objects: &objects,
            planes: &planes,
        };
        let owner: Arc<dyn Send + Sync> = buffer.clone();
        // The dma-buf and the mapping live as long as the buffer, which the claim shares; the
        // pool writes it again only once no frame holds it.
        Some(unsafe {
            PrimeFrame::new(
                &desc,
                Some(&buffer.bytes()[..buffer.used]),
                FrameClaim::shared(owner),
            )
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
