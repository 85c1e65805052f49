//! Read-only inspection of DRM card nodes.
//!
//! Probing must never disturb whoever owns the display: it opens the node without asking
//! for master, reads counts without forcing a connector re-probe (which can blank some
//! monitors), and sets only client capabilities, which are per file description and vanish
//! when the descriptor closes.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use drm::control::{connector, Device as ControlDevice};
use drm::{ClientCapability, Device};

pub const DEFAULT_DRI_DIR: &str = "/dev/dri";

/// A card node opened for probing.
struct Card(File);

impl AsFd for Card {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Device for Card {}
impl ControlDevice for Card {}

/// Why a card node could not be inspected, naming the node.
#[derive(Debug)]
pub enum ProbeError {
    Open(PathBuf, io::Error),
    NotDrm(PathBuf),
    Version(PathBuf, io::Error),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Open(p, e) if e.kind() == io::ErrorKind::PermissionDenied => write!(
                f,
                "{}: permission denied (the user needs the video group)",
                p.display()
            ),
            ProbeError::Open(p, e) => write!(f, "{}: cannot open: {e}", p.display()),
            ProbeError::NotDrm(p) => write!(f, "{}: not a DRM device", p.display()),
            ProbeError::Version(p, e) => {
                write!(f, "{}: DRM version query failed: {e}", p.display())
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct ProbeReport {
    pub driver: Option<String>,
    pub description: Option<String>,
    pub has_kms: bool,
    pub atomic: bool,
    pub crtcs: u32,
    pub connectors: u32,
    pub connected_connectors: u32,
    pub error: Option<ProbeError>,
}

/// `cardN` nodes in `dir`, sorted by N so `card10` comes after `card2`. Render nodes
/// (`renderD*`) are skipped: they have no KMS by definition.
pub fn card_paths(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut cards: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let index = name.to_str()?.strip_prefix("card")?.parse::<u32>().ok()?;
            Some((index, entry.path()))
        })
        .collect();
    cards.sort_unstable_by_key(|(index, _)| *index);
    cards.into_iter().map(|(_, path)| path).collect()
}

pub fn probe_card(path: &Path) -> ProbeReport {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) => {
            return ProbeReport {
                error: Some(ProbeError::Open(path.to_owned(), e)),
                ..ProbeReport::default()
            }
        }
    };
    let card = Card(file);

    let driver = match card.get_driver() {
        Ok(driver) => driver,
        Err(e) => {
            // ENOTTY: the node exists but is not a DRM device (a stray file or symlink).
            let error = if e.raw_os_error() == Some(25) {
                ProbeError::NotDrm(path.to_owned())
            } else {
                ProbeError::Version(path.to_owned(), e)
            };
            return ProbeReport {
                error: Some(error),
                ..ProbeReport::default()
            };
        }
    };

    let mut report = ProbeReport {
        driver: Some(driver.name().to_string_lossy().into_owned()),
        description: Some(driver.description().to_string_lossy().into_owned()),
        ..ProbeReport::default()
    };

    // Atomic implies universal planes; the kernel refuses ATOMIC on drivers without it.
    let universal = card
        .set_client_capability(ClientCapability::UniversalPlanes, true)
        .is_ok();
    report.atomic = universal
        && card
            .set_client_capability(ClientCapability::Atomic, true)
            .is_ok();

    // A render-only GPU answers GETRESOURCES with EOPNOTSUPP or with zero CRTCs.
    if let Ok(resources) = card.resource_handles() {
        report.crtcs = count(resources.crtcs().len());
        report.connectors = count(resources.connectors().len());
        report.connected_connectors = count(
            resources
                .connectors()
                .iter()
                .filter_map(|&handle| card.get_connector(handle, false).ok())
                .filter(|info| info.state() == connector::State::Connected)
                .count(),
        );
        report.has_kms = report.crtcs > 0 && report.connectors > 0;
    }
    report
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_paths_sorts_numerically_and_skips_render_nodes() {
        let dir = std::env::temp_dir().join(format!("mh-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["card10", "card2", "renderD128", "card", "cardX", "by-path"] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let names: Vec<String> = card_paths(&dir)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(names, ["card2", "card10"]);
    }

    #[test]
    fn missing_dir_is_empty_not_an_error() {
        assert!(card_paths(Path::new("/nonexistent/dri")).is_empty());
    }

    #[test]
    fn non_drm_node_is_reported_by_name() {
        let report = probe_card(Path::new("/dev/null"));
        let error = report.error.expect("/dev/null is not a DRM device");
        assert_eq!(error.to_string(), "/dev/null: not a DRM device");
        assert!(!report.has_kms);
        assert!(report.driver.is_none());
    }
}
