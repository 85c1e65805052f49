//! Dumb buffers: memory the CPU maps and fills, in any format with a layout (formats.rs).

use std::os::fd::AsFd;

use super::super::device::Card;
use super::super::error::{KmsError, KmsResult};
use super::super::formats::{format_layout, fourcc_name, AR24, NV12, XR24};
use super::super::ids::{BufferId, FbId};
use super::{fb_add, Buffer, BufferStore, Storage};

pub struct Mapping {
    pub(super) ptr: *mut u8,
    pub(super) len: usize,
}

// The mapping is only touched under the engine lock.
unsafe impl Send for Mapping {}

impl Mapping {
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

impl BufferStore {
    pub fn dumb_create(
        &mut self,
        card: &Card,
        width: u32,
        height: u32,
        format: u32,
    ) -> KmsResult<BufferId> {
        let (bpp, _, vsub) = format_layout(format).ok_or_else(|| {
            KmsError::BadBuffer(format!(
                "dumb buffers in {} are not supported",
                fourcc_name(format)
            ))
        })?;
        if width == 0 || height == 0 || width > 16384 || height > 16384 {
            return Err(KmsError::BadBuffer(format!(
                "size {width}x{height} out of range"
            )));
        }
        // One allocation holds every plane: rows of the first plane, then the subsampled ones.
        let rows = height + (1..bpp.len()).map(|_| height.div_ceil(vsub)).sum::<u32>();
        let created =
            match drm_ffi::mode::dumbbuffer::create(card.as_fd(), width, rows, bpp[0] * 8, 0) {
                Ok(created) => created,
                // Some drivers (virtio-gpu) make only 32-bit dumb buffers: ask for one as many
                // bytes wide, which yields a pitch that also serves the 8-bit rows.
                Err(e) if bpp[0] < 4 && e.raw_os_error() == Some(libc::EINVAL) => {
                    drm_ffi::mode::dumbbuffer::create(
                        card.as_fd(),
                        (width * bpp[0]).div_ceil(4),
                        rows,
                        32,
                        0,
                    )
                    .map_err(|e| KmsError::Ioctl("create dumb buffer", e))?
                }
                Err(e) => return Err(KmsError::Ioctl("create dumb buffer", e)),
            };
        let pitch = created.pitch;
        let mut pitches = [0; 4];
        let mut offsets = [0; 4];
        let mut offset = 0;
        // With 2x2 subsampling a chroma row holds as many bytes as a luma row, so one pitch serves all.
        for i in 0..bpp.len() {
            pitches[i] = pitch;
            offsets[i] = offset;
            offset += pitch
                * if i == 0 {
                    height
                } else {
                    height.div_ceil(vsub)
                };
        }
        let map = match dumb_map(card, created.handle, created.size as usize) {
            Ok(map) => map,
            Err(e) => {
                let _ = drm_ffi::mode::dumbbuffer::destroy(card.as_fd(), created.handle);
                return Err(e);
            }
        };
        let handles = [created.handle; 4];
        let fb = match fb_add(
            card,
            width,
            height,
            format,
            None,
            &handles,
            &pitches,
            &offsets,
            bpp.len(),
            false,
        ) {
            Ok(fb) => fb,
            // No plane takes it (the kernel refuses AddFB2 then): keep it CPU-side and show
            // converted copies of it.
            Err(_) if format == NV12 => FbId::NONE,
            Err(e) => {
                drop(map);
                let _ = drm_ffi::mode::dumbbuffer::destroy(card.as_fd(), created.handle);
                return Err(e);
            }
        };
        let id = if fb.is_none() {
            self.cpu_id_next()
        } else {
            BufferId::from(fb)
        };
        self.buffers.insert(
            id,
            Buffer {
                fb,
                width,
                height,
                format,
                modifier: None,
                pitches,
                offsets,
                storage: Storage::Dumb {
                    handle: created.handle,
                    map,
                },
                screen_refs: 0,
                release_requested: false,
                generation: 0,
            },
        );
        Ok(id)
    }

