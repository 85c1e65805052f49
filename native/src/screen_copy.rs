//! Copies of what a KMS output shows (previews, screenshots), made outside the engine lock.
//!
//! The presentation thread takes the engine lock at every flip. A whole-frame copy under it
//! (8 MB for a 1080p XR24 buffer, 33 MB at 4K) would hold the next commit back by
//! milliseconds, so the lock is held only to pin the buffer (a screen reference: it is not
//! freed, and so not unmapped, while pinned) and note where its rows are; the rows are copied
//! after the lock is released, then the pin is dropped under the lock again.

use std::sync::Mutex;

use crate::kms::buffer::Storage;
use crate::kms::engine::Engine;
use crate::kms::error::{KmsError, KmsResult};
use crate::kms::formats::{fourcc_name, AR24, NV12, XR24};

/// A pinned dumb buffer: where its mapping is and how its rows lie.
pub struct Pinned {
    buffer: u32,
    ptr: *const u8,
    len: usize,
    pub width: u32,
    pub height: u32,
    pub format: u32,
    pitches: [u32; 4],
    offsets: [u32; 4],
}

// The mapping stays valid while the pin (a screen reference) is held; see `unpin`.
unsafe impl Send for Pinned {}

/// Pins `buffer` for reading, under the engine lock. Only dumb XR24/AR24/NV12 buffers can be
/// read by the CPU; others (imported GPU buffers) are refused.
pub fn pin(engine: &mut Engine, buffer: u32) -> KmsResult<Pinned> {
    let b = engine.buffers.get_mut(buffer)?;
    if !matches!(b.format, XR24 | AR24 | NV12) {
        return Err(KmsError::BadBuffer(format!(
            "buffer {buffer} is {}; only XR24 and NV12 are read back",
            fourcc_name(b.format)
        )));
    }
    let (width, height, format, pitches, offsets) =
        (b.width, b.height, b.format, b.pitches, b.offsets);
    let Storage::Dumb { map, .. } = &mut b.storage else {
        return Err(KmsError::BadBuffer(format!(
            "buffer {buffer} is imported; it cannot be read"
        )));
    };
    let bytes = map.bytes_mut();
    let (ptr, len) = (bytes.as_ptr(), bytes.len());
    engine.buffers.screen_ref(buffer);
    Ok(Pinned {
        buffer,
        ptr,
        len,
        width,
        height,
        format,
        pitches,
        offsets,
    })
}

impl Pinned {
    /// The rows packed tightly (Y then interleaved UV for NV12). Called without the lock: the
    /// mapping is shared memory, so a frame written meanwhile may come out torn, which a
    /// preview tolerates; it cannot come out freed.
    pub fn packed(&self) -> Vec<u8> {
        // SAFETY: pinned, so mapped for `len` bytes until `unpin`.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, self.len) };
        let (w, h) = (self.width as usize, self.height as usize);
        let size = if self.format == NV12 {
            w * h + w.div_ceil(2) * 2 * h.div_ceil(2)
        } else {
            w * h * 4
        };
        let mut out = Vec::with_capacity(size);
        let mut rows = |plane: usize, row_bytes: usize, count: usize| {
            let (offset, pitch) = (self.offsets[plane] as usize, self.pitches[plane] as usize);
            for r in 0..count {
                let at = offset + r * pitch;
                if let Some(row) = bytes.get(at..at + row_bytes) {
                    out.extend_from_slice(row);
                }
            }
        };
        if self.format == NV12 {
            rows(0, w, h);
            rows(1, w.div_ceil(2) * 2, h.div_ceil(2));
        } else {
            rows(0, w * 4, h);
        }
        out
    }

    /// Drops the pin under the engine lock (freeing the buffer if it was released meanwhile).
    pub fn unpin(self, engine: &Mutex<Option<Engine>>) {
        let mut guard = engine.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = guard.as_mut() {
            e.buffers.screen_unref(&e.card, self.buffer);
        }
    }
}
