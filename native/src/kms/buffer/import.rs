//! dma-bufs imported through PRIME: cached by dma-buf identity so a decoder's surface pool is
//! imported once, refusals remembered so they are not retried per vblank, and GEM handles
//! reference-counted because the kernel hands back the same handle for the same dma-buf.

use std::os::fd::AsFd;

use super::super::device::Card;
use super::super::error::{KmsError, KmsResult};
use super::super::formats::NV12;
use super::super::ids::BufferId;
use super::{fb_add, Buffer, BufferStore, Storage};
use crate::dmabuf::{DmaBufDesc, Fourcc, Modifier};

/// Identity of an imported buffer: the dma-buf inodes plus how they are laid out.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ImportKey {
    /// Fixed arrays: the key is built for every imported frame and must not allocate.
    inodes: [u64; 4],
    layout: [(usize, u32, u32); 4],
    format: Fourcc,
    modifier: Modifier,
    size: (u32, u32),
}

/// Refused imports remembered; a decoder's pool is smaller, so a refused pool stays known.
const REFUSED_MAX: usize = 32;

/// The `KmsError::Ioctl` operation of an import the card refused before.
pub const REFUSED_BEFORE: &str = "import refused before";

impl BufferStore {
    pub fn dmabuf_import(
        &mut self,
        card: &Card,
        desc: &DmaBufDesc<'_>,
    ) -> KmsResult<(BufferId, bool)> {
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
        if let Some(&id) = self.imports.get(&key) {
            return Ok((id, true));
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
            Ok(id) => Ok((id, false)),
            // Linear NV12 the card cannot scan out: keep it for CPU conversion instead.
            Err(_)
                if desc.format == Fourcc(NV12)
                    && desc.modifier.is_linear()
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

    fn prime_import(
        &mut self,
        card: &Card,
        desc: &DmaBufDesc<'_>,
        key: &ImportKey,
    ) -> KmsResult<BufferId> {
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
        let modifier = desc.modifier.explicit();
        let fb = match fb_add(
            card,
            desc.width,
            desc.height,
            desc.format.0,
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
        let id = BufferId::from(fb);
        self.imports.insert(key.clone(), id);
        self.buffers.insert(
            id,
            Buffer {
                fb,
                width: desc.width,
                height: desc.height,
                format: desc.format.0,
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
        Ok(id)
    }

    pub(super) fn gem_release(&mut self, card: &Card, handles: &[u32]) {
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
