//! Scanout buffers, one file per kind: dumb buffers we fill ourselves (dumb.rs), GBM buffer
//! objects (gbm.rs), dma-bufs imported through PRIME (import.rs) or kept for the CPU when no
//! plane takes them (external.rs), and a previous instance's framebuffers (inherited.rs). This
//! file is the store: ids, screen references and freeing. Nothing on screen is ever freed.

mod convert;
mod dumb;
mod external;
mod gbm;
mod import;
mod inherited;

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};

use super::device::Card;
use super::error::{KmsError, KmsResult};
use super::formats::fourcc_name;
use super::ids::{BufferId, FbId};

pub use crate::dmabuf::DmaBufDesc;
pub use dumb::Mapping;
pub use import::{ImportKey, REFUSED_BEFORE};

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
        bo: ::gbm::BufferObject<()>,
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
    pub fb: FbId,
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

#[derive(Default)]
pub struct BufferStore {
    buffers: HashMap<BufferId, Buffer>,
    gem_refs: HashMap<u32, u32>,
    imports: HashMap<ImportKey, BufferId>,
    /// Dma-bufs the card refused to import, newest last: asked again, they are refused at
    /// once instead of another round of PRIME and AddFB2 ioctls per vblank.
    refused: Vec<ImportKey>,
    /// DRM_CAP_ADDFB2_MODIFIERS: without it the kernel rejects the modifiers flag.
    pub modifiers_supported: bool,
    /// Ids for buffers without a framebuffer, far above the kernel's small framebuffer ids.
    next_cpu_id: u32,
    /// Opened on first use: most outputs never need GBM, and it loads a Mesa driver.
    gbm: Option<::gbm::Device<OwnedFd>>,
}

const CPU_ID_BASE: u32 = 0x4000_0000;

impl BufferStore {
    pub fn get(&self, id: BufferId) -> KmsResult<&Buffer> {
        self.buffers.get(&id).ok_or(KmsError::BufferNotFound(id.0))
    }

    /// Takes a number too: the screen-copy path pins buffers by the id JavaScript knows.
    pub fn get_mut(&mut self, id: impl Into<BufferId>) -> KmsResult<&mut Buffer> {
        let id = id.into();
        self.buffers
            .get_mut(&id)
            .ok_or(KmsError::BufferNotFound(id.0))
    }

    pub fn count(&self) -> usize {
        self.buffers.len()
    }

    fn cpu_id_next(&mut self) -> BufferId {
        self.next_cpu_id = self.next_cpu_id.wrapping_add(1);
        BufferId(CPU_ID_BASE + (self.next_cpu_id & (CPU_ID_BASE - 1)))
    }

    /// Frees the buffer now if nothing shows it, else as soon as the last flip away from it lands.
    pub fn release(&mut self, card: &Card, id: BufferId) -> KmsResult<bool> {
        let buffer = self.get_mut(id)?;
        buffer.release_requested = true;
        if buffer.screen_refs > 0 {
            return Ok(false);
        }
        self.destroy(card, id);
        Ok(true)
    }

    pub fn screen_ref(&mut self, id: impl Into<BufferId>) {
        if let Some(b) = self.buffers.get_mut(&id.into()) {
            b.screen_refs += 1;
        }
    }

    pub fn screen_unref(&mut self, card: &Card, id: impl Into<BufferId>) {
        let id = id.into();
        let Some(b) = self.buffers.get_mut(&id) else {
            return;
        };
        b.screen_refs = b.screen_refs.saturating_sub(1);
        if b.screen_refs == 0 && b.release_requested {
            self.destroy(card, id);
        }
    }

    /// Everything, at close: the planes are being switched off, so screen refs no longer matter.
    pub fn destroy_all(&mut self, card: &Card) {
        let ids: Vec<BufferId> = self.buffers.keys().copied().collect();
        for id in ids {
            self.destroy(card, id);
        }
    }

    fn destroy(&mut self, card: &Card, id: BufferId) {
        let Some(buffer) = self.buffers.remove(&id) else {
            return;
        };
        let _ = drm_ffi::mode::rm_fb(card.as_fd(), buffer.fb.0);
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
) -> KmsResult<FbId> {
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
        .map(|fb| FbId(fb.fb_id))
        .map_err(|e| {
            KmsError::BadBuffer(format!(
                "AddFB2 {width}x{height} {} refused: {e}",
                fourcc_name(format)
            ))
        })
}
