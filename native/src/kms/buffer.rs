//! Scanout buffers: dumb buffers we fill ourselves and dma-bufs imported through PRIME,
//! each wrapped in a framebuffer. Imports are cached by dma-buf identity so a decoder's
//! surface pool is imported once; GEM handles are reference-counted because the kernel
//! hands back the same handle for the same dma-buf; nothing on screen is ever freed.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::convert::{nv12_to_xr24, Nv12Src};
use super::device::Card;
use super::error::{KmsError, KmsResult};
use super::formats::{format_layout, fourcc_name, YuvColor, AR24, MOD_INVALID, NV12, XR24};

pub struct Mapping {
    ptr: *mut u8,
    len: usize,
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

pub enum Storage {
    Dumb {
        handle: u32,
        map: Mapping,
    },
    Imported {
        handles: Vec<u32>,
        key: ImportKey,
    },
    /// A buffer object from Mesa's GBM on this card, for content drawn by the CPU (or, later,
    /// the GPU) in whatever layout the driver prefers for scanout.
    Gbm {
        bo: gbm::BufferObject<()>,
    },
    /// A dma-buf no plane can scan out (the card refused its format): kept as duplicated
    /// fds, read by the CPU when a frame of it is converted. `plane_objects[i]` is the
    /// object holding plane i.
    External {
        fds: Vec<(OwnedFd, u64)>,
        plane_objects: [usize; 4],
        key: ImportKey,
    },
    /// A framebuffer a previous instance of the supervisor left on screen in the card's file
    /// that this one took over: shown until our first frame replaces it, then removed.
    Inherited,
}

pub struct Buffer {
    /// Framebuffer id; 0 when no plane of this card takes the format, so every frame of it
    /// goes through a converted copy (see convert.rs).
    pub fb: u32,
    pub width: u32,
    pub height: u32,
    pub format: u32,
    pub modifier: Option<u64>,
    pub pitches: [u32; 4],
    pub offsets: [u32; 4],
    pub storage: Storage,
    /// Planes showing it now or in a pending commit.
    pub screen_refs: u32,
    pub release_requested: bool,
    /// Bumped by every CPU write, so a converted copy knows whether it is still current.
    pub generation: u64,
}

/// An external buffer described the way FFmpeg's AVDRMFrameDescriptor is.
pub struct DmaBufDesc<'a> {
    pub width: u32,
    pub height: u32,
    pub format: u32,
    pub modifier: u64,
    /// (fd, size) per object. Slices, so a per-frame import can describe itself on the stack.
    pub objects: &'a [(BorrowedFd<'a>, u64)],
    /// (object index, offset, pitch) per plane of the single layer.
    pub planes: &'a [(usize, u32, u32)],
}

/// Identity of an imported buffer: the dma-buf inodes plus how they are laid out.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ImportKey {
    /// Fixed arrays: the key is built for every imported frame and must not allocate.
    inodes: [u64; 4],
    layout: [(usize, u32, u32); 4],
    format: u32,
    modifier: u64,
    size: (u32, u32),
}

#[derive(Default)]
pub struct BufferStore {
    buffers: HashMap<u32, Buffer>,
    gem_refs: HashMap<u32, u32>,
    imports: HashMap<ImportKey, u32>,
    /// Dma-bufs the card refused to import, newest last: asked again, they are refused at
    /// once instead of another round of PRIME and AddFB2 ioctls per vblank.
    refused: Vec<ImportKey>,
    /// DRM_CAP_ADDFB2_MODIFIERS: without it the kernel rejects the modifiers flag.
    pub modifiers_supported: bool,
    /// Ids for buffers without a framebuffer, far above the kernel's small framebuffer ids.
    next_cpu_id: u32,
    /// Opened on first use: most outputs never need GBM, and it loads a Mesa driver.
    gbm: Option<gbm::Device<OwnedFd>>,
}

const CPU_ID_BASE: u32 = 0x4000_0000;

/// Refused imports remembered; a decoder's pool is smaller, so a refused pool stays known.
const REFUSED_MAX: usize = 32;

/// The `KmsError::Ioctl` operation of an import the card refused before.
pub const REFUSED_BEFORE: &str = "import refused before";

