//! The engine's turns for its video client. The client is taken out of the engine for its
//! turn (a move of a few words, no allocation) and put back after, so it drives the engine
//! through the engine's own API — one scene per group and vblank — rather than from inside.

use std::sync::Arc;

use super::super::error::KmsResult;
use super::super::video::{Video, VideoPlacement};
use super::super::video_health::VideoCause;
use super::{monotonic_ns, Engine};
use crate::dmabuf::FrameFeed;

impl Engine {
    fn video_turn<R>(&mut self, turn: impl FnOnce(&mut Video, &mut Engine) -> R) -> R {
        let mut video = std::mem::take(&mut self.video);
        let result = turn(&mut video, self);
        self.video = video;
        result
    }

    /// Shows `source` on the placements' outputs from its first frame on; until then the
    /// outputs keep what they show. Other outputs are untouched.
    pub fn video_play(
        &mut self,
        consumer: Arc<str>,
        source: Arc<dyn FrameFeed>,
        placements: Vec<VideoPlacement>,
    ) -> KmsResult<()> {
        self.video_turn(|video, engine| video.video_play(engine, consumer, source, placements))
    }

    /// Stops all video; the outputs keep their last frame.
    pub fn video_stop(&mut self) {
        self.video_turn(|video, engine| video.video_stop(engine))
    }

    /// Called when no flip event came for a while, and after flip events: groups that are idle
    /// (waiting for a first frame, or backing off) get their turn.
    pub fn idle_tick(&mut self) {
        if self.flip_loop.is_none() && !self.video.is_empty() {
            crate::alloc_count::frame_path(|| self.video_service(monotonic_ns()));
        }
    }

    /// After a reconfiguration: the groups follow their outputs (see `Video::video_remap`).
    pub(super) fn video_remap(&mut self) {
        self.video_turn(|video, engine| video.video_remap(engine))
    }

    /// A vblank's turn for every video group whose outputs are idle.
    pub(super) fn video_service(&mut self, now: u64) {
        self.video_turn(|video, engine| video.video_service(engine, now))
    }

    /// The text of the fault `cause` of a video group on `output`.
    pub fn video_fault_detail(&self, output: usize, cause: VideoCause) -> Option<&str> {
        self.video.fault_detail(output, cause)
    }
}
