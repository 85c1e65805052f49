//! `multihead diagnose`: what this box's GPUs offer and which decode→plane paths the engine
//! will take on them. Read-only: cards are opened without master (device_open_probe) and
//! connectors are not re-probed, so it is safe to run next to a running supervisor.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use drm::control::{connector, Device as ControlDevice};
use napi_derive::napi;

use crate::diagnose_paths::{judge, judge_software, modifier_name, vaapi_outputs, PlaneView};
use crate::diagnose_va::va_query;
use crate::kms::device::{device_open_probe, Card};
use crate::kms::error::KmsError;
use crate::kms::formats::{fourcc_name, in_formats_parse};
use crate::kms::props::{props_read, Prop};
use crate::kms::resources::PlaneKind;

#[napi(object)]
pub struct DiagModifier {
    pub format: String,
    /// 64-bit modifier as hex, as `KmsDevice.planes()` writes it.
    pub modifier: String,
    /// e.g. "linear", "Intel Y-tiled", "AMD 0x200000000401b01".
    pub name: String,
}

#[napi(object)]
pub struct DiagPlane {
    pub id: u32,
    pub kind: String,
    pub possible_crtcs: Vec<u32>,
    pub formats: Vec<String>,
    /// From IN_FORMATS; empty when the driver reports no modifiers.
    pub modifiers: Vec<DiagModifier>,
}

#[napi(object)]
pub struct DiagConnector {
    pub id: u32,
    pub name: String,
    pub connected: bool,
    pub writeback: bool,
    pub possible_crtcs: Vec<u32>,
}

#[napi(object)]
pub struct DiagCrtc {
    pub id: u32,
    pub index: u32,
}

#[napi(object)]
pub struct DiagPath {
    pub crtc_index: u32,
    /// "H.264 VAAPI", "HEVC 10-bit VAAPI", "software decode", ...
    pub decode: String,
    /// "zero-copy", "convert", "cpu-upload" or "cpu-convert".
    pub outcome: String,
    pub plane: Option<u32>,
    pub text: String,
}

#[napi(object)]
pub struct DiagCard {
    pub path: String,
    pub driver: Option<String>,
    pub error: Option<String>,
    pub connectors: Vec<DiagConnector>,
    pub crtcs: Vec<DiagCrtc>,
    pub planes: Vec<DiagPlane>,
    /// The render node of the same GPU (its VAAPI decodes for this card), if found.
    pub render_node: Option<String>,
    pub paths: Vec<DiagPath>,
}

#[napi(object)]
pub struct DiagProfile {
    pub profile: String,
    pub entrypoints: Vec<String>,
}

#[napi(object)]
pub struct DiagRenderNode {
    pub path: String,
    pub driver: Option<String>,
    pub vaapi_vendor: Option<String>,
    pub profiles: Vec<DiagProfile>,
    /// Why VAAPI could not be asked (no libva, no driver for this GPU, ...).
    pub error: Option<String>,
}

#[napi(object)]
pub struct DiagnoseReport {
    pub dri_dir: String,
    /// False when the directory does not exist at all (no GPU driver loaded).
    pub dri_present: bool,
    pub cards: Vec<DiagCard>,
    pub render_nodes: Vec<DiagRenderNode>,
}

/// Reads every card and render node under `dir` (default /dev/dri). Never throws for what
/// it finds: each node carries its own error.
#[napi(catch_unwind)]
pub fn diagnose(dir: Option<String>) -> DiagnoseReport {
    let dir = PathBuf::from(dir.unwrap_or_else(|| crate::kms::probe::DEFAULT_DRI_DIR.into()));
    let render_nodes: Vec<(PathBuf, DiagRenderNode)> = render_paths(&dir)
        .into_iter()
        .map(|p| {
            let node = render_node_read(&p);
            (p, node)
        })
        .collect();
    let cards = crate::kms::probe::card_paths(&dir)
        .iter()
        .map(|p| card_read(p, &render_nodes))
        .collect();
    DiagnoseReport {
        dri_dir: dir.to_string_lossy().into_owned(),
        dri_present: dir.is_dir(),
        cards,
        render_nodes: render_nodes.into_iter().map(|(_, n)| n).collect(),
    }
}

