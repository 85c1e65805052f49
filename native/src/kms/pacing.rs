//! When a video group commits. A group is one atomic commit over all outputs showing one
//! source (the same frame on every one of them). Its next commit goes in when the LAST of its
//! CRTCs reports its flip; each CRTC then latches it at its own next vblank.
//!
//! CRTCs of one group are rarely in phase. With vblanks `offset` apart, the CRTC that flipped
//! first has `period - offset - latency` left when the commit goes in. If that is too short it
//! misses one vblank (a `lateOne`), which swaps the order of the two flips; from then on the gap
//! is `offset - latency`. So the group settles in the order whose gap is at least half a period
//! minus our latency, and after at most one late flip per CRTC, no CRTC loses a frame. Groups do
//! not wait for each other: each is paced by its own CRTCs only.

/// Whether every output of a group is idle (`pending(output)` is false for all).
pub fn group_idle(
    outputs: impl IntoIterator<Item = usize>,
    pending: impl Fn(usize) -> bool,
) -> bool {
    outputs.into_iter().all(|o| !pending(o))
}

#[cfg(test)]
mod tests {
    use super::group_idle;

    /// Simulates the rule on CRTCs of one period with vblank phases `phases` (ns) and a commit
    /// latency after the last flip; returns per CRTC (flips, late_one, later).
    fn simulate(phases: &[u64], period: u64, latency: u64, cycles: usize) -> Vec<(u32, u32, u32)> {
        let n = phases.len();
        let next_vblank = |phase: u64, after: u64| -> u64 {
            // The first vblank of this CRTC strictly after `after`.
            if after < phase {
                return phase;
            }
            phase + ((after - phase) / period + 1) * period
        };
        let mut stats = vec![(0u32, 0u32, 0u32); n];
        let mut last_flip: Vec<Option<u64>> = vec![None; n];
        let mut commit = 0u64;
        for _ in 0..cycles {
            let flips: Vec<u64> = phases.iter().map(|&p| next_vblank(p, commit)).collect();
            for (i, &t) in flips.iter().enumerate() {
                if let Some(prev) = last_flip[i] {
                    let step = (t - prev + period / 2) / period;
                    match step {
                        1 => {}
                        2 => stats[i].1 += 1,
                        _ => stats[i].2 += 1,
                    }
                }
                stats[i].0 += 1;
                last_flip[i] = Some(t);
            }
            let pending: Vec<bool> = vec![false; n];
            assert!(group_idle(0..n, |o| pending[o]));
            commit = flips.iter().copied().max().unwrap() + latency;
        }
        stats
    }

    #[test]
    fn crtcs_out_of_phase_lose_at_most_one_frame_each() {
        let period = 16_666_667;
        let latency = 300_000;
        // From in phase to almost a whole period apart, two and three CRTCs.
        for offset_pct in [0u64, 10, 30, 50, 70, 90, 97, 99] {
            let offset = period * offset_pct / 100;
            for phases in [vec![0, offset], vec![0, offset / 2, offset]] {
                let stats = simulate(&phases, period, latency, 600);
                for (i, &(flips, late_one, later)) in stats.iter().enumerate() {
                    assert_eq!(flips, 600);
                    assert!(
                        late_one <= 1,
                        "offset {offset_pct}%: CRTC {i} lost {late_one} frames"
                    );
                    assert_eq!(later, 0, "offset {offset_pct}%: CRTC {i}");
                }
            }
        }
    }

    #[test]
    fn a_commit_later_than_the_gap_is_seen_as_lost_frames() {
        // The model can tell loss: a commit that always goes in after the early CRTC's next
        // vblank (as when one slow group held every other back) costs every other vblank.
        let period = 16_666_667;
        let stats = simulate(&[0, period * 9 / 10], period, period * 95 / 100, 100);
        assert!(stats[0].1 + stats[1].1 > 50, "{stats:?}");
    }
}
