//! Reading back what a CRTC really composes, through a writeback connector (vkms has one;
//! some SoC display engines do too). This is how tests, and later screenshots, see the
//! pixels the planes produce rather than the buffers we handed them.

use super::commit::FLAG_ALLOW_MODESET;
use super::engine::Engine;
use super::error::{KmsError, KmsResult};
use super::formats::XR24;
use super::props::Prop;

pub struct Capture {
    pub width: u32,
    pub height: u32,
    pub pitch: u32,
    /// XR24 rows, `pitch` bytes each.
    pub data: Vec<u8>,
}

impl Engine {
    /// Captures one frame of `connector`'s CRTC as XR24. Needs the outputs idle: attaching
    /// the writeback connector is a mode set, which must not race a flip in flight.
    pub fn writeback_capture(&mut self, connector: &str) -> KmsResult<Capture> {
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
        let result = self.writeback_run(wb_id, crtc_id, buffer, (crtc_prop, fb_prop, fence_prop));
        // Detach whatever happened, so the next flip does not drag the writeback job along.
        self.request.clear();
        self.request.set(wb_id, crtc_prop, 0);
        self.request.set(wb_id, fb_prop, 0);
        let detach = self.request.commit(&self.card, FLAG_ALLOW_MODESET);
        let data = result.and_then(|()| self.buffers.dumb_read(buffer));
        let pitch = self.buffers.get(buffer).map(|b| b.pitches[0]).unwrap_or(0);
        let _ = self.buffers.release(&self.card, buffer);
        let data = data?;
        detach.map_err(|e| KmsError::Ioctl("detach writeback connector", e))?;
        Ok(Capture {
            width,
            height,
            pitch,
            data,
        })
    }

    fn writeback_run(
        &mut self,
        wb_id: u32,
        crtc_id: u32,
        buffer: u32,
        (crtc_prop, fb_prop, fence_prop): (u32, u32, u32),
    ) -> KmsResult<()> {
        let fb = self.buffers.get(buffer)?.fb;
        let mut fence: i32 = -1;
        self.request.clear();
        self.request.set(wb_id, crtc_prop, u64::from(crtc_id));
        self.request.set(wb_id, fb_prop, u64::from(fb));
        self.request
            .set(wb_id, fence_prop, std::ptr::addr_of_mut!(fence) as u64);
        self.request
            .commit(&self.card, FLAG_ALLOW_MODESET)
            .map_err(|e| KmsError::Ioctl("writeback commit", e))?;
        if fence < 0 {
            return Err(KmsError::Ioctl(
                "writeback commit",
                std::io::Error::other("the kernel returned no out-fence"),
            ));
        }
        // The job completes at the next vblank on hardware; a software composer (vkms under
        // emulation, converting YUV per pixel) can take seconds.
        let mut pfd = libc::pollfd {
            fd: fence,
            events: libc::POLLIN,
            revents: 0,
        };
        let ready = unsafe { libc::poll(&mut pfd, 1, 10_000) };
        unsafe { libc::close(fence) };
        if ready <= 0 {
            return Err(KmsError::Ioctl(
                "wait for writeback",
                std::io::Error::from(std::io::ErrorKind::TimedOut),
            ));
        }
        Ok(())
    }
}
