//! Converted copies: the CPU turns an NV12 buffer it can see (dumb, or an external dma-buf)
//! into an XR24 dumb buffer a plane takes.

use super::super::convert::{nv12_to_xr24, nv12_to_xr24_scaled, Nv12Src};
use super::super::error::{KmsError, KmsResult};
use super::super::formats::{fourcc_name, YuvColor, NV12, XR24};
use super::super::ids::{BufferId, Rect};
use super::{BufferStore, Storage};
use crate::dmabuf::read::DmaBufRead;

impl BufferStore {
    /// Converts the current contents of `src` (NV12) into `dst` (an XR24 dumb buffer of the
    /// same size), or with `scale` (source rectangle, placement in `dst`) that rectangle
    /// scaled into the placement, black around it. Returns the bytes the CPU wrote.
    pub fn convert_into(
        &mut self,
        src: BufferId,
        dst: BufferId,
        color: YuvColor,
        scale: Option<(Rect<u32>, Rect<u32>, u32)>,
    ) -> KmsResult<usize> {
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
        let (out_w, out_h) = (target.width as usize, target.height as usize);
        let inside = scale.is_none_or(|(r, p, _)| {
            r.w > 0
                && r.h > 0
                && (r.x + r.w) as usize <= width
                && (r.y + r.h) as usize <= height
                && p.w > 0
                && p.h > 0
                && (p.x + p.w) as usize <= out_w
                && (p.y + p.h) as usize <= out_h
        });
        if target.format != XR24
            || !inside
            || (scale.is_none() && (out_w != width || out_h != height))
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
        Ok(match scale {
            None => nv12_to_xr24(&planes, color, width, height, dst_bytes, dst_pitch),
            Some((r, p, rotation)) => nv12_to_xr24_scaled(
                &planes,
                color,
                (r.x as usize, r.y as usize, r.w as usize, r.h as usize),
                (
                    (p.x as usize, p.y as usize, p.w as usize, p.h as usize),
                    rotation,
                ),
                out_w,
                out_h,
                dst_bytes,
                dst_pitch,
            ),
        })
    }
}
