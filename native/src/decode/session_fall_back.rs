//! Leaving the hardware path mid-stream: when VAAPI fails, when a surface cannot be exported,
//! or when an output cannot show dma-bufs. The decoder goes on in software from just after
//! the last frame shown, so the screen neither freezes nor jumps back.

use std::sync::atomic::Ordering;

use super::decoder::HwPathKind;
use super::error::{FailureCode, StreamFailure};
use super::frame_ring::Shared;
use super::io;
use super::session_open::{decoder_open, HwPath, Session};

/// Test hook: after this many frames on the hardware path, behave as if the hardware failed.
pub(super) const FAULT_ENV: &str = "MULTIHEAD_FAULT_HW_AFTER_FRAMES";
/// Consecutive hardware decode errors that mean the hardware has given up on this stream.
pub(super) const HW_ERRORS_FATAL: u32 = 3;

impl Session {
    /// An output asked for frames with a CPU view (`FrameSource::cpu_frames_request`): on a
    /// dma-buf path, that becomes a fallback to software at this packet boundary.
    pub(super) fn cpu_request_take(&mut self, shared: &Shared) {
        if self.fallback_pending.is_some()
            || matches!(self.hw, HwPath::Software)
            || !shared.cpu_asked.load(Ordering::Relaxed)
        {
            return;
        }
        let wanted = shared.cpu_wanted.lock().unwrap_or_else(|p| p.into_inner());
        self.fallback_pending.clone_from(&wanted);
    }

    /// The hardware path failed (or an output cannot show its dma-bufs): continue in software
    /// from just after the last frame shown, or from the start when none was.
    pub(super) fn fall_back(
        &mut self,
        reason: String,
        shared: &Shared,
    ) -> Result<(), StreamFailure> {
        let codec_failure = |e: String| StreamFailure::new(FailureCode::Codec, e);
        let parameters = self
            .input
            .stream(self.stream)
            .map(|s| s.parameters())
            .ok_or_else(|| {
                codec_failure(format!("{}: stream {} vanished", self.source, self.stream))
            })?;
        let opened = decoder_open(parameters, None);
        self.decoder = opened.map_err(|e| {
            codec_failure(format!(
                "{}: software decoder after \"{reason}\": {e}",
                self.source
            ))
        })?;
        self.hw = HwPath::Software;
        match self.last_pts_us {
            // The keyframe at or before the last frame shown; frames up to it are decoded as
            // references but not shown again.
            Some(last) if self.seekable => {
                self.guard().arm(io::READ_DEADLINE);
                let sought = self.input.seek(last, ..last + 1);
                self.guard().disarm();
                sought.map_err(|e| {
                    StreamFailure::new(
                        FailureCode::Read,
                        format!("{}: seek to resume after fallback: {e}", self.source),
                    )
                })?;
                self.skip_until_us = Some(last);
            }
            Some(last) => {
                self.rewind()?;
                self.skip_until_us = Some(last);
            }
            // Nothing shown yet (the first frame's export was refused): from the start.
            None => self.rewind()?,
        }
        self.fallback = Some(reason);
        *shared.path.lock().unwrap_or_else(|p| p.into_inner()) =
            (HwPathKind::Software, self.fallback.clone());
        Ok(())
    }

    /// Counts a frame delivered on the hardware path; the fault hook (`FAULT_ENV`) fires here
    /// so tests can exercise a mid-stream fallback without a failing GPU.
    pub(super) fn hw_frame_count(&mut self) {
        self.hw_frames += 1;
        if self.fault_after.is_some_and(|n| self.hw_frames == n) {
            self.fallback_pending = Some(format!(
                "injected hardware failure after {} frames ({FAULT_ENV})",
                self.hw_frames
            ));
        }
    }
}
