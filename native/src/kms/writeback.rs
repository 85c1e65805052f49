//! Reading back what a CRTC really composes, through a writeback connector (vkms has one;
//! some SoC display engines do too). This is how tests, and later screenshots, see the
//! pixels the planes produce rather than the buffers we handed them.
//!
//! A capture is three steps so that the engine lock, which the presentation thread takes at
//! every flip, is never held while waiting: `writeback_start` (under the lock: attach and
//! commit), `writeback_wait` (no lock: the out-fence signals when the frame is written, one
//! vblank on hardware, seconds on vkms under emulation), `writeback_finish` (under the lock:
//! detach, and pin the result so its rows are copied after the lock is released).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::commit::FLAG_ALLOW_MODESET;
use super::engine::Engine;
use super::error::{KmsError, KmsResult};
use super::formats::XR24;
use super::ids::BufferId;
use super::props::Prop;

/// Longest wait for the writeback out-fence.
const WRITEBACK_TIMEOUT_MS: i32 = 10_000;

/// A capture committed to the kernel, not yet written.
pub struct WritebackJob {
    fence: OwnedFd,
    buffer: BufferId,
    wb_id: u32,
    crtc_prop: u32,
    fb_prop: u32,
}

impl Engine {
    /// Attaches `connector`'s CRTC's writeback connector with a fresh XR24 target and commits.
    /// Needs the outputs idle: attaching the writeback connector is a mode set, which must not
    /// race a flip in flight.
    pub fn writeback_start(&mut self, connector: &str) -> KmsResult<WritebackJob> {
        let index = self.output_index(connector)?;
        if self.flip_loop.is_some() || self.outputs.iter().any(|o| o.pending) {
            return Err(KmsError::Busy(format!("writeback capture of {connector}")));
        }
        let output = &self.outputs[index];
        let (crtc_id, crtc_bit) = (output.crtc_id, 1u32 << output.crtc_index);
        let (width, height) = output.size();
        let wb = self
            .res
            .connectors
            .iter()
            .find(|c| c.writeback && c.possible_crtcs & crtc_bit != 0)
            .ok_or_else(|| KmsError::NoWriteback(connector.to_owned()))?;
        let wb_id = u32::from(wb.handle);
        let crtc_prop = wb.props.require(Prop::CrtcId, &wb.name)?;
        let fb_prop = wb.props.require(Prop::WritebackFbId, &wb.name)?;
        let fence_prop = wb.props.require(Prop::WritebackOutFencePtr, &wb.name)?;

        let buffer = self.buffers.dumb_create(&self.card, width, height, XR24)?;
        let fb = self.buffers.get(buffer)?.fb;
        let mut fence: i32 = -1;
        self.request.clear();
        self.request.set(wb_id, crtc_prop, u64::from(crtc_id));
        self.request.set(wb_id, fb_prop, u64::from(fb.0));
        self.request
            .set(wb_id, fence_prop, std::ptr::addr_of_mut!(fence) as u64);
        let committed = self
            .request
            .commit(&self.card, FLAG_ALLOW_MODESET)
            .map_err(|e| KmsError::Ioctl("writeback commit", e))
            .and_then(|()| {
                if fence < 0 {
                    return Err(KmsError::Ioctl(
                        "writeback commit",
                        std::io::Error::other("the kernel returned no out-fence"),
                    ));
                }
                Ok(())
            });
        if let Err(e) = committed {
            let _ = self.writeback_detach(wb_id, crtc_prop, fb_prop);
            let _ = self.buffers.release(&self.card, buffer);
            return Err(e);
        }
        Ok(WritebackJob {
            // SAFETY: the kernel created this sync file for us and nothing else owns it.
            fence: unsafe { OwnedFd::from_raw_fd(fence) },
            buffer,
            wb_id,
            crtc_prop,
            fb_prop,
        })
    }

    fn writeback_detach(&mut self, wb_id: u32, crtc_prop: u32, fb_prop: u32) -> KmsResult<()> {
        self.request.clear();
        self.request.set(wb_id, crtc_prop, 0);
        self.request.set(wb_id, fb_prop, 0);
        self.request
            .commit(&self.card, FLAG_ALLOW_MODESET)
            .map_err(|e| KmsError::Ioctl("detach writeback connector", e))
    }

    /// Detaches the writeback connector (whatever happened, so the next flip does not drag the
    /// job along), and pins the target for copying outside the lock; it is freed when unpinned.
    pub fn writeback_finish(&mut self, job: WritebackJob) -> KmsResult<crate::screen_copy::Pinned> {
        let detach = self.writeback_detach(job.wb_id, job.crtc_prop, job.fb_prop);
        let pinned = crate::screen_copy::pin(self, job.buffer.0);
        // Freed now if pinning failed, else when the pin goes.
        let _ = self.buffers.release(&self.card, job.buffer);
        detach?;
        pinned
    }
}

impl WritebackJob {
    /// Waits, without the engine lock, until the kernel has written the frame.
    pub fn wait(&self) -> KmsResult<()> {
        let mut pfd = libc::pollfd {
            fd: self.fence.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ready = unsafe { libc::poll(&mut pfd, 1, WRITEBACK_TIMEOUT_MS) };
        if ready <= 0 {
            return Err(KmsError::Ioctl(
                "wait for writeback",
                std::io::Error::from(std::io::ErrorKind::TimedOut),
            ));
        }
        Ok(())
    }
}