impl BufferStore {
    pub fn get(&self, id: u32) -> KmsResult<&Buffer> {
        self.buffers.get(&id).ok_or(KmsError::BufferNotFound(id))
    }

    pub fn get_mut(&mut self, id: u32) -> KmsResult<&mut Buffer> {
        self.buffers
            .get_mut(&id)
            .ok_or(KmsError::BufferNotFound(id))
    }

    pub fn count(&self) -> usize {
        self.buffers.len()
    }

    pub fn dumb_create(
        &mut self,
        card: &Card,
        width: u32,
        height: u32,
        format: u32,
    ) -> KmsResult<u32> {
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
            Err(_) if format == NV12 => 0,
            Err(e) => {
                drop(map);
                let _ = drm_ffi::mode::dumbbuffer::destroy(card.as_fd(), created.handle);
                return Err(e);
            }
        };
        let id = if fb == 0 { self.cpu_id_next() } else { fb };
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

    fn cpu_id_next(&mut self) -> u32 {
        self.next_cpu_id = self.next_cpu_id.wrapping_add(1);
        CPU_ID_BASE + (self.next_cpu_id & (CPU_ID_BASE - 1))
    }

    /// A linear scanout buffer object from GBM (XR24 or AR24). Returns its id.
    pub fn gbm_create(
        &mut self,
        card: &Card,
        width: u32,
        height: u32,
        format: u32,
    ) -> KmsResult<u32> {
        let gbm_format = match format {
            XR24 => gbm::Format::Xrgb8888,
            AR24 => gbm::Format::Argb8888,
            _ => {
                return Err(KmsError::BadBuffer(format!(
                    "GBM buffers in {} are not supported (XR24, AR24)",
                    fourcc_name(format)
                )))
            }
        };
        if width == 0 || height == 0 || width > 16384 || height > 16384 {
            return Err(KmsError::BadBuffer(format!(
                "size {width}x{height} out of range"
            )));
        }
        if self.gbm.is_none() {
            // A dup shares the open file description, so GEM handles from GBM are ours too.
            let fd = card
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| KmsError::Ioctl("dup card fd for GBM", e))?;
            self.gbm = Some(
                gbm::Device::new(fd)
                    .map_err(|e| KmsError::Gbm(format!("gbm_create_device: {e}")))?,
            );
        }
        let device = self.gbm.as_ref().expect("opened above");
        let bo = device
            .create_buffer_object::<()>(
                width,
                height,
                gbm_format,
                gbm::BufferObjectFlags::SCANOUT | gbm::BufferObjectFlags::LINEAR,
            )
            .map_err(|e| {
                KmsError::Gbm(format!(
                    "gbm_bo_create {width}x{height} {}: {e}",
                    fourcc_name(format)
                ))
            })?;
        let handle = unsafe { bo.handle().u32_ };
        let mut pitches = [0; 4];
        let mut offsets = [0; 4];
        pitches[0] = bo.stride();
        offsets[0] = bo.offset(0);
        let modifier = match u64::from(bo.modifier()) {
            MOD_INVALID => None,
            m => Some(m),
        };
        let fb = fb_add(
            card,
            width,
            height,
            format,
            modifier.filter(|_| self.modifiers_supported),
            &[handle, 0, 0, 0],
            &pitches,
            &offsets,
            1,
            self.modifiers_supported,
        )?;
        self.buffers.insert(
            fb,
            Buffer {
                fb,
                width,
                height,
                format,
                modifier,
                pitches,
                offsets,
                storage: Storage::Gbm { bo },
                screen_refs: 0,
                release_requested: false,
                generation: 0,
            },
        );
        Ok(fb)
    }

    /// Copies tightly packed rows (width * bytes-per-pixel per row, planes one after the other)
    /// into a dumb or GBM buffer, honouring its pitches.
    pub fn dumb_write(&mut self, id: u32, data: &[u8]) -> KmsResult<()> {
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

    fn gbm_write(&mut self, id: u32, data: &[u8]) -> KmsResult<()> {
        let buffer = self.get_mut(id)?;
        let (width, height) = (buffer.width, buffer.height);
        let row = width as usize * 4;
        if data.len() != row * height as usize {
            return Err(KmsError::BadBuffer(format!(
                "buffer {id} ({width}x{height} {}) needs {} bytes, got {}",
                fourcc_name(buffer.format),
                row * height as usize,
                data.len()
            )));
        }
        let Storage::Gbm { bo } = &mut buffer.storage else {
            unreachable!("checked by the caller")
        };
        bo.map_mut(0, 0, width, height, |map| {
            let stride = map.stride() as usize;
            let dst = map.buffer_mut();
            for (y, src) in data.chunks_exact(row).enumerate() {
                dst[y * stride..y * stride + row].copy_from_slice(src);
            }
        })
        .map_err(|e| KmsError::Gbm(format!("gbm_bo_map buffer {id}: {e}")))
    }

    /// Converts the current contents of `src` (NV12) into `dst` (an XR24 dumb buffer of the
    /// same size). Returns the bytes the CPU wrote.
    pub fn convert_into(&mut self, src: u32, dst: u32, color: YuvColor) -> KmsResult<usize> {
        let source = self.get(src)?;
        if source.format != NV12 {
            return Err(KmsError::BadBuffer(format!(
                "buffer {src} is {}; only NV12 converts",
                fourcc_name(source.format)
            )));
        }
        let (width, height) = (source.width as usize, source.height as usize);
        let (pitches, offsets) = (source.pitches, source.offsets);
        let target = self.get(dst)?;
        if target.format != XR24
            || target.width as usize != width
            || target.height as usize != height
        {
            return Err(KmsError::BadBuffer(format!(
                "buffer {dst} cannot hold a converted {width}x{height} frame"
            )));
        }
        let dst_pitch = target.pitches[0] as usize;
        let Storage::Dumb { map: dst_map, .. } = &target.storage else {
            return Err(KmsError::BadBuffer(format!(
                "buffer {dst} is not CPU-writable"
            )));
        };
        // Two buffers of one map: the target's mapping is written through its pointer while
        // the source is read, which is sound because they are distinct mappings.
        let dst_bytes = unsafe { std::slice::from_raw_parts_mut(dst_map.ptr, dst_map.len) };
        let source = self.get(src)?;
        // Where the CPU reads the planes: our own mapping, or the dma-buf mapped for this frame
        // (the mappings live until the conversion is done).
        let (y_map, uv_map);
        let (y_bytes, uv_bytes): (&[u8], &[u8]) = match &source.storage {
            Storage::Dumb { map, .. } => {
                let bytes = unsafe { std::slice::from_raw_parts(map.ptr, map.len) };
                (bytes, bytes)
            }
            Storage::External {
                fds, plane_objects, ..
            } => {
                y_map = DmaBufRead::map(&fds[plane_objects[0]])?;
                uv_map = if plane_objects[1] == plane_objects[0] {
                    None
                } else {
                    Some(DmaBufRead::map(&fds[plane_objects[1]])?)
                };
                let y = y_map.bytes();
                (y, uv_map.as_ref().map_or(y, DmaBufRead::bytes))
            }
            Storage::Imported { .. } | Storage::Gbm { .. } | Storage::Inherited => {
                return Err(KmsError::BadBuffer(format!(
                    "buffer {src} is scanned out directly; it has no CPU view"
                )))
            }
        };
        let fits = |bytes: &[u8], offset: u32, pitch: u32, rows: usize| {
            offset as usize + pitch as usize * rows <= bytes.len()
        };
        if !fits(y_bytes, offsets[0], pitches[0], height)
            || !fits(uv_bytes, offsets[1], pitches[1], height.div_ceil(2))
        {
            return Err(KmsError::BadBuffer(format!(
                "buffer {src}: planes run past the end of the dma-buf"
            )));
        }
        let planes = Nv12Src {
            y: &y_bytes[offsets[0] as usize..],
            y_pitch: pitches[0] as usize,
            uv: &uv_bytes[offsets[1] as usize..],
            uv_pitch: pitches[1] as usize,
        };
        Ok(nv12_to_xr24(
            &planes, color, width, height, dst_bytes, dst_pitch,
        ))
    }

    /// The bytes of a dumb buffer as the device last wrote them (a writeback capture).
    pub fn dumb_read(&mut self, id: u32) -> KmsResult<Vec<u8>> {
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
    pub fn dumb_packed(&mut self, id: u32) -> KmsResult<(u32, u32, u32, Vec<u8>)> {
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

    pub fn dmabuf_import(&mut self, card: &Card, desc: &DmaBufDesc<'_>) -> KmsResult<(u32, bool)> {
        if desc.planes.is_empty()
            || desc.planes.len() > 4
            || desc.objects.is_empty()
            || desc.objects.len() > 4
        {
            return Err(KmsError::BadBuffer(
                "a dma-buf needs 1-4 objects and 1-4 planes".into(),
            ));
        }
        let mut inodes = [0u64; 4];
        for (i, (fd, _)) in desc.objects.iter().enumerate() {
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            if unsafe { libc::fstat(std::os::fd::AsRawFd::as_raw_fd(fd), &mut st) } != 0 {
                return Err(KmsError::BadBuffer(format!(
                    "fd {}: {}",
                    std::os::fd::AsRawFd::as_raw_fd(fd),
                    std::io::Error::last_os_error()
                )));
            }
            inodes[i] = st.st_ino;
        }
        let mut layout = [(0, 0, 0); 4];
        layout[..desc.planes.len()].copy_from_slice(desc.planes);
        let key = ImportKey {
            inodes,
            layout,
            format: desc.format,
            modifier: desc.modifier,
            size: (desc.width, desc.height),
        };
        if let Some(&fb) = self.imports.get(&key) {
            return Ok((fb, true));
        }
        if self.refused.contains(&key) {
            return Err(KmsError::Ioctl(
                REFUSED_BEFORE,
                std::io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        for &(object, _, _) in desc.planes {
            if object >= desc.objects.len() {
                return Err(KmsError::BadBuffer(format!(
                    "a plane names object {object}, but there are {}",
                    desc.objects.len()
                )));
            }
        }
        match self.prime_import(card, desc, &key) {
            Ok(fb) => Ok((fb, false)),
            // Linear NV12 the card cannot scan out: keep it for CPU conversion instead.
            Err(_)
                if desc.format == NV12
                    && (desc.modifier == MOD_INVALID || desc.modifier == 0)
                    && desc.planes.len() == 2 =>
            {
                self.external_keep(desc, key).map(|id| (id, false))
            }
            Err(e) => {
                if self.refused.len() >= REFUSED_MAX {
                    self.refused.remove(0);
                }
                self.refused.push(key);
                Err(e)
            }
        }
    }

    fn external_keep(&mut self, desc: &DmaBufDesc<'_>, key: ImportKey) -> KmsResult<u32> {
        let mut fds = Vec::with_capacity(desc.objects.len());
        for (fd, size) in desc.objects {
            let owned = fd
                .try_clone_to_owned()
                .map_err(|e| KmsError::Ioctl("dup dma-buf fd", e))?;
            fds.push((owned, *size));
        }
        let mut plane_objects = [0; 4];
        let mut pitches = [0; 4];
        let mut offsets = [0; 4];
        for (i, &(object, offset, pitch)) in desc.planes.iter().enumerate() {
            plane_objects[i] = object;
            pitches[i] = pitch;
            offsets[i] = offset;
        }
        let id = self.cpu_id_next();
        self.imports.insert(key.clone(), id);
        self.buffers.insert(
            id,
            Buffer {
                fb: 0,
                width: desc.width,
                height: desc.height,
                format: desc.format,
                modifier: None,
                pitches,
                offsets,
                storage: Storage::External {
                    fds,
                    plane_objects,
                    key,
                },
                screen_refs: 0,
                release_requested: false,
                generation: 0,
            },
        );
        Ok(id)
    }

    fn prime_import(
        &mut self,
        card: &Card,
        desc: &DmaBufDesc<'_>,
        key: &ImportKey,
    ) -> KmsResult<u32> {
        let mut object_handles = Vec::with_capacity(desc.objects.len());
        for (fd, _) in desc.objects {
            match drm_ffi::gem::fd_to_handle(card.as_fd(), *fd) {
                Ok(prime) => {
                    *self.gem_refs.entry(prime.handle).or_insert(0) += 1;
                    object_handles.push(prime.handle);
                }
                Err(e) => {
                    self.gem_release(card, &object_handles);
                    return Err(KmsError::Ioctl("PRIME import", e));
                }
            }
        }
        let mut handles = [0; 4];
        let mut pitches = [0; 4];
        let mut offsets = [0; 4];
        for (i, &(object, offset, pitch)) in desc.planes.iter().enumerate() {
            let Some(&handle) = object_handles.get(object) else {
                self.gem_release(card, &object_handles);
                return Err(KmsError::BadBuffer(format!(
                    "plane {i} names object {object}, which does not exist"
                )));
            };
            handles[i] = handle;
            pitches[i] = pitch;
            offsets[i] = offset;
        }
        let modifier = (desc.modifier != MOD_INVALID).then_some(desc.modifier);
        let fb = match fb_add(
            card,
            desc.width,
            desc.height,
            desc.format,
            modifier,
            &handles,
            &pitches,
            &offsets,
            desc.planes.len(),
            self.modifiers_supported,
        ) {
            Ok(fb) => fb,
            Err(e) => {
                self.gem_release(card, &object_handles);
                return Err(e);
            }
        };
        self.imports.insert(key.clone(), fb);
        self.buffers.insert(
            fb,
            Buffer {
                fb,
                width: desc.width,
                height: desc.height,
                format: desc.format,
                modifier,
                pitches,
                offsets,
                storage: Storage::Imported {
                    handles: object_handles,
                    key: key.clone(),
                },
                screen_refs: 0,
                release_requested: false,
                generation: 0,
            },
        );
        Ok(fb)
    }

    /// Frees the buffer now if nothing shows it, else as soon as the last flip away from it lands.
    pub fn release(&mut self, card: &Card, id: u32) -> KmsResult<bool> {
        let buffer = self.get_mut(id)?;
        buffer.release_requested = true;
        if buffer.screen_refs > 0 {
            return Ok(false);
        }
        self.destroy(card, id);
        Ok(true)
    }

    pub fn screen_ref(&mut self, id: u32) {
        if let Some(b) = self.buffers.get_mut(&id) {
            b.screen_refs += 1;
        }
    }

    pub fn screen_unref(&mut self, card: &Card, id: u32) {
        let Some(b) = self.buffers.get_mut(&id) else {
            return;
        };
        b.screen_refs = b.screen_refs.saturating_sub(1);
        if b.screen_refs == 0 && b.release_requested {
            self.destroy(card, id);
        }
    }

    /// Takes a framebuffer left by a previous instance into the store, to be removed as soon as
    /// no plane shows it (`screen_unref`, or `inherited_release_unshown` after the first commit).
    pub fn inherited_add(&mut self, fb: u32, width: u32, height: u32) {
        self.buffers.insert(
            fb,
            Buffer {
                fb,
                width,
                height,
                format: 0,
                modifier: None,
                pitches: [0; 4],
                offsets: [0; 4],
                storage: Storage::Inherited,
                screen_refs: 0,
                release_requested: true,
                generation: 0,
            },
        );
    }

    /// The inherited framebuffer of this size, if `fb` is one (an output may keep showing it).
    pub fn inherited_fits(&self, fb: u32, width: u32, height: u32) -> bool {
        self.buffers.get(&fb).is_some_and(|b| {
            matches!(b.storage, Storage::Inherited) && b.width == width && b.height == height
        })
    }

    /// Removes the inherited framebuffers no output kept. Returns how many.
    pub fn inherited_release_unshown(&mut self, card: &Card) -> usize {
        let unshown: Vec<u32> = self
            .buffers
            .iter()
            .filter(|(_, b)| matches!(b.storage, Storage::Inherited) && b.screen_refs == 0)
            .map(|(&id, _)| id)
            .collect();
        for &id in &unshown {
            self.destroy(card, id);
        }
        unshown.len()
    }

    /// Everything, at close: the planes are being switched off, so screen refs no longer matter.
    pub fn destroy_all(&mut self, card: &Card) {
        let ids: Vec<u32> = self.buffers.keys().copied().collect();
        for id in ids {
            self.destroy(card, id);
        }
    }

    fn destroy(&mut self, card: &Card, id: u32) {
        let Some(buffer) = self.buffers.remove(&id) else {
            return;
        };
        let _ = drm_ffi::mode::rm_fb(card.as_fd(), buffer.fb);
        match buffer.storage {
            Storage::Dumb { handle, map } => {
                drop(map);
                let _ = drm_ffi::mode::dumbbuffer::destroy(card.as_fd(), handle);
            }
            Storage::Imported { handles, key } => {
                self.imports.remove(&key);
                self.gem_release(card, &handles);
            }
            Storage::External { key, .. } => {
                self.imports.remove(&key);
            }
            // Dropping the object frees it (after its framebuffer, removed above).
            Storage::Gbm { bo } => drop(bo),
            // Its buffer handles were closed at the takeover; the framebuffer held the memory.
            Storage::Inherited => {}
        }
    }

    fn gem_release(&mut self, card: &Card, handles: &[u32]) {
        for &handle in handles {
            let count = self.gem_refs.entry(handle).or_insert(1);
            *count -= 1;
            if *count == 0 {
                self.gem_refs.remove(&handle);
                let _ = drm_ffi::gem::close(card.as_fd(), handle);
            }
        }
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

#[allow(clippy::too_many_arguments)]
fn fb_add(
    card: &Card,
    width: u32,
    height: u32,
    format: u32,
    modifier: Option<u64>,
    handles: &[u32; 4],
    pitches: &[u32; 4],
    offsets: &[u32; 4],
    planes: usize,
    modifiers_supported: bool,
) -> KmsResult<u32> {
    let mut h = [0; 4];
    let mut p = [0; 4];
    let mut o = [0; 4];
    let mut m = [0; 4];
    let use_modifier = modifier.is_some() && modifiers_supported;
    if modifier.is_some_and(|m| m != 0) && !modifiers_supported {
        return Err(KmsError::BadBuffer(format!(
            "modifier {:#x} given but the device does not accept framebuffer modifiers",
            modifier.unwrap_or(0)
        )));
    }
    for i in 0..planes {
        h[i] = handles[i];
        p[i] = pitches[i];
        o[i] = offsets[i];
        m[i] = if use_modifier {
            modifier.unwrap_or(0)
        } else {
            0
        };
    }
    let flags = if use_modifier {
        drm_ffi::DRM_MODE_FB_MODIFIERS
    } else {
        0
    };
    drm_ffi::mode::add_fb2(card.as_fd(), width, height, format, &h, &p, &o, &m, flags)
        .map(|fb| fb.fb_id)
        .map_err(|e| {
            KmsError::BadBuffer(format!(
                "AddFB2 {width}x{height} {} refused: {e}",
                fourcc_name(format)
            ))
        })
}

/// A read-only CPU view of a dma-buf, bracketed by DMA_BUF_IOCTL_SYNC so caches are coherent
/// with whatever device wrote it.
struct DmaBufRead {
    fd: i32,
    ptr: *const u8,
    len: usize,
}

#[repr(C)]
struct DmaBufSync {
    flags: u64,
}
const DMA_BUF_SYNC_READ: u64 = 1;
const DMA_BUF_SYNC_START: u64 = 0;
const DMA_BUF_SYNC_END: u64 = 4;
// _IOW('b', 0, struct dma_buf_sync)
const DMA_BUF_IOCTL_SYNC: libc::c_ulong = 0x4008_6200;

impl DmaBufRead {
    fn map((fd, size): &(OwnedFd, u64)) -> KmsResult<DmaBufRead> {
        let len = *size as usize;
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(KmsError::Ioctl(
                "mmap dma-buf",
                std::io::Error::last_os_error(),
            ));
        }
        let sync = DmaBufSync {
            flags: DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ,
        };
        unsafe { libc::ioctl(fd.as_raw_fd(), DMA_BUF_IOCTL_SYNC, &sync) };
        Ok(DmaBufRead {
            fd: fd.as_raw_fd(),
            ptr: ptr.cast(),
            len,
        })
    }

    fn bytes(&self) -> &[u8] {
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for DmaBufRead {
    fn drop(&mut self) {
        let sync = DmaBufSync {
            flags: DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ,
        };
        unsafe {
            libc::ioctl(self.fd, DMA_BUF_IOCTL_SYNC, &sync);
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}
