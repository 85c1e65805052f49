//! dma-bufs no plane can scan out: kept as duplicated fds and read by the CPU when a frame of
//! one is converted (convert.rs).

use super::super::error::{KmsError, KmsResult};
use super::super::ids::{BufferId, FbId};
use super::{Buffer, BufferStore, ImportKey, Storage};
use crate::dmabuf::DmaBufDesc;

impl BufferStore {
    pub(super) fn external_keep(
        &mut self,
        desc: &DmaBufDesc<'_>,
        key: ImportKey,
    ) -> KmsResult<BufferId> {
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
                fb: FbId::NONE,
                width: desc.width,
                height: desc.height,
                format: desc.format.0,
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
}
