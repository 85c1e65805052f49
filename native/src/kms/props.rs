//! The one table from property names to ids, resolved once per object at open. Commits
//! index it by `Prop`, so the per-frame path never looks up a name.

use std::collections::HashMap;

use std::os::fd::AsFd;

use drm::control::{Device as ControlDevice, ResourceHandle};

use super::device::Card;
use super::error::{KmsError, KmsResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prop {
    CrtcId,
    FbId,
    SrcX,
    SrcY,
    SrcW,
    SrcH,
    CrtcX,
    CrtcY,
    CrtcW,
    CrtcH,
    Type,
    InFormats,
    Zpos,
    Rotation,
    Active,
    ModeId,
    Edid,
    WritebackFbId,
    WritebackPixelFormats,
    WritebackOutFencePtr,
    ColorEncoding,
    ColorRange,
}

const NAMES: [(Prop, &str); 22] = [
    (Prop::CrtcId, "CRTC_ID"),
    (Prop::FbId, "FB_ID"),
    (Prop::SrcX, "SRC_X"),
    (Prop::SrcY, "SRC_Y"),
    (Prop::SrcW, "SRC_W"),
    (Prop::SrcH, "SRC_H"),
    (Prop::CrtcX, "CRTC_X"),
    (Prop::CrtcY, "CRTC_Y"),
    (Prop::CrtcW, "CRTC_W"),
    (Prop::CrtcH, "CRTC_H"),
    (Prop::Type, "type"),
    (Prop::InFormats, "IN_FORMATS"),
    (Prop::Zpos, "zpos"),
    (Prop::Rotation, "rotation"),
    (Prop::Active, "ACTIVE"),
    (Prop::ModeId, "MODE_ID"),
    (Prop::Edid, "EDID"),
    (Prop::WritebackFbId, "WRITEBACK_FB_ID"),
    (Prop::WritebackPixelFormats, "WRITEBACK_PIXEL_FORMATS"),
    (Prop::WritebackOutFencePtr, "WRITEBACK_OUT_FENCE_PTR"),
    (Prop::ColorEncoding, "COLOR_ENCODING"),
    (Prop::ColorRange, "COLOR_RANGE"),
];

/// Every property in the table, for turning ids back into names in error messages.
pub fn props_all() -> impl Iterator<Item = Prop> {
    NAMES.iter().map(|&(prop, _)| prop)
}

pub fn prop_name(prop: Prop) -> &'static str {
    NAMES[prop as usize].1
}

/// One object's properties: id and the value read at open, plus range or enum details.
#[derive(Clone, Debug, Default)]
pub struct ObjectProps {
    ids: [u32; NAMES.len()],
    values: [u64; NAMES.len()],
    /// (min, max) for range properties such as zpos.
    ranges: HashMap<u32, (u64, u64)>,
    /// Bitmask or enum entries by name, e.g. rotation's "rotate-90" -> bit 1.
    enums: HashMap<u32, Vec<(String, u64)>>,
}

impl ObjectProps {
    pub fn id(&self, prop: Prop) -> Option<u32> {
        let id = self.ids[prop as usize];
        (id != 0).then_some(id)
    }

    pub fn value(&self, prop: Prop) -> Option<u64> {
        self.id(prop).map(|_| self.values[prop as usize])
    }

    pub fn range(&self, prop: Prop) -> Option<(u64, u64)> {
        self.id(prop).and_then(|id| self.ranges.get(&id).copied())
    }

    pub fn enum_entries(&self, prop: Prop) -> &[(String, u64)] {
        self.id(prop)
            .and_then(|id| self.enums.get(&id))
            .map_or(&[], Vec::as_slice)
    }

    pub fn require(&self, prop: Prop, object: &str) -> KmsResult<u32> {
        self.id(prop).ok_or_else(|| {
            KmsError::Ioctl(
                "property lookup",
                std::io::Error::other(format!("{object} lacks property {}", prop_name(prop))),
            )
        })
    }
}

pub fn props_read<H: ResourceHandle>(card: &Card, handle: H) -> KmsResult<ObjectProps> {
    let set = card
        .get_properties(handle)
        .map_err(|e| KmsError::Ioctl("get properties", e))?;
    let (ids, values) = set.as_props_and_values();
    let mut props = ObjectProps::default();
    for (id, value) in ids.iter().zip(values) {
        let raw_id: u32 = (*id).into();
        let mut enum_values = Vec::new();
        let mut enums = Vec::new();
        let Ok(info) = drm_ffi::mode::get_property(
            card.as_fd(),
            raw_id,
            Some(&mut enum_values),
            Some(&mut enums),
        ) else {
            continue;
        };
        let name = unsafe { std::ffi::CStr::from_ptr(info.name.as_ptr()) };
        let Some(&(prop, _)) = NAMES.iter().find(|(_, n)| n.as_bytes() == name.to_bytes()) else {
            continue;
        };
        props.ids[prop as usize] = raw_id;
        props.values[prop as usize] = *value;
        let flags = info.flags;
        if flags & drm_ffi::DRM_MODE_PROP_RANGE != 0 && enum_values.len() >= 2 {
            props
                .ranges
                .insert(raw_id, (enum_values[0], enum_values[1]));
        }
        if flags & (drm_ffi::DRM_MODE_PROP_ENUM | drm_ffi::DRM_MODE_PROP_BITMASK) != 0 {
            let entries = enums
                .iter()
                .map(|e| {
                    let n = unsafe { std::ffi::CStr::from_ptr(e.name.as_ptr()) };
                    (n.to_string_lossy().into_owned(), e.value)
                })
                .collect();
            props.enums.insert(raw_id, entries);
        }
    }
    Ok(props)
}