    /// Copies tightly packed rows (width * bytes-per-pixel per row, planes one after the other)
    /// into a dumb or GBM buffer, honouring its pitches.
    pub fn dumb_write(&mut self, id: BufferId, data: &[u8]) -> KmsResult<()> {
        if let Storage::Gbm { .. } = self.get(id)?.storage {
            self.get_mut(id)?.generation += 1;
            return self.gbm_write(id, data);
        }
        let buffer = self.get_mut(id)?;
        buffer.generation += 1;
        let (bpp, hsub, vsub) = format_layout(buffer.format).expect("dumb formats have layouts");
        let (width, height, pitches, offsets) =
            (buffer.width, buffer.height, buffer.pitches, buffer.offsets);
        let Storage::Dumb { map, .. } = &mut buffer.storage else {
            return Err(KmsError::BadBuffer(format!(
                "buffer {id} is imported; it cannot be written"
            )));
        };
        let plane_rows = |i: usize| {
            if i == 0 {
                height
            } else {
                height.div_ceil(vsub)
            }
        };
        let row_bytes = |i: usize| (if i == 0 { width } else { width.div_ceil(hsub) }) * bpp[i];
        let expected: usize = (0..bpp.len())
            .map(|i| (row_bytes(i) * plane_rows(i)) as usize)
            .sum();
        if data.len() != expected {
            return Err(KmsError::BadBuffer(format!(
                "buffer {id} ({width}x{height} {}) needs {expected} bytes, got {}",
                fourcc_name(buffer.format),
                data.len()
            )));
        }
        let dst = map.bytes_mut();
        let mut src_at = 0;
        for i in 0..bpp.len() {
            let row = row_bytes(i) as usize;
            for y in 0..plane_rows(i) as usize {
                let at = offsets[i] as usize + y * pitches[i] as usize;
                dst[at..at + row].copy_from_slice(&data[src_at..src_at + row]);
                src_at += row;
            }
        }
        Ok(())
    }

    /// The bytes of a dumb buffer as the device last wrote them (a writeback capture).
    pub fn dumb_read(&mut self, id: BufferId) -> KmsResult<Vec<u8>> {
        let buffer = self.get_mut(id)?;
        let len = buffer.pitches[0] as usize * buffer.height as usize;
        let Storage::Dumb { map, .. } = &mut buffer.storage else {
            return Err(KmsError::BadBuffer(format!(
                "buffer {id} is imported; it cannot be read"
            )));
        };
        Ok(map.bytes_mut()[..len].to_vec())
    }

    /// A copy of a dumb XR24 or NV12 buffer with rows packed tightly (for previews and
    /// screenshots): (width, height, fourcc, bytes). Imported buffers are the GPU's and are
    /// not read back.
    pub fn dumb_packed(&mut self, id: BufferId) -> KmsResult<(u32, u32, u32, Vec<u8>)> {
        let buffer = self.get_mut(id)?;
        let (w, h, format) = (buffer.width as usize, buffer.height as usize, buffer.format);
        let (pitches, offsets) = (buffer.pitches, buffer.offsets);
        let Storage::Dumb { map, .. } = &mut buffer.storage else {
            return Err(KmsError::BadBuffer(format!(
                "buffer {id} is imported; it cannot be read"
            )));
        };
        let bytes = map.bytes_mut();
        let mut out = Vec::new();
        let mut rows = |offset: usize, pitch: usize, row_bytes: usize, count: usize| {
            for r in 0..count {
                let at = offset + r * pitch;
                out.extend_from_slice(&bytes[at..at + row_bytes]);
            }
        };
        match format {
            XR24 | AR24 => rows(offsets[0] as usize, pitches[0] as usize, w * 4, h),
            NV12 => {
                rows(offsets[0] as usize, pitches[0] as usize, w, h);
                rows(
                    offsets[1] as usize,
                    pitches[1] as usize,
                    w.div_ceil(2) * 2,
                    h.div_ceil(2),
                );
            }
            other => {
                return Err(KmsError::BadBuffer(format!(
                    "buffer {id} is {}; only XR24 and NV12 are read back",
                    fourcc_name(other)
                )))
            }
        }
        Ok((w as u32, h as u32, format, out))
    }
}

fn dumb_map(card: &Card, handle: u32, len: usize) -> KmsResult<Mapping> {
    let info = drm_ffi::mode::dumbbuffer::map(card.as_fd(), handle, 0, 0)
        .map_err(|e| KmsError::Ioctl("map dumb buffer", e))?;
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            card.raw_fd(),
            info.offset as libc::off_t,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(KmsError::Ioctl(
            "mmap dumb buffer",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(Mapping {
        ptr: ptr.cast(),
        len,
    })
}
