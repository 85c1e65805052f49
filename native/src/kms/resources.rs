//! What the card offers, read once at open: connectors (with modes and EDID), CRTCs and
//! planes (with formats, modifiers, zpos and rotation). Refreshed on hotplug.

use drm::control::{connector, crtc, plane, Device as ControlDevice, Mode};

use super::device::Card;
use super::edid::{edid_parse, EdidInfo};
use super::error::{KmsError, KmsResult};
use super::formats::in_formats_parse;
use super::props::{props_read, ObjectProps, Prop};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlaneKind {
    Primary,
    Overlay,
    Cursor,
}

impl PlaneKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            PlaneKind::Primary => "primary",
            PlaneKind::Overlay => "overlay",
            PlaneKind::Cursor => "cursor",
        }
    }
}

pub struct ConnectorRes {
    pub handle: connector::Handle,
    /// Kernel name, e.g. HDMI-A-1, as in /sys/class/drm/card0-HDMI-A-1.
    pub name: String,
    pub connected: bool,
    pub modes: Vec<Mode>,
    /// Bit i set: CRTC index i can drive this connector (union over its encoders).
    pub possible_crtcs: u32,
    pub edid: Option<EdidInfo>,
    pub writeback: bool,
    pub props: ObjectProps,
}

pub struct CrtcRes {
    pub handle: crtc::Handle,
    pub index: usize,
    pub props: ObjectProps,
}

pub struct PlaneRes {
    pub handle: plane::Handle,
    pub kind: PlaneKind,
    pub possible_crtcs: u32,
    pub formats: Vec<u32>,
    /// (format, modifier) from IN_FORMATS; empty when the driver does not report modifiers.
    pub modifiers: Vec<(u32, u64)>,
    pub zpos: Option<(u64, u64, u64)>,
    /// Rotation bits the plane accepts (DRM_MODE_ROTATE_* | DRM_MODE_REFLECT_*).
    pub rotations: u64,
    pub props: ObjectProps,
}

impl PlaneRes {
    pub fn accepts(&self, format: u32, modifier: Option<u64>) -> bool {
        match modifier {
            Some(m) if !self.modifiers.is_empty() => self.modifiers.contains(&(format, m)),
            _ => self.formats.contains(&format),
        }
    }
}

pub struct Resources {
    pub connectors: Vec<ConnectorRes>,
    pub crtcs: Vec<CrtcRes>,
    pub planes: Vec<PlaneRes>,
}

impl Resources {
    pub fn connector(&self, name: &str) -> KmsResult<&ConnectorRes> {
        self.connectors
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                KmsError::ConnectorNotFound(
                    name.to_owned(),
                    self.connectors
                        .iter()
                        .filter(|c| !c.writeback)
                        .map(|c| c.name.clone())
                        .collect(),
                )
            })
    }
}

fn ioctl(what: &'static str) -> impl FnOnce(std::io::Error) -> KmsError {
    move |e| KmsError::Ioctl(what, e)
}

pub fn resources_read(card: &Card) -> KmsResult<Resources> {
    let handles = card.resource_handles().map_err(ioctl("get resources"))?;
    let crtcs: Vec<CrtcRes> = handles
        .crtcs()
        .iter()
        .enumerate()
        .map(|(index, &handle)| {
            Ok(CrtcRes {
                handle,
                index,
                props: props_read(card, handle)?,
            })
        })
        .collect::<KmsResult<_>>()?;
    let crtc_mask = |list: &[crtc::Handle]| {
        list.iter()
            .filter_map(|h| crtcs.iter().find(|c| c.handle == *h))
            .fold(0u32, |mask, c| mask | (1 << c.index))
    };

    let mut connectors = Vec::new();
    for &handle in handles.connectors() {
        // force_probe=true re-reads EDID; needed after hotplug, harmless at open.
        let info = card
            .get_connector(handle, true)
            .map_err(ioctl("get connector"))?;
        let props = props_read(card, handle)?;
        let mut possible = 0;
        for &encoder in info.encoders() {
            if let Ok(e) = card.get_encoder(encoder) {
                possible |= crtc_mask(&handles.filter_crtcs(e.possible_crtcs()));
            }
        }
        let edid = props
            .value(Prop::Edid)
            .filter(|&blob| blob != 0)
            .and_then(|blob| card.get_property_blob(blob).ok())
            .and_then(|bytes| edid_parse(&bytes));
        connectors.push(ConnectorRes {
            handle,
            name: format!("{}-{}", info.interface().as_str(), info.interface_id()),
            connected: info.state() == connector::State::Connected,
            modes: info.modes().to_vec(),
            possible_crtcs: possible,
            edid,
            writeback: info.interface() == connector::Interface::Writeback,
            props,
        });
    }

    let mut planes = Vec::new();
    for handle in card.plane_handles().map_err(ioctl("get planes"))? {
        let info = card.get_plane(handle).map_err(ioctl("get plane"))?;
        let props = props_read(card, handle)?;
        let kind = match props.value(Prop::Type) {
            Some(1) => PlaneKind::Primary,
            Some(2) => PlaneKind::Cursor,
            _ => PlaneKind::Overlay,
        };
        let modifiers = props
            .value(Prop::InFormats)
            .filter(|&blob| blob != 0)
            .and_then(|blob| card.get_property_blob(blob).ok())
            .map(|bytes| in_formats_parse(&bytes))
            .unwrap_or_default();
        let zpos = props
            .range(Prop::Zpos)
            .map(|(min, max)| (min, max, props.value(Prop::Zpos).unwrap_or(min)));
        let rotations = props
            .enum_entries(Prop::Rotation)
            .iter()
            .fold(0u64, |mask, (_, bit)| mask | (1 << bit));
        planes.push(PlaneRes {
            handle,
            kind,
            possible_crtcs: crtc_mask(&handles.filter_crtcs(info.possible_crtcs())),
            formats: info.formats().to_vec(),
            modifiers,
            zpos,
            rotations,
            props,
        });
    }
    Ok(Resources {
        connectors,
        crtcs,
        planes,
    })
}

/// "1920x1080@60" style name; refresh rounded to the nearest integer as users write it.
pub fn mode_name(mode: &Mode) -> String {
    let (w, h) = mode.size();
    format!("{w}x{h}@{}", mode.vrefresh())
}

pub fn mode_is_preferred(mode: &Mode) -> bool {
    mode.mode_type()
        .contains(drm::control::ModeTypeFlags::PREFERRED)
}