fn render_paths(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut nodes: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e
                .file_name()
                .to_str()?
                .strip_prefix("renderD")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    nodes.sort_unstable_by_key(|(n, _)| *n);
    nodes.into_iter().map(|(_, p)| p).collect()
}

/// The GPU behind a node: /sys/dev/char/MAJ:MIN/device resolved, the same for a card and
/// its render node.
fn gpu_of(node: &Path) -> Option<PathBuf> {
    let rdev = std::fs::metadata(node).ok()?.rdev();
    let sys = format!(
        "/sys/dev/char/{}:{}/device",
        libc::major(rdev),
        libc::minor(rdev)
    );
    std::fs::canonicalize(sys).ok()
}

fn render_node_read(path: &Path) -> DiagRenderNode {
    let driver = device_open_probe(path).ok().map(|c| c.driver().to_owned());
    let mut node = DiagRenderNode {
        path: path.to_string_lossy().into_owned(),
        driver,
        vaapi_vendor: None,
        profiles: Vec::new(),
        error: None,
    };
    match va_query(path) {
        Ok(report) => {
            node.vaapi_vendor = Some(report.vendor);
            node.profiles = report
                .profiles
                .into_iter()
                .map(|p| DiagProfile {
                    profile: p.profile,
                    entrypoints: p.entrypoints,
                })
                .collect();
        }
        Err(e) => node.error = Some(e),
    }
    node
}

fn mask_indexes(mask: u32) -> Vec<u32> {
    (0..32).filter(|i| mask & (1 << i) != 0).collect()
}

fn card_read(path: &Path, render_nodes: &[(PathBuf, DiagRenderNode)]) -> DiagCard {
    let mut card = DiagCard {
        path: path.to_string_lossy().into_owned(),
        driver: None,
        error: None,
        connectors: Vec::new(),
        crtcs: Vec::new(),
        planes: Vec::new(),
        render_node: None,
        paths: Vec::new(),
    };
    let open = match device_open_probe(path) {
        Ok(open) => open,
        Err(KmsError::Open(_, e)) if e.raw_os_error() == Some(libc::ENOTTY) => {
            card.error = Some(format!("{}: not a DRM device", path.display()));
            return card;
        }
        Err(e) => {
            card.error = Some(e.to_string());
            return card;
        }
    };
    card.driver = Some(open.driver().to_owned());
    let views = match resources_fill(&open, &mut card) {
        Ok(views) => views,
        Err(e) => {
            card.error = Some(e);
            return card;
        }
    };
    let gpu = gpu_of(path);
    let render = render_nodes
        .iter()
        .find(|(p, _)| gpu.is_some() && gpu_of(p) == gpu);
    card.render_node = render.map(|(_, n)| n.path.clone());
    card.paths = paths_judge(&views, &card, render.map(|(_, n)| n));
    card
}

