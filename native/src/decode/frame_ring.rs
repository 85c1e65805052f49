//! What a decoder shares with everyone who reads it: the ring of newest frames, the counters
//! and state status reads, and `FrameSource`, the handle outputs hold. The decoder thread
//! writes here and the presentation thread reads here, so nothing in this file may block on
//! decoding or allocate per frame.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::color::ColorCell;
use super::decoder::{DecoderCounters, HwPathKind};
use super::error::StreamFailure;
use super::io::IoGuard;
use crate::dmabuf::feed::CpuFrameFn;
use crate::dmabuf::{FrameFeed, PrimeFrame, YuvColor};

/// Frames kept: one being written, the newest, and one a slow reader may still hold.
pub(super) const RING: usize = 3;

/// A few slots reused in turn, so steady state allocates nothing: the decoder writes the one
/// after the newest, leaving alone the newest and the one a slow reader may still hold.
/// Slots are shared: a virtual output shows a slot's buffer itself, as a KMS plane scans the
/// decoder's buffer, so N outputs of one decoder cost no N copies.
pub struct FrameRing {
    pub slots: [Arc<Vec<u8>>; RING],
    /// Takes a slot's place when a reader still holds the frame in it (see `buffer_writable`).
    pub spare: Arc<Vec<u8>>,
    /// Set instead of `slots[i]` when the frame lives in a dma-buf.
    pub prime: [Option<Arc<PrimeFrame>>; RING],
    /// (sequence number, pts in µs on the looped timeline) per slot.
    pub meta: [(u64, i64); RING],
    /// Per slot: the pass of the file the frame belongs to (0 for the first, +1 per loop), so
    /// an output's play record can tell one pass of a looping item from the next.
    pub pass: [u32; RING],
    /// Slot holding the newest complete frame.
    pub newest: Option<usize>,
    pub width: u32,
    pub height: u32,
}

impl FrameRing {
    /// Nothing decoded yet.
    pub fn empty() -> FrameRing {
        FrameRing {
            slots: Default::default(),
            spare: Arc::default(),
            prime: Default::default(),
            meta: [(0, 0); RING],
            pass: [0; RING],
            newest: None,
            width: 0,
            height: 0,
        }
    }

    /// The slot the decoder writes next: the one after the newest.
    pub fn slot_next(&self) -> usize {
        self.newest.map_or(0, |n| (n + 1) % RING)
    }

    /// The buffer to write the next frame into, `size` bytes: never one a reader holds.
    pub fn slot_writable(&mut self, slot: usize, size: usize) -> &mut Vec<u8> {
        let buffer = buffer_writable(&mut self.slots[slot], &mut self.spare);
        if buffer.len() != size {
            // Only when the stream's size changes: steady state reuses the ring.
            buffer.resize(size, 0);
        }
        buffer
    }

    /// Makes the frame just written to `slot` the newest, numbered `seq`, of pass `pass`.
    pub fn publish(&mut self, slot: usize, seq: u64, pts_us: i64, pass: u32, size: (u32, u32)) {
        let (width, height) = size;
        self.meta[slot] = (seq, pts_us);
        self.pass[slot] = pass;
        self.newest = Some(slot);
        self.width = width;
        self.height = height;
    }
}

/// A shared buffer to write into: unshared in steady state; while a reader (an output, a
/// snapshot) still holds it, `spare` takes its place, and only when both are held is a copy
/// made. One mechanism for the ring's slots and the outputs' own scanouts.
pub fn buffer_writable<'a>(
    buffer: &'a mut Arc<Vec<u8>>,
    spare: &mut Arc<Vec<u8>>,
) -> &'a mut Vec<u8> {
    if Arc::get_mut(buffer).is_none() {
        std::mem::swap(buffer, spare);
    }
    Arc::make_mut(buffer)
}

