//! Handing one decoded frame to the ring at its time: exported as a dma-buf on the VAAPI and
//! udmabuf paths, else as NV12 bytes. Also where the stream's colour tags are read, because
//! they can change with any frame.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ffmpeg::format::Pixel;
use ffmpeg_next as ffmpeg;

use super::color::Tagged;
use super::decoder::{Event, HwPathKind, BACKPRESSURE_MAX, EXPORT_FRAMES};
use super::frame_convert::nv12_fill;
use super::frame_ring::Shared;
use super::nv12::nv12_size;
use super::prime::ExportPool;
use super::session_open::{HwPath, Session};
use super::vaapi::vaapi_export;
use crate::dmabuf::PrimeFrame;

impl Session {
    /// Puts the frame into the ring: as a dma-buf on the hardware and export paths, else as NV12
    /// bytes, converting once.
    pub(super) fn publish(
        &mut self,
        frame: &ffmpeg::frame::Video,
        pts_us: i64,
        shared: &Shared,
    ) -> Result<(), String> {
        let (width, height) = (frame.width(), frame.height());
        let converted = !matches!(
            frame.format(),
            Pixel::VAAPI | Pixel::YUV420P | Pixel::YUVJ420P | Pixel::NV12
        );
        let tagged = Tagged::of(
            frame.color_space(),
            frame.color_range(),
            frame.format(),
            converted,
        );
        shared.color.set(tagged.color(height));
        if frame.format() == Pixel::VAAPI {
            // The layout is checked here, before the frame reaches any output: a surface the
            // engine could not describe to the kernel makes the decoder go on in software.
            return match unsafe { vaapi_export(frame.as_ptr(), &shared.claims) } {
                Ok(prime) => {
                    self.ring_put_prime(prime, pts_us, 0, shared);
                    self.hw_frame_count();
                    Ok(())
                }
                Err(reason) => {
                    self.fallback_pending = Some(reason);
                    Ok(())
                }
            };
        }
        if self.hw_state.refused.load(Ordering::Relaxed) && matches!(self.hw, HwPath::Vaapi(_)) {
            // FFmpeg fell back inside the same context: software frames from here on.
            self.hw = HwPath::Software;
            self.fallback = Some(format!(
                "the VAAPI driver refused this {} stream",
                self.info.codec
            ));
            *shared.path.lock().unwrap_or_else(|p| p.into_inner()) =
                (HwPathKind::Software, self.fallback.clone());
        }
        if let HwPath::Dmabuf(pool) = &mut self.hw {
            if !pool.as_ref().is_some_and(|p| p.fits(width, height)) {
                match ExportPool::new(EXPORT_FRAMES, width, height) {
                    Ok(made) => *pool = Some(made),
                    Err(reason) => {
                        self.fallback_pending = Some(format!("export pool: {reason}"));
                        return Ok(());
                    }
                }
            }
            let pool = pool.as_mut().expect("made above");
            // Outputs still hold every buffer: wait for one rather than overwrite a frame on
            // screen or drop this one at once.
            let until = Instant::now() + BACKPRESSURE_MAX;
            while !pool.has_free()
                && Instant::now() < until
                && !shared.io.stop.load(Ordering::Relaxed)
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            let mut failed = None;
            let exported =
                pool.export(
                    |out| match nv12_fill(&mut self.scaler, &self.source, frame, out) {
                        Ok(n) => n,
                        Err(e) => {
                            failed = Some(e);
                            0
                        }
                    },
                );
            if let Some(e) = failed {
                return Err(e);
            }
            let Some(prime) = exported else {
                // Every export buffer is still claimed by the ring or an output: skip this frame.
                shared.counters.late.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            };
            let copied = nv12_size(width as usize, height as usize) as u64;
            self.ring_put_prime(prime, pts_us, copied, shared);
            self.hw_frame_count();
            return Ok(());
        }
        let mut ring = shared.ring.lock().unwrap_or_else(|p| p.into_inner());
        let slot = ring.slot_next();
        let size = nv12_size(width as usize, height as usize);
        let buffer = ring.slot_writable(slot, size);
        let copied = nv12_fill(&mut self.scaler, &self.source, frame, buffer)?;
        ring.prime[slot] = None;
        let seq = shared.counters.frames.fetch_add(1, Ordering::Relaxed) + 1;
        ring.publish(slot, seq, pts_us, pass_now(shared), (width, height));
        drop(ring);
        shared
            .counters
            .bytes_copied_last
            .store(copied as u64, Ordering::Relaxed);
        self.picture_told();
        Ok(())
    }

    /// The first frame is in the ring: a prerolled acquire may resolve.
    fn picture_told(&mut self) {
        self.pass_frames += 1;
        if let Some(events) = self.first_picture.take() {
            let _ = events.try_send(Event::Picture);
        }
    }

    fn ring_put_prime(&mut self, prime: PrimeFrame, pts_us: i64, copied: u64, shared: &Shared) {
        let (width, height) = (prime.width, prime.height);
        let prime = Arc::new(prime);
        let mut ring = shared.ring.lock().unwrap_or_else(|p| p.into_inner());
        let slot = ring.slot_next();
        // Drops the claim of the frame that was here; an output may still hold its own.
        ring.prime[slot] = Some(prime);
        let seq = shared.counters.frames.fetch_add(1, Ordering::Relaxed) + 1;
        ring.publish(slot, seq, pts_us, pass_now(shared), (width, height));
        drop(ring);
        shared.counters.exported.fetch_add(1, Ordering::Relaxed);
        shared
            .counters
            .bytes_copied_last
            .store(copied, Ordering::Relaxed);
        self.picture_told();
    }
}

/// The pass a frame published now belongs to: the loops counted so far (a loop is counted
/// right after its pass's last frame is published, frame_pace.rs).
fn pass_now(shared: &Shared) -> u32 {
    u32::try_from(shared.counters.loops.load(Ordering::Relaxed)).unwrap_or(u32::MAX)
}
