//! Outputs: a connector driven by a CRTC in a mode, with the planes it owns. Choosing
//! modes and CRTCs happens here; committing them happens in engine/configure.rs.

use drm::control::Mode;

use super::error::{KmsError, KmsResult};
use super::ids::{BufferId, PlaneId};
use super::resources::{mode_is_preferred, mode_name, ConnectorRes, PlaneKind, Resources};

/// Per-CRTC presentation counters, updated from page-flip events on the native thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct FlipStats {
    pub flips: u64,
    pub last_sequence: u32,
    pub last_timestamp_ns: u64,
    /// Largest vblank count between two consecutive flips (1 = every vblank).
    pub max_sequence_step: u32,
    /// Flips that landed one vblank late (step 2).
    pub late_one: u64,
    /// Flips that landed more than one vblank late (step > 2).
    pub late_more: u64,
    pub commits: u64,
    /// Scenes replaced by a newer one before they reached the screen.
    pub dropped: u64,
    /// Layers shown through a CPU-converted copy because no plane took the buffer as it is.
    pub converted: u64,
    /// Longest time from a flip to our commit of the next frame.
    pub max_commit_delay_ns: u64,
    /// Next-frame commits issued more than one refresh period after the flip.
    pub late_commits: u64,
}

pub struct Output {
    pub connector: String,
    pub connector_id: u32,
    pub crtc_id: u32,
    pub crtc_index: usize,
    pub mode: Mode,
    pub mode_blob: u32,
    /// Planes this output owns, primary first.
    pub planes: Vec<PlaneId>,
    /// Buffer on each plane now (`NONE` = off), parallel to `planes`.
    pub shown: Vec<BufferId>,
    /// Buffers of the commit in flight, parallel to `planes`.
    pub incoming: Vec<BufferId>,
    /// Buffers of the commit being built, parallel to `planes`.
    pub staged: Vec<BufferId>,
    pub pending: bool,
    pub stats: FlipStats,
    /// Hash of the last plane layout that passed TEST_ONLY.
    pub tested_layout: u64,
    /// CLOCK_MONOTONIC time of the newest commit that included this output.
    pub last_commit_ns: u64,
    /// Display power off asked: scenes leave it out until it wakes.
    pub asleep: bool,
    /// Its CRTC's ACTIVE is 0 (committed; `asleep` comes first, while a flip lands).
    pub inactive: bool,
    /// Which consumer's frame the commit in flight shows (None: no video), for `record`.
    pub play_incoming: Option<crate::play_record::PlayShow>,
    /// Proof of play: what was on show from which flip to which.
    pub record: crate::play_record::PlayRecorder,
}

impl Output {
    pub fn size(&self) -> (u32, u32) {
        let (w, h) = self.mode.size();
        (u32::from(w), u32::from(h))
    }
}

/// What the caller asks for: a connector and "preferred", "WxH" or "WxH@Hz".
pub struct OutputRequest {
    pub connector: String,
    pub mode: String,
}

pub fn mode_pick(connector: &ConnectorRes, wanted: &str) -> KmsResult<Mode> {
    let not_found = || KmsError::ModeNotFound {
        connector: connector.name.clone(),
        mode: wanted.to_owned(),
        available: dedup(connector.modes.iter().map(mode_name).collect()),
    };
    if connector.modes.is_empty() {
        return Err(not_found());
    }
    if wanted == "preferred" {
        // A mode forced on the kernel command line (video=HDMI-A-1:1280x720@60) is the
        // installer's explicit choice and wins over the monitor's EDID preference.
        let user = connector
            .modes
            .iter()
            .find(|m| m.mode_type().contains(drm::control::ModeTypeFlags::USERDEF));
        return Ok(*user
            .or_else(|| connector.modes.iter().find(|m| mode_is_preferred(m)))
            .unwrap_or(&connector.modes[0]));
    }
    let (size, refresh) = match wanted.split_once('@') {
        Some((size, hz)) => (size, Some(hz.parse::<f64>().map_err(|_| not_found())?)),
        None => (wanted, None),
    };
    let (w, h) = size.split_once('x').ok_or_else(not_found)?;
    let (w, h): (u16, u16) = (
        w.parse().map_err(|_| not_found())?,
        h.parse().map_err(|_| not_found())?,
    );
    connector
        .modes
        .iter()
        .filter(|m| m.size() == (w, h))
        .filter(|m| refresh.is_none_or(|hz| (f64::from(m.vrefresh()) - hz).abs() < 0.5))
        // Among equals, the preferred one, then the highest refresh.
        .max_by_key(|m| (mode_is_preferred(m), m.vrefresh()))
        .copied()
        .ok_or_else(not_found)
}

fn dedup(mut names: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// Assigns distinct CRTCs: keeps `current` assignments where still possible (no modeset
/// for untouched outputs), else tries candidates in index order with backtracking.
pub fn crtcs_assign(
    masks: &[u32],
    current: &[Option<usize>],
    crtc_count: usize,
) -> Option<Vec<usize>> {
    fn solve(
        i: usize,
        masks: &[u32],
        current: &[Option<usize>],
        n: usize,
        used: u32,
        out: &mut Vec<usize>,
    ) -> bool {
        if i == masks.len() {
            return true;
        }
        let preferred = current.get(i).copied().flatten();
        let order = preferred
            .into_iter()
            .chain((0..n).filter(|&c| Some(c) != preferred));
        for c in order {
            if masks[i] & (1 << c) != 0 && used & (1 << c) == 0 {
                out.push(c);
                if solve(i + 1, masks, current, n, used | (1 << c), out) {
                    return true;
                }
                out.pop();
            }
        }
        false
    }
    let mut out = Vec::with_capacity(masks.len());
    solve(0, masks, current, crtc_count.min(32), 0, &mut out).then_some(out)
}

/// The CRTC's primary plane, then the overlays that can drive it and nobody else took.
/// Empty when no primary plane is free.
pub fn planes_claim(res: &Resources, crtc_index: usize, taken: &mut Vec<PlaneId>) -> Vec<PlaneId> {
    let free = |kind: PlaneKind, taken: &Vec<PlaneId>| {
        res.planes
            .iter()
            .filter(|p| p.kind == kind && p.possible_crtcs & (1 << crtc_index) != 0)
            .map(|p| PlaneId(u32::from(p.handle)))
            .filter(|h| !taken.contains(h))
            .collect::<Vec<_>>()
    };
    let Some(&primary) = free(PlaneKind::Primary, taken).first() else {
        return Vec::new();
    };
    let mut planes = vec![primary];
    planes.extend(free(PlaneKind::Overlay, taken));
    taken.extend(&planes);
    planes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crtc_assignment_backtracks() {
        // Output 0 could take CRTC 0 or 1, output 1 only CRTC 0.
        assert_eq!(
            crtcs_assign(&[0b11, 0b01], &[None, None], 2),
            Some(vec![1, 0])
        );
        assert_eq!(crtcs_assign(&[0b01, 0b01], &[None, None], 2), None);
    }

    #[test]
    fn crtc_assignment_keeps_current() {
        assert_eq!(
            crtcs_assign(&[0b111, 0b111], &[Some(2), None], 3),
            Some(vec![2, 0])
        );
    }
}