/// One per decoder, behind an `Arc` that its thread, the `Decoder` and every `FrameSource`
/// hold: whoever lets go last frees it, so no reader is left with a dangling frame.
pub(super) struct Shared {
    /// Stop flag and I/O deadlines, polled by FFmpeg's interrupt callback.
    pub(super) io: IoGuard,
    /// Prerolled: the first frame is decoded and waits; the clock starts when an output
    /// first takes it (gapless switching to the next item).
    pub(super) hold: AtomicBool,
    /// At the end of the file keep the last frame rather than loop (a playlist item).
    pub(super) hold_at_end: AtomicBool,
    pub(super) counters: DecoderCounters,
    pub(super) ring: Mutex<FrameRing>,
    /// Set when the thread ends on an error (a stream that broke mid-way).
    pub(super) failure: Mutex<Option<StreamFailure>>,
    /// Which path frames take now, and why not the hardware one (read by status).
    pub(super) path: Mutex<(HwPathKind, Option<String>)>,
    /// Set by the display when no plane of an output takes this decoder's dma-buf frames
    /// (fourcc or modifier): the decoder goes on in software (frames with a CPU view).
    pub(super) cpu_wanted: Mutex<Option<String>>,
    /// `cpu_wanted` was set: read per packet without taking the lock.
    pub(super) cpu_asked: AtomicBool,
    /// The newest frame's colour as the stream tags it.
    pub(super) color: ColorCell,
    /// Exported VAAPI frames alive (in the ring or held by outputs): the decoder waits while
    /// this many are out rather than run its surface pool dry.
    pub(super) claims: Arc<AtomicUsize>,
}

impl Shared {
    /// Nothing decoded yet; a prerolled decoder holds its first frame until an output takes it.
    pub(super) fn new(preroll: bool) -> Shared {
        Shared {
            io: IoGuard::default(),
            hold: AtomicBool::new(preroll),
            hold_at_end: AtomicBool::new(false),
            counters: DecoderCounters::default(),
            ring: Mutex::new(FrameRing::empty()),
            failure: Mutex::new(None),
            path: Mutex::new((HwPathKind::Software, None)),
            cpu_wanted: Mutex::new(None),
            cpu_asked: AtomicBool::new(false),
            color: ColorCell::default(),
            claims: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub(super) fn newest<R>(&self, f: impl FnOnce(&[u8], u32, u32, u64, i64) -> R) -> Option<R> {
        self.newest_shared(|_, bytes, width, height, seq, pts| f(bytes, width, height, seq, pts))
    }

    /// Like `newest`, with the slot's buffer itself when the frame is in memory (None for a
    /// dma-buf frame, whose bytes are a mapping).
    fn newest_shared<R>(
        &self,
        f: impl FnOnce(Option<&Arc<Vec<u8>>>, &[u8], u32, u32, u64, i64) -> R,
    ) -> Option<R> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let slot = ring.newest?;
        let (seq, pts) = ring.meta[slot];
        let (buffer, bytes) = match &ring.prime[slot] {
            Some(prime) => (None, prime.cpu_bytes()?),
            None => (Some(&ring.slots[slot]), ring.slots[slot].as_slice()),
        };
        Some(f(buffer, bytes, ring.width, ring.height, seq, pts))
    }

    fn newest_prime(&self) -> Option<(Arc<PrimeFrame>, u64)> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let slot = ring.newest?;
        ring.prime[slot].clone().map(|p| (p, ring.meta[slot].0))
    }

    /// The pass of frame `sequence` while it is still in the ring (0 when it left it).
    fn pass_of(&self, sequence: u64) -> u32 {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        (0..RING)
            .find(|&slot| ring.meta[slot].0 == sequence)
            .map_or(0, |slot| ring.pass[slot])
    }

    fn hold_release(&self) {
        if self.hold.load(Ordering::Relaxed) {
            self.hold.store(false, Ordering::Relaxed);
        }
    }
}

/// A handle on a decoder's newest frames for the presentation thread: it outlives nothing
/// (the decoder's thread stops when the registry drops the decoder) and never blocks on it.
#[derive(Clone)]
pub struct FrameSource(Arc<Shared>);

impl FrameSource {
    /// Only the decoder that owns `shared` hands out sources.
    pub(super) fn of(shared: Arc<Shared>) -> FrameSource {
        FrameSource(shared)
    }

    /// For outputs: like `with_newest`, and the first take starts a prerolled decoder's clock,
    /// so its first frame is on screen exactly when its second is timed from.
    pub fn take_newest<R>(&self, f: impl FnOnce(&[u8], u32, u32, u64, i64) -> R) -> Option<R> {
        self.take_newest_shared(|_, bytes, width, height, seq, pts| {
            f(bytes, width, height, seq, pts)
        })
    }

