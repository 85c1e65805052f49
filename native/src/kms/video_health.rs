//! What can go wrong with one video group (a source and the outputs showing it), how it is
//! reported (once per output and cause) and how often it is retried (with back-off). Pure
//! logic: the engine feeds it the time and the outcome of each attempt, so the rules are
//! tested without a card.

/// Why a group's outputs do not show new frames. `Copy` and without text: a failing group is
/// retried on the presentation thread, which must not allocate per attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCause {
    /// The kernel refused the group's commit (TEST_ONLY or the real one).
    CommitRefused,
    /// No plane of the output takes the frame, not even a converted copy.
    NoPlane,
    /// The card would not import the frame's dma-buf, and it has no CPU view to copy from.
    ImportRefused,
    /// The source has shown no new frame for `STALL_NS`; the outputs keep the last one.
    SourceStalled,
    /// The source has not produced its first frame within `FIRST_FRAME_NS`; the outputs keep
    /// what they showed before it was bound.
    NoFirstFrame,
    /// The frame or placement is unusable (bad crop, size out of range).
    BadFrame,
}

impl VideoCause {
    /// The stable code of `videoError` events (listed in docs/kms.md).
    pub fn code(self) -> &'static str {
        match self {
            VideoCause::CommitRefused => "ERR_VIDEO_COMMIT_REFUSED",
            VideoCause::NoPlane => "ERR_VIDEO_NO_PLANE",
            VideoCause::ImportRefused => "ERR_VIDEO_IMPORT_REFUSED",
            VideoCause::SourceStalled => "ERR_VIDEO_SOURCE_STALLED",
            VideoCause::NoFirstFrame => "ERR_VIDEO_NO_FIRST_FRAME",
            VideoCause::BadFrame => "ERR_VIDEO_BAD_FRAME",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            VideoCause::CommitRefused => "the kernel refused the video commit",
            VideoCause::NoPlane => "no plane takes the video frame",
            VideoCause::ImportRefused => {
                "the card refused the decoder's dma-buf and it has no CPU view"
            }
            VideoCause::SourceStalled => "the source has produced no new frame",
            VideoCause::NoFirstFrame => "the source has not produced its first frame",
            VideoCause::BadFrame => "the frame does not fit the placement",
        }
    }

    /// Causes that stop commits and are retried with back-off; the others are states of the
    /// source, watched at every vblank anyway.
    pub fn retried(self) -> bool {
        matches!(
            self,
            VideoCause::CommitRefused
                | VideoCause::NoPlane
                | VideoCause::ImportRefused
                | VideoCause::BadFrame
        )
    }
}

/// No new frame for this long: the source is stalled (a live stream that stopped, a decoder
/// stuck on its input). Longer than any sane frame interval of signage content.
pub const STALL_NS: u64 = 3_000_000_000;
/// A source still without a frame after this long is reported (the outputs keep their picture).
pub const FIRST_FRAME_NS: u64 = 5_000_000_000;
/// First retry after a refusal, doubled per further refusal up to `BACKOFF_MAX_NS`.
pub const BACKOFF_FIRST_NS: u64 = 100_000_000;
pub const BACKOFF_MAX_NS: u64 = 5_000_000_000;

/// When a refused group may try again.
#[derive(Clone, Copy, Debug, Default)]
pub struct Backoff {
    delay_ns: u64,
    retry_at_ns: u64,
}

impl Backoff {
    pub fn failed(&mut self, now_ns: u64) {
        self.delay_ns = if self.delay_ns == 0 {
            BACKOFF_FIRST_NS
        } else {
            (self.delay_ns * 2).min(BACKOFF_MAX_NS)
        };
        self.retry_at_ns = now_ns + self.delay_ns;
    }

    pub fn succeeded(&mut self) {
        *self = Backoff::default();
    }

    pub fn due(&self, now_ns: u64) -> bool {
        now_ns >= self.retry_at_ns
    }

