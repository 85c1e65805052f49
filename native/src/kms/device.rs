//! Opening a card for mode setting: master, atomic, universal planes, and clear refusals.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use drm::control::Device as ControlDevice;
use drm::{ClientCapability, Device};

use super::error::{KmsError, KmsResult};
use super::probe;

/// An open card node. Dropping it drops master and closes the descriptor.
pub struct Card {
    file: File,
    path: PathBuf,
    driver: String,
    /// Taken over from a previous instance (systemd's file descriptor store), not opened here.
    adopted: bool,
}

impl AsFd for Card {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Device for Card {}
impl ControlDevice for Card {}

impl Card {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn driver(&self) -> &str {
        &self.driver
    }

    pub fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    pub fn adopted(&self) -> bool {
        self.adopted
    }
}

impl Drop for Card {
    fn drop(&mut self) {
        // Handing master back lets a console or the next supervisor instance take over at once.
        let _ = self.release_master_lock();
    }
}

/// `auto` picks the first KMS card with a connected connector, else the first KMS card.
pub fn device_resolve(wanted: &str) -> KmsResult<PathBuf> {
    if wanted != "auto" {
        return Ok(PathBuf::from(wanted));
    }
    let cards = probe::card_paths(Path::new(probe::DEFAULT_DRI_DIR));
    let reports: Vec<_> = cards.iter().map(|p| (p, probe::probe_card(p))).collect();
    reports
        .iter()
        .find(|(_, r)| r.has_kms && r.connected_connectors > 0)
        .or_else(|| reports.iter().find(|(_, r)| r.has_kms))
        .map(|(p, _)| (*p).clone())
        .ok_or_else(|| {
            KmsError::NoDevice(if cards.is_empty() {
                "no /dev/dri/card* nodes".into()
            } else {
                format!("{} DRM node(s), none with KMS", cards.len())
            })
        })
}

/// Opens the card, or with `inherited` takes over the descriptor a previous instance of the
/// supervisor left with the service manager: the same open file, so still DRM master and still
/// scanning out the previous instance's last frames until the first commit replaces them.
pub fn device_open(wanted: &str, inherited: Option<OwnedFd>) -> KmsResult<Card> {
    let path = device_resolve(wanted)?;
    let adopted = inherited.is_some();
    let file = match inherited {
        Some(fd) => {
            let file = File::from(fd);
            let theirs = file
                .metadata()
                .map_err(|e| KmsError::Inherited(path.clone(), e.to_string()))?;
            let ours = std::fs::metadata(&path).map_err(|e| KmsError::Open(path.clone(), e))?;
            if theirs.rdev() != ours.rdev() || !theirs.file_type().is_char_device() {
                return Err(KmsError::Inherited(
                    path.clone(),
                    "it is another file, not this device node".into(),
                ));
            }
            file
        }
        None => OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| KmsError::Open(path.clone(), e))?,
    };
    let mut card = Card {
        file,
        path,
        driver: String::new(),
        adopted,
    };
    card.driver = card
        .get_driver()
        .map(|d| d.name().to_string_lossy().into_owned())
        .map_err(|e| KmsError::Open(card.path.clone(), e))?;

    let resources = card
        .resource_handles()
        .map_err(|_| KmsError::NotKms(card.path.clone(), card.driver.clone()))?;
    if resources.crtcs().is_empty() || resources.connectors().is_empty() {
        return Err(KmsError::NotKms(card.path.clone(), card.driver.clone()));
    }
    card.set_client_capability(ClientCapability::UniversalPlanes, true)
        .and_then(|()| card.set_client_capability(ClientCapability::Atomic, true))
        .map_err(|_| KmsError::AtomicRefused(card.path.clone(), card.driver.clone()))?;
    // Writeback connectors stay hidden unless asked for; most cards have none, so a refusal
    // only means there is nothing to capture with.
    let _ = card.set_client_capability(ClientCapability::WritebackConnectors, true);

    // The kernel makes the first opener master; anyone else must ask, and fails while a
    // display server or Plymouth holds it.
    if adopted {
        // SET_MASTER on a file another process opened needs CAP_SYS_ADMIN even when the file
        // is master already, so ask instead, the way libdrm's drmIsMaster does: authenticating
        // magic 0 is refused with EACCES only when the file is not master.
        let not_master = drm_ffi::auth::auth_magic_token(card.as_fd(), 0)
            .is_err_and(|e| e.raw_os_error() == Some(libc::EACCES));
        if not_master {
            // The previous instance dropped master before it went (a clean stop).
            return Err(KmsError::Inherited(
                card.path.clone(),
                "it is no longer DRM master".into(),
            ));
        }
        return Ok(card);
    }
    if card.acquire_master_lock().is_err() {
        return Err(KmsError::MasterHeld(
            card.path.clone(),
            holders_of(&card.path),
        ));
    }
    Ok(card)
}

/// GEM handles are small integers handed out lowest-free-first, so a previous instance's all
/// lie below this (it never holds more than a few hundred buffers at once).
const INHERITED_GEM_HANDLES_MAX: u32 = 16384;

/// What a previous instance left in an inherited file: its framebuffers (still on screen, to be
/// removed once the first commit replaced them) and its buffer handles, closed here. A
/// framebuffer holds its own reference to its buffers, so closing the handles now blanks
/// nothing; the memory is freed when the framebuffers go.
pub fn inherited_tidy(card: &Card) -> (Vec<drm::control::framebuffer::Handle>, u32) {
    let framebuffers = card
        .resource_handles()
        .map(|r| r.framebuffers().to_vec())
        .unwrap_or_default();
    let mut closed = 0;
    for handle in 1..=INHERITED_GEM_HANDLES_MAX {
        if drm_ffi::gem::close(card.as_fd(), handle).is_ok() {
            closed += 1;
        }
    }
    (framebuffers, closed)
}

/// Other processes with the node open, as "pid (comm)". Best effort: /proc may hide them.
fn holders_of(path: &Path) -> Vec<String> {
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut holders = Vec::new();
    for proc_entry in procs.filter_map(Result::ok) {
        let pid = proc_entry.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .filter_map(Result::ok)
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path));
        if holds {
            // The program's name from argv[0]: comm may be a thread name (Node calls its
            // main thread "MainThread"), which would not tell an operator what to stop.
            let cmdline = std::fs::read(proc_entry.path().join("cmdline")).unwrap_or_default();
            let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
            let program =
                String::from_utf8_lossy(argv0.rsplit(|&b| b == b'/').next().unwrap_or_default())
                    .into_owned();
            let name = if program.is_empty() {
                std::fs::read_to_string(proc_entry.path().join("comm"))
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            } else {
                program
            };
            holders.push(format!("{pid} ({name})"));
        }
    }
    holders
}

/// Opens a card only to read what it offers (`multihead diagnose`): never asks for master and
/// sets only client capabilities, which belong to this file and vanish with it, so a running
/// supervisor or display server on the same card is not disturbed.
pub fn device_open_probe(path: &Path) -> KmsResult<Card> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| KmsError::Open(path.to_owned(), e))?;
    let mut card = Card {
        file,
        path: path.to_owned(),
        driver: String::new(),
        adopted: false,
    };
    card.driver = card
        .get_driver()
        .map(|d| d.name().to_string_lossy().into_owned())
        .map_err(|e| KmsError::Open(path.to_owned(), e))?;
    let _ = card.set_client_capability(ClientCapability::UniversalPlanes, true);
    let _ = card.set_client_capability(ClientCapability::Atomic, true);
    let _ = card.set_client_capability(ClientCapability::WritebackConnectors, true);
    Ok(card)
}