    /// Like `take_newest`, with the ring slot's buffer itself when the frame is in memory, so
    /// an output can hold it instead of copying it (None for a dma-buf frame).
    pub fn take_newest_shared<R>(
        &self,
        f: impl FnOnce(Option<&Arc<Vec<u8>>>, &[u8], u32, u32, u64, i64) -> R,
    ) -> Option<R> {
        let result = self.0.newest_shared(f);
        if result.is_some() {
            self.0.hold_release();
        }
        result
    }

    /// Runs `f` on the newest frame (NV12 bytes, width, height, sequence, pts µs).
    pub fn with_newest<R>(&self, f: impl FnOnce(&[u8], u32, u32, u64, i64) -> R) -> Option<R> {
        self.0.newest(f)
    }

    /// Why the decoder stopped, if it did (code and sentence).
    pub fn failure(&self) -> Option<StreamFailure> {
        self.0
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What the KMS engine reads (through the napi glue, which hands it an `Arc<dyn FrameFeed>`).
impl FrameFeed for FrameSource {
    fn take_newest_prime(&self) -> Option<(Arc<PrimeFrame>, u64)> {
        let result = self.0.newest_prime();
        if result.is_some() {
            self.0.hold_release();
        }
        result
    }

    fn take_newest(&self, f: CpuFrameFn<'_>) -> bool {
        FrameSource::take_newest(self, |data, w, h, seq, pts| f(data, w, h, seq, pts)).is_some()
    }

    fn with_newest(&self, f: CpuFrameFn<'_>) -> bool {
        FrameSource::with_newest(self, |data, w, h, seq, pts| f(data, w, h, seq, pts)).is_some()
    }

    fn pass_of(&self, sequence: u64) -> u32 {
        self.0.pass_of(sequence)
    }

    /// `yuvj*` frames are full range.
    fn color(&self) -> Option<YuvColor> {
        self.0.color.get()
    }

    /// The first reason is kept, for status. The decoder acts on it at its next packet, or at
    /// once when it shows a still image: a software decoder continues after the last frame
    /// shown (from the start when none was), and status says `path: "software"` with the
    /// reason as `hwFallback`. On the software path already, it is a no-op.
    fn cpu_frames_request(&self, reason: &str) {
        if self.0.cpu_asked.load(Ordering::Relaxed) {
            return;
        }
        let mut wanted = self.0.cpu_wanted.lock().unwrap_or_else(|p| p.into_inner());
        if wanted.is_none() {
            *wanted = Some(reason.to_owned());
            self.0.cpu_asked.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(ring: &mut FrameRing, seq: u64, byte: u8) -> usize {
        let slot = ring.slot_next();
        ring.slot_writable(slot, 16).fill(byte);
        ring.publish(slot, seq, 0, 0, (4, 4));
        slot
    }

    #[test]
    fn slot_writable_reuses_the_ring_when_no_reader_holds_a_frame() {
        let mut ring = FrameRing::empty();
        for seq in 1..=RING as u64 {
            write(&mut ring, seq, seq as u8);
        }
        let before = crate::alloc_count::frame_path_allocations();
        crate::alloc_count::frame_path(|| {
            for seq in 4..=30 {
                write(&mut ring, seq, seq as u8);
            }
        });
        let allocations = crate::alloc_count::frame_path_allocations() - before;
        assert_eq!(
            allocations, 0,
            "steady state writes into the ring's own buffers"
        );
    }

    #[test]
    fn slot_writable_never_writes_into_a_frame_a_reader_holds() {
        let mut ring = FrameRing::empty();
        let first = write(&mut ring, 1, 0xaa);
        // An output shows frame 1 by reference, and keeps it (a slow or stalled output).
        let shown = Arc::clone(&ring.slots[first]);
        for seq in 2..=10 {
            write(&mut ring, seq, seq as u8);
            assert!(
                shown.iter().all(|&b| b == 0xaa),
                "frame 1 changed under its reader at {seq}"
            );
        }
        // A snapshot holds the spare too: a copy is made, the readers' frames stay whole.
        let snapshot = Arc::clone(&ring.spare);
        for seq in 11..=20 {
            write(&mut ring, seq, seq as u8);
        }
        assert!(shown.iter().all(|&b| b == 0xaa));
        let newest = ring.newest.unwrap();
        assert!(ring.slots[newest].iter().all(|&b| b == 20));
        drop(snapshot);
    }
}