/// Fills in connectors, CRTCs and planes; returns the planes as the path judgement needs them.
fn resources_fill(open: &Card, card: &mut DiagCard) -> Result<Vec<PlaneView>, String> {
    let handles = open
        .resource_handles()
        .map_err(|e| format!("no mode-setting resources (a render-only GPU?): {e}"))?;
    let index_of = |h: &drm::control::crtc::Handle| {
        handles.crtcs().iter().position(|c| c == h).unwrap_or(0) as u32
    };
    let mask =
        |list: &[drm::control::crtc::Handle]| list.iter().fold(0u32, |m, h| m | (1 << index_of(h)));
    card.crtcs = handles
        .crtcs()
        .iter()
        .map(|h| DiagCrtc {
            id: u32::from(*h),
            index: index_of(h),
        })
        .collect();
    for &handle in handles.connectors() {
        // No forced probe: re-reading EDID can blank some monitors for a moment.
        let Ok(info) = open.get_connector(handle, false) else {
            continue;
        };
        let possible = info
            .encoders()
            .iter()
            .filter_map(|&e| open.get_encoder(e).ok())
            .fold(0, |m, e| {
                m | mask(&handles.filter_crtcs(e.possible_crtcs()))
            });
        card.connectors.push(DiagConnector {
            id: u32::from(handle),
            name: format!("{}-{}", info.interface().as_str(), info.interface_id()),
            connected: info.state() == connector::State::Connected,
            writeback: info.interface() == connector::Interface::Writeback,
            possible_crtcs: mask_indexes(possible),
        });
    }
    let planes = open
        .plane_handles()
        .map_err(|e| format!("cannot list planes: {e}"))?;
    let mut views = Vec::new();
    for handle in planes {
        let Ok(info) = open.get_plane(handle) else {
            continue;
        };
        let props = props_read(open, handle).map_err(|e| e.to_string())?;
        let kind = match props.value(Prop::Type) {
            Some(1) => PlaneKind::Primary,
            Some(2) => PlaneKind::Cursor,
            _ => PlaneKind::Overlay,
        };
        let pairs = props
            .value(Prop::InFormats)
            .filter(|&blob| blob != 0)
            .and_then(|blob| open.get_property_blob(blob).ok())
            .map(|bytes| in_formats_parse(&bytes))
            .unwrap_or_default();
        let possible = mask(&handles.filter_crtcs(info.possible_crtcs()));
        views.push(PlaneView {
            id: u32::from(handle),
            primary: kind == PlaneKind::Primary,
            possible_crtcs: possible,
            formats: info.formats().to_vec(),
            modifiers: pairs.clone(),
        });
        card.planes.push(DiagPlane {
            id: u32::from(handle),
            kind: kind.as_str().to_owned(),
            possible_crtcs: mask_indexes(possible),
            formats: info.formats().iter().map(|&f| fourcc_name(f)).collect(),
            modifiers: pairs
                .iter()
                .map(|&(f, m)| DiagModifier {
                    format: fourcc_name(f),
                    modifier: format!("{m:#x}"),
                    name: modifier_name(m),
                })
                .collect(),
        });
    }
    Ok(views)
}

/// Paths for each CRTC that can drive a connected display (all CRTCs when none is connected,
/// so a bench box without monitors still says something useful).
fn paths_judge(
    views: &[PlaneView],
    card: &DiagCard,
    render: Option<&DiagRenderNode>,
) -> Vec<DiagPath> {
    let connected: Vec<u32> = card
        .connectors
        .iter()
        .filter(|c| c.connected && !c.writeback)
        .flat_map(|c| c.possible_crtcs.iter().copied())
        .collect();
    let profiles: Vec<(String, bool)> = render
        .map(|r| {
            r.profiles
                .iter()
                .map(|p| (p.profile.clone(), p.entrypoints.iter().any(|e| e == "VLD")))
                .collect()
        })
        .unwrap_or_default();
    let outputs = vaapi_outputs(
        &profiles,
        render.and_then(|r| r.driver.as_deref()).unwrap_or(""),
    );
    let mut paths = Vec::new();
    for crtc in &card.crtcs {
        if !connected.is_empty() && !connected.contains(&crtc.index) {
            continue;
        }
        let judged = outputs
            .iter()
            .map(|o| judge(views, crtc.index, o))
            .chain(std::iter::once(judge_software(views, crtc.index)));
        paths.extend(judged.map(|j| DiagPath {
            crtc_index: j.crtc_index,
            decode: j.decode,
            outcome: j.outcome.as_str().to_owned(),
            plane: j.plane,
            text: j.text,
        }));
    }
    paths
}
