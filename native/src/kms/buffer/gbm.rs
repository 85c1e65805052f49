//! GBM buffer objects: scanout memory in the layout the driver prefers, for CPU-drawn content.

use std::os::fd::AsFd;

use super::super::device::Card;
use super::super::error::{KmsError, KmsResult};
use super::super::formats::{fourcc_name, AR24, MOD_INVALID, XR24};
use super::super::ids::BufferId;
use super::{fb_add, Buffer, BufferStore, Storage};

impl BufferStore {
    /// A linear scanout buffer object from GBM (XR24 or AR24). Returns its id.
    pub fn gbm_create(
        &mut self,
        card: &Card,
        width: u32,
        height: u32,
        format: u32,
    ) -> KmsResult<BufferId> {
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
        let id = BufferId::from(fb);
        self.buffers.insert(
            id,
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
        Ok(id)
    }

    pub(super) fn gbm_write(&mut self, id: BufferId, data: &[u8]) -> KmsResult<()> {
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
}
