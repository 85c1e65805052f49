//! Proof of play as the screen saw it: per output, which consumer's frames were on show from
//! which vblank to which. The outputs' own vblank timestamps are the truth an auditor asks
//! for (not when JavaScript asked for a switch), so the presentation threads keep these
//! records and the supervisor drains them. A record is cut when another consumer's frame
//! takes the output, when the file starts its next pass (a looping item), or when the video
//! stops. Updating the open record at a vblank allocates nothing: the consumer's name is a
//! shared `Arc<str>` made when play was asked, and closed records go into a ring made once.

use std::collections::VecDeque;
use std::sync::Arc;

use napi_derive::napi;

/// Closed records kept per output until drained; the supervisor drains every half second,
/// so this covers minutes of one-frame items. Beyond it the oldest go and are counted.
const CLOSED_MAX: usize = 64;

/// One stretch of one consumer's frames on one output.
#[napi(object)]
pub struct PlayRecord {
    pub output: String,
    pub consumer: String,
    /// Pass of the file (0 first, +1 per loop of a looping item).
    pub pass: u32,
    /// Decoder sequence numbers of the first and last frame shown.
    pub first_sequence: f64,
    pub last_sequence: f64,
    /// CLOCK_MONOTONIC µs of the vblank that first showed it, and of the newest vblank it
    /// was still on show at.
    pub first_us: f64,
    pub last_us: f64,
    /// Distinct frames shown, and vblanks it was on show.
    pub frames: f64,
    pub vblanks: f64,
    /// "open" (still on show), "loop" (the next pass began), "replaced" (another consumer's
    /// frame, or anything else, took the output) or "stopped".
    pub end: String,
    /// Records this output dropped because nobody drained them in time (all outputs' total
    /// is in every record of the drain).
    pub lost: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SpanEnd {
    Open,
    Loop,
    Replaced,
    Stopped,
}

impl SpanEnd {
    fn as_str(self) -> &'static str {
        match self {
            SpanEnd::Open => "open",
            SpanEnd::Loop => "loop",
            SpanEnd::Replaced => "replaced",
            SpanEnd::Stopped => "stopped",
        }
    }
}

#[derive(Clone, Debug)]
struct Span {
    consumer: Arc<str>,
    pass: u32,
    first_seq: u64,
    last_seq: u64,
    first_ns: u64,
    last_ns: u64,
    frames: u64,
    vblanks: u64,
    end: SpanEnd,
}

/// What one output's presentation thread notes at each vblank.
#[derive(Debug)]
pub struct PlayRecorder {
    open: Option<Span>,
    closed: VecDeque<Span>,
    lost: u64,
}

impl Default for PlayRecorder {
    fn default() -> Self {
        PlayRecorder {
            open: None,
            closed: VecDeque::with_capacity(CLOSED_MAX),
            lost: 0,
        }
    }
}

/// A new frame a vblank showed: `consumer`'s frame `sequence`, of pass `pass` of its file.
#[derive(Clone, Debug)]
pub struct PlayMark {
    pub consumer: Arc<str>,
    pub sequence: u64,
    pub pass: u32,
}

/// What a commit puts on an output, noted when its flip completes (KMS).
#[derive(Clone, Debug)]
pub enum PlayShow {
    New(PlayMark),
    Repeat,
}

impl PlayRecorder {
    /// A flip completed at `now_ns` with `show` on screen; None: no consumer's frame.
    pub fn play_flipped(&mut self, show: Option<PlayShow>, now_ns: u64) {
        match show {
            Some(PlayShow::New(mark)) => self.play_shown(&mark, now_ns),
            Some(PlayShow::Repeat) => self.play_repeat(now_ns),
            None => self.play_none(),
        }
    }

    /// The vblank at `now_ns` showed `mark`.
    pub fn play_shown(&mut self, mark: &PlayMark, now_ns: u64) {
        if let Some(open) = self.open.as_mut() {
            if *open.consumer == *mark.consumer && open.pass == mark.pass {
                open.last_ns = now_ns;
                open.vblanks += 1;
                if mark.sequence != open.last_seq {
                    open.last_seq = mark.sequence;
                    open.frames += 1;
                }
                return;
            }
            let end = if *open.consumer == *mark.consumer && mark.pass > open.pass {
                SpanEnd::Loop
            } else {
                SpanEnd::Replaced
            };
            self.play_close(end);
        }
        self.open = Some(Span {
            consumer: Arc::clone(&mark.consumer),
            pass: mark.pass,
            first_seq: mark.sequence,
            last_seq: mark.sequence,
            first_ns: now_ns,
            last_ns: now_ns,
            frames: 1,
            vblanks: 1,
            end: SpanEnd::Open,
        });
    }