    pub fn delay_ns(&self) -> u64 {
        self.delay_ns
    }
}

/// A change to tell one output about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Error(VideoCause),
    Recovered(VideoCause),
}

/// Updates what each output was last told (`reported`, one entry per output of the group) to
/// `now`: an output hears of a cause once, however often it recurs, and hears it is recovered
/// once it shows new frames again. `tell(output_slot, transition)` is called per change.
pub fn report(
    reported: &mut [Option<VideoCause>],
    now: Option<VideoCause>,
    mut tell: impl FnMut(usize, Transition),
) {
    for (slot, last) in reported.iter_mut().enumerate() {
        if *last == now {
            continue;
        }
        match now {
            Some(cause) => tell(slot, Transition::Error(cause)),
            None => {
                if let Some(cause) = *last {
                    tell(slot, Transition::Recovered(cause));
                }
            }
        }
        *last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_ceiling_and_resets() {
        let mut b = Backoff::default();
        assert!(b.due(0));
        b.failed(1_000);
        assert_eq!(b.delay_ns(), BACKOFF_FIRST_NS);
        assert!(!b.due(1_000 + BACKOFF_FIRST_NS - 1));
        assert!(b.due(1_000 + BACKOFF_FIRST_NS));
        let mut delays = Vec::new();
        for _ in 0..10 {
            b.failed(0);
            delays.push(b.delay_ns());
        }
        assert_eq!(delays[0], 2 * BACKOFF_FIRST_NS);
        assert_eq!(*delays.last().unwrap(), BACKOFF_MAX_NS);
        assert!(delays.windows(2).all(|w| w[1] >= w[0]));
        b.succeeded();
        assert!(b.due(0));
        assert_eq!(b.delay_ns(), 0);
    }

    #[test]
    fn retries_of_a_refused_commit_stay_few() {
        // 60 s of 60 Hz vblanks: a retry per vblank would be 3600 attempts.
        let mut b = Backoff::default();
        let mut attempts = 0;
        let period = 16_666_667;
        for vblank in 0..3600u64 {
            let now = vblank * period;
            if b.due(now) {
                attempts += 1;
                b.failed(now);
            }
        }
        assert!(attempts <= 20, "{attempts} attempts in 60 s");
    }

    #[test]
    fn each_output_hears_a_cause_once_and_its_recovery_once() {
        let mut reported = [None, None];
        let mut heard = Vec::new();
        for _ in 0..5 {
            report(&mut reported, Some(VideoCause::CommitRefused), |s, t| {
                heard.push((s, t))
            });
        }
        assert_eq!(
            heard,
            vec![
                (0, Transition::Error(VideoCause::CommitRefused)),
                (1, Transition::Error(VideoCause::CommitRefused))
            ]
        );
        heard.clear();
        report(&mut reported, Some(VideoCause::NoPlane), |s, t| {
            heard.push((s, t))
        });
        assert_eq!(heard.len(), 2, "a new cause is told again");
        heard.clear();
        for _ in 0..3 {
            report(&mut reported, None, |s, t| heard.push((s, t)));
        }
        assert_eq!(
            heard,
            vec![
                (0, Transition::Recovered(VideoCause::NoPlane)),
                (1, Transition::Recovered(VideoCause::NoPlane))
            ]
        );
    }

    #[test]
    fn only_refusals_back_off() {
        assert!(VideoCause::CommitRefused.retried());
        assert!(!VideoCause::SourceStalled.retried());
        assert!(!VideoCause::NoFirstFrame.retried());
        for c in [
            VideoCause::CommitRefused,
            VideoCause::NoPlane,
            VideoCause::ImportRefused,
            VideoCause::SourceStalled,
            VideoCause::NoFirstFrame,
            VideoCause::BadFrame,
        ] {
            assert!(c.code().starts_with("ERR_VIDEO_"));
        }
    }
}
