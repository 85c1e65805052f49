//! Planes: which plane of an output takes a layer, and the properties that put a framebuffer
//! on it.

use super::super::error::{KmsError, KmsResult};
use super::super::formats::{kms_color_names, YuvColor, NV12};
use super::super::ids::{BufferId, FbId, PlaneId, Rect};
use super::super::props::Prop;
use super::super::resources::PlaneRes;
use super::{Engine, ROTATE_0};

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn plane_triples(
        &self,
        out: &mut Vec<(u32, u32, u64)>,
        plane: PlaneId,
        crtc: u32,
        fb: FbId,
        src: Rect<u32>,
        dst: Rect,
        rotation: u64,
    ) -> KmsResult<()> {
        let res = self.plane_res(plane)?;
        let p = &res.props;
        let req = |prop| p.require(prop, "plane");
        let plane = plane.0;
        if fb.is_none() {
            out.push((plane, req(Prop::FbId)?, 0));
            out.push((plane, req(Prop::CrtcId)?, 0));
            return Ok(());
        }
        out.push((plane, req(Prop::FbId)?, u64::from(fb.0)));
        out.push((plane, req(Prop::CrtcId)?, u64::from(crtc)));
        out.push((plane, req(Prop::SrcX)?, u64::from(src.x) << 16));
        out.push((plane, req(Prop::SrcY)?, u64::from(src.y) << 16));
        out.push((plane, req(Prop::SrcW)?, u64::from(src.w) << 16));
        out.push((plane, req(Prop::SrcH)?, u64::from(src.h) << 16));
        out.push((plane, req(Prop::CrtcX)?, dst.x as i64 as u64));
        out.push((plane, req(Prop::CrtcY)?, dst.y as i64 as u64));
        out.push((plane, req(Prop::CrtcW)?, u64::from(dst.w)));
        out.push((plane, req(Prop::CrtcH)?, u64::from(dst.h)));
        if let Some(id) = p.id(Prop::Rotation) {
            out.push((plane, id, rotation));
        }
        Ok(())
    }

    /// Tells the plane how to turn this YUV buffer into RGB; planes without the properties
    /// use their fixed conversion.
    pub(super) fn color_triples(
        &self,
        out: &mut Vec<(u32, u32, u64)>,
        plane: PlaneId,
        color: YuvColor,
    ) {
        let Ok(res) = self.plane_res(plane) else {
            return;
        };
        let (encoding, range) = kms_color_names(color);
        for (prop, name) in [(Prop::ColorEncoding, encoding), (Prop::ColorRange, range)] {
            let value = res
                .props
                .enum_entries(prop)
                .iter()
                .find(|(n, _)| n == name)
                .map(|&(_, v)| v);
            if let (Some(id), Some(value)) = (res.props.id(prop), value) {
                out.push((plane.0, id, value));
            }
        }
    }

    pub(in crate::kms) fn plane_res(&self, plane: PlaneId) -> KmsResult<&PlaneRes> {
        self.res
            .planes
            .iter()
            .find(|p| u32::from(p.handle) == plane.0)
            .ok_or_else(|| {
                KmsError::Ioctl(
                    "plane lookup",
                    std::io::Error::other(format!("plane {} vanished", plane.0)),
                )
            })
    }

    /// Whether `buffer` must be shown through a converted copy on `output`: it has no
    /// framebuffer, or no plane from `first_plane` on takes it, or conversion is forced.
    pub(super) fn layer_needs_copy(
        &self,
        output: usize,
        first_plane: usize,
        buffer: BufferId,
        rotation: u64,
        force: bool,
    ) -> KmsResult<bool> {
        let b = self.buffers.get(buffer)?;
        if b.format != NV12 {
            return Ok(false);
        }
        if b.fb.is_none() || force {
            return Ok(true);
        }
        let placeable = self
            .plane_slot(output, first_plane, b.format, b.modifier, rotation)
            .is_some();
        Ok(!placeable)
    }

    /// The first of `output`'s planes from `from` on that scans out `format` with `modifier`
    /// at `rotation`, as an index into its planes. Layers go bottom up: the bottom one tries
    /// the primary plane, the others need overlays above the one below them.
    pub(super) fn plane_slot(
        &self,
        output: usize,
        from: usize,
        format: u32,
        modifier: Option<u64>,
        rotation: u64,
    ) -> Option<usize> {
        let planes = &self.outputs[output].planes;
        (from..planes.len()).find(|&i| {
            self.plane_res(planes[i]).is_ok_and(|p| {
                p.accepts(format, modifier) && (rotation == ROTATE_0 || p.rotations & rotation != 0)
            })
        })
    }

    /// Switches off the planes of `output` that the commit being built leaves empty but that
    /// show something now or in the commit in flight.
    pub(super) fn planes_unused_off(
        &self,
        out: &mut Vec<(u32, u32, u64)>,
        output: usize,
    ) -> KmsResult<()> {
        let output = &self.outputs[output];
        for (i, &plane) in output.planes.iter().enumerate() {
            if output.staged[i].is_none()
                && (!output.shown[i].is_none() || !output.incoming[i].is_none())
            {
                self.plane_triples(
                    out,
                    plane,
                    output.crtc_id,
                    FbId::NONE,
                    Rect::default(),
                    Rect::default(),
                    ROTATE_0,
                )?;
            }
        }
        Ok(())
    }
}
