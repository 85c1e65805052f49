//! multihead's native core, exposed to the TypeScript supervisor through Node-API.
//!
//! JavaScript decides what plays; this crate decides when a frame flips. Everything that
//! touches the kernel's display or decode interfaces lives here, so the per-frame path
//! never crosses into JavaScript.

mod alloc_count;
pub mod clock;
pub mod decode;
pub mod diagnose;
pub mod diagnose_paths;
pub mod diagnose_va;
pub mod display;
pub mod dmabuf;
pub mod fd_guard;
pub mod heartbeat;
pub mod jpeg;
pub mod panic_guard;
pub mod play_record;
pub mod playback;
pub mod preview_view;
pub mod realtime;
pub mod screen_copy;
pub mod systemd;
pub mod virtual_display;

#[global_allocator]
static ALLOCATOR: alloc_count::Counting = alloc_count::Counting;
pub mod kms;

use napi_derive::napi;

/// The addon's own version, so the supervisor can report app and addon separately and a
/// stale `.node` left over from an older build is easy to spot.
#[napi(catch_unwind)]
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// One `/dev/dri/card*` node as the kernel describes it.
#[napi(object)]
pub struct DrmDeviceInfo {
    /// Device node, e.g. `/dev/dri/card0`.
    pub path: String,
    /// Kernel driver name (`i915`, `amdgpu`, `virtio_gpu`, `vkms`), when the node answered.
    pub driver: Option<String>,
    /// The driver's own one-line description.
    pub description: Option<String>,
    /// True when the node exposes mode-setting resources (at least one CRTC and connector).
    pub has_kms: bool,
    /// True when the kernel accepted the atomic client capability on this node.
    pub atomic: bool,
    pub crtcs: u32,
    pub connectors: u32,
    /// Connectors the kernel currently reports as connected (no forced re-probe).
    pub connected_connectors: u32,
    /// Why the node could not be inspected (permissions, not a DRM device, ...).
    pub error: Option<String>,
}

/// Lists the DRM card nodes under `dir` (default `/dev/dri`), in card-number order.
///
/// A machine without DRM yields an empty list, not an error: appliances boot on boards
/// whose GPU driver is still loading, and the supervisor must keep running either way.
#[napi(catch_unwind)]
pub fn list_drm_devices(dir: Option<String>) -> Vec<DrmDeviceInfo> {
    let dir = dir.unwrap_or_else(|| kms::probe::DEFAULT_DRI_DIR.to_owned());
    kms::probe::card_paths(dir.as_ref())
        .into_iter()
        .map(|path| {
            let report = kms::probe::probe_card(&path);
            DrmDeviceInfo {
                path: path.to_string_lossy().into_owned(),
                driver: report.driver,
                description: report.description,
                has_kms: report.has_kms,
                atomic: report.atomic,
                crtcs: report.crtcs,
                connectors: report.connectors,
                connected_connectors: report.connected_connectors,
                error: report.error.map(|e| e.to_string()),
            }
        })
        .collect()
}