    /// The vblank at `now_ns` kept the frame on show (a repeat).
    pub fn play_repeat(&mut self, now_ns: u64) {
        if let Some(open) = self.open.as_mut() {
            open.last_ns = now_ns;
            open.vblanks += 1;
        }
    }

    /// The vblank showed nothing of any consumer (a scene from JavaScript: a slate).
    pub fn play_none(&mut self) {
        self.play_close(SpanEnd::Replaced);
    }

    /// The output's video was stopped: what it showed is over.
    pub fn play_stopped(&mut self) {
        self.play_close(SpanEnd::Stopped);
    }

    fn play_close(&mut self, end: SpanEnd) {
        let Some(mut span) = self.open.take() else {
            return;
        };
        span.end = end;
        if self.closed.len() == CLOSED_MAX {
            self.closed.pop_front();
            self.lost += 1;
        }
        self.closed.push_back(span);
    }

    /// Hands over the closed records (forgotten here) and the open one (kept).
    pub fn play_drain(&mut self, output: &str, into: &mut Vec<PlayRecord>) {
        let lost = self.lost as f64;
        let record = |span: &Span| PlayRecord {
            output: output.to_owned(),
            consumer: span.consumer.to_string(),
            pass: span.pass,
            first_sequence: span.first_seq as f64,
            last_sequence: span.last_seq as f64,
            first_us: (span.first_ns / 1000) as f64,
            last_us: (span.last_ns / 1000) as f64,
            frames: span.frames as f64,
            vblanks: span.vblanks as f64,
            end: span.end.as_str().to_owned(),
            lost,
        };
        into.extend(self.closed.drain(..).map(|s| record(&s)));
        if let Some(open) = &self.open {
            into.push(record(open));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(consumer: &Arc<str>, sequence: u64, pass: u32) -> PlayMark {
        PlayMark {
            consumer: Arc::clone(consumer),
            sequence,
            pass,
        }
    }

    fn drain(r: &mut PlayRecorder) -> Vec<PlayRecord> {
        let mut out = Vec::new();
        r.play_drain("Virtual-1", &mut out);
        out
    }

    #[test]
    fn play_shown_cuts_a_record_per_pass_and_per_consumer() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let mut r = PlayRecorder::default();
        r.play_shown(&mark(&a, 1, 0), 1_000_000);
        r.play_repeat(2_000_000);
        r.play_shown(&mark(&a, 2, 0), 3_000_000);
        r.play_shown(&mark(&a, 3, 1), 4_000_000);
        r.play_shown(&mark(&b, 1, 0), 5_000_000);
        r.play_stopped();
        let records = drain(&mut r);
        let ends: Vec<_> = records.iter().map(|r| r.end.as_str()).collect();
        assert_eq!(ends, ["loop", "replaced", "stopped"]);
        let first = &records[0];
        assert_eq!((first.first_us, first.last_us), (1000.0, 3000.0));
        assert_eq!((first.frames, first.vblanks), (2.0, 3.0));
        assert_eq!((first.first_sequence, first.last_sequence), (1.0, 2.0));
        assert_eq!((records[1].consumer.as_str(), records[1].pass), ("a", 1));
        assert!(
            drain(&mut r).is_empty(),
            "closed records are handed over once"
        );
    }

    #[test]
    fn play_drain_keeps_the_open_record_and_counts_what_overflowed() {
        let a: Arc<str> = Arc::from("a");
        let mut r = PlayRecorder::default();
        for pass in 0..(CLOSED_MAX as u32 + 3) {
            r.play_shown(&mark(&a, u64::from(pass) + 1, pass), u64::from(pass));
        }
        let records = drain(&mut r);
        assert_eq!(records.len(), CLOSED_MAX + 1);
        assert_eq!(records.last().map(|r| r.end.as_str()), Some("open"));
        assert_eq!(records[0].lost, 2.0);
        assert_eq!(drain(&mut r).len(), 1, "the open one stays");
    }

    #[test]
    fn play_shown_allocates_nothing_while_a_record_is_open() {
        let a: Arc<str> = Arc::from("a");
        let mut r = PlayRecorder::default();
        r.play_shown(&mark(&a, 1, 0), 0);
        let m = mark(&a, 2, 0);
        let before = crate::alloc_count::frame_path_allocations();
        crate::alloc_count::frame_path(|| {
            for t in 1..100 {
                r.play_shown(&m, t);
            }
        });
        assert_eq!(crate::alloc_count::frame_path_allocations(), before);
    }
}
