//! Virtual outputs: the same frame-locked presentation as on KMS, with scanout to memory and
//! a simulated vblank clock. Used when a machine has no KMS device (a laptop running the
//! README's command) and by tests. At each vblank every output bound to a source takes the
//! newest decoded frame, all outputs at the same tick: the decoder's buffer itself, held by
//! reference as a KMS plane scans it (a dma-buf frame, whose bytes are a mapping, is copied).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use napi::Status;
use napi_derive::napi;

use crate::decode::buffer_writable;
use crate::decode::decoder::FrameSource;
use crate::dmabuf::FrameFeed;
use crate::play_record::{PlayMark, PlayRecord, PlayRecorder};

#[napi(object)]
pub struct VirtualOutputConfig {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Vblanks per second (default 60).
    pub refresh: Option<u32>,
}

#[napi(object)]
pub struct VirtualOutputStats {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub refresh: u32,
    pub vblanks: f64,
    /// Vblanks that showed a new frame, and vblanks that kept the previous one.
    pub frames: f64,
    pub repeats: f64,
    /// Decoded frames that never reached this output (replaced before a vblank took them).
    pub dropped: f64,
    /// Vblanks bound to a source that had nothing to show yet (the gap gapless avoids).
    pub blank: f64,
    /// Vblanks the simulated clock processed more than 4 ms late: this machine did not run the
    /// (real-time) vblank thread in time, where a real display would have scanned out on time,
    /// so frames dropped around them are the machine's stall, not the engine's.
    pub late_ticks: f64,
    /// Decoder sequence number of the frame on show (0: nothing yet).
    pub sequence: f64,
    /// Longest the vblank thread waited for the display's lock, in µs (the same for every
    /// output). Snapshots copy outside that lock, so it stays near zero while they run.
    pub max_lock_wait_us: f64,
    /// What plays here: the consumer name, if any.
    pub playing: Option<String>,
}

#[napi(object)]
pub struct VirtualFrame {
    pub width: u32,
    pub height: u32,
    pub sequence: f64,
    /// NV12, as scanned out.
    pub data: napi::bindgen_prelude::Buffer,
}

struct Output {
    name: String,
    width: u32,
    height: u32,
    refresh: u32,
    /// The consumer's name (shared with its play records, so a vblank never allocates) and frames.
    source: Option<(Arc<str>, FrameSource)>,
    /// What was on show from which vblank to which: proof of play.
    record: PlayRecorder,
    /// The memory this output scans out: the decoder's ring slot, held (the decoder writes
    /// elsewhere while it is), or for dma-buf frames this output's own copy. Shared, so a
    /// snapshot reads it outside the lock; a copy then goes into `spare` instead.
    scanout: Arc<Vec<u8>>,
    spare: Arc<Vec<u8>>,
    frame_size: (u32, u32),
    sequence: u64,
    vblanks: u64,
    frames: u64,
    repeats: u64,
    dropped: u64,
    /// Vblanks bound to a source with no frame to show yet.
    blank: u64,
    late_ticks: u64,
}

struct State {
    outputs: Vec<Output>,
    max_lock_wait: Duration,
}

/// An output's scanout as last shown: the buffer (by reference), its size, its sequence.
type Shown = (Arc<Vec<u8>>, (u32, u32), u64);

#[napi]
pub struct VirtualDisplay {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn bad(message: String) -> napi::Error {
    napi::Error::new(
        Status::InvalidArg,
        format!("ERR_VIRTUAL_BAD_ARGUMENT: {message}"),
    )
}

#[napi]
impl VirtualDisplay {
    /// Outputs by name and mode; the vblank clock starts at once.
    #[napi(constructor, catch_unwind)]
    pub fn new(outputs: Vec<VirtualOutputConfig>) -> napi::Result<Self> {
        if outputs.is_empty() {
            return Err(bad("a virtual display needs at least one output".into()));
        }
        let mut list = Vec::with_capacity(outputs.len());
        for o in outputs {
            let refresh = o.refresh.unwrap_or(60);
            if o.width == 0
                || o.height == 0
                || o.width > 16384
                || o.height > 16384
                || !(1..=240).contains(&refresh)
            {
                return Err(bad(format!(
                    "output {}: {}x{}@{} is out of range",
                    o.name, o.width, o.height, refresh
                )));
            }
            if list.iter().any(|x: &Output| x.name == o.name) {
                return Err(bad(format!("output {} is listed twice", o.name)));
            }
            list.push(Output {
                name: o.name,
                width: o.width,
                height: o.height,
                refresh,
                source: None,
                record: PlayRecorder::default(),
                scanout: Arc::default(),
                spare: Arc::default(),
                frame_size: (0, 0),
                sequence: 0,
                vblanks: 0,
                frames: 0,
                repeats: 0,
                dropped: 0,
                blank: 0,
                late_ticks: 0,
            });
        }
        let state = Arc::new(Mutex::new(State {
            outputs: list,
            max_lock_wait: Duration::ZERO,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_state, thread_stop) = (Arc::clone(&state), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("multihead-vblank".into())
            .spawn(move || {
                crate::realtime::realtime_enter();
                vblank_run(&thread_state, &thread_stop)
            })
            .map_err(|e| {
                napi::Error::from_reason(format!("cannot start the vblank thread: {e}"))
            })?;
        Ok(VirtualDisplay {
            state,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Shows the decoder `consumer` holds in `manager` on these outputs, from the next vblank.
    #[napi(catch_unwind)]
    pub fn play(
        &self,
        manager: &crate::playback::DecodeManager,
        consumer: String,
        outputs: Vec<String>,
    ) -> napi::Result<()> {
        let source = manager.source_of(&consumer)?;
        let consumer: Arc<str> = Arc::from(consumer);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for name in &outputs {
            if !state.outputs.iter().any(|o| &o.name == name) {
                return Err(bad(format!("no virtual output {name}")));
            }
        }
        for o in state
            .outputs
            .iter_mut()
            .filter(|o| outputs.contains(&o.name))
        {
            o.source = Some((Arc::clone(&consumer), source.clone()));
            // A new source numbers its frames from 1.
            o.sequence = 0;
        }
        Ok(())
    }

    /// Stops showing video on these outputs (all when empty); they keep their last frame.
    #[napi(catch_unwind)]
    pub fn stop_video(&self, outputs: Option<Vec<String>>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for o in &mut state.outputs {
            if outputs.as_ref().is_none_or(|names| names.contains(&o.name)) {
                o.source = None;
                o.record.play_stopped();
            }
        }
    }

    #[napi(catch_unwind)]
    pub fn stats(&self) -> Vec<VirtualOutputStats> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .outputs
            .iter()
            .map(|o| VirtualOutputStats {
                name: o.name.clone(),
                width: o.width,
                height: o.height,
                refresh: o.refresh,
                vblanks: o.vblanks as f64,
                frames: o.frames as f64,
                repeats: o.repeats as f64,
                dropped: o.dropped as f64,
                blank: o.blank as f64,
                late_ticks: o.late_ticks as f64,
                sequence: o.sequence as f64,
                max_lock_wait_us: state.max_lock_wait.as_micros() as f64,
                playing: o.source.as_ref().map(|(c, _)| c.to_string()),
            })
            .collect()
    }

    /// Proof of play: each output's records of what it showed from which vblank to which
    /// (closed ones handed over once, the open one each time). See play_record.rs.
    #[napi(catch_unwind)]
    pub fn play_records(&self) -> Vec<PlayRecord> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut records = Vec::new();
        for o in &mut state.outputs {
            o.record.play_drain(&o.name, &mut records);
        }
        records
    }

    /// A JPEG of what the output scans out now (previews, the screenshot command), or null
    /// before its first frame. The scanout is held, not copied: the vblank thread writes the
    /// next frame into its spare buffer meanwhile. Encoded on a worker thread.
    #[napi(ts_return_type = "Promise<JpegPicture | null>", catch_unwind)]
    pub fn snapshot_jpeg(
        &self,
        output: String,
        options: crate::jpeg::SnapshotJpegOptions,
    ) -> napi::Result<
        napi::bindgen_prelude::AsyncTask<crate::panic_guard::Guarded<crate::jpeg::JpegTask>>,
    > {
        let shown =
            self.shown(&output)?
                .map(|(scanout, (width, height), _)| crate::jpeg::ShownFrame {
                    data: crate::jpeg::JpegData::Shared(scanout),
                    width,
                    height,
                    format: "NV12".to_owned(),
                });
        crate::jpeg::snapshot_jpeg_task(shown, &options)
    }

    /// A copy of what the output scans out now (for previews and tests). The lock is held
    /// only to take a reference; the copy is made after it is released, so the vblank thread
    /// never waits for it.
    #[napi(catch_unwind)]
    pub fn snapshot(&self, output: String) -> napi::Result<Option<VirtualFrame>> {
        let shown = self.shown(&output)?;
        Ok(
            shown.map(|(scanout, (width, height), sequence)| VirtualFrame {
                width,
                height,
                sequence: sequence as f64,
                data: scanout.as_slice().to_vec().into(),
            }),
        )
    }

    /// What the output scans out now, by reference (the lock is held only to take it), with
    /// its size and sequence; none before its first frame.
    fn shown(&self, output: &str) -> napi::Result<Option<Shown>> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let o = state
            .outputs
            .iter()
            .find(|o| o.name == output)
            .ok_or_else(|| bad(format!("no virtual output {output}")))?;
        Ok((o.sequence > 0).then(|| (Arc::clone(&o.scanout), o.frame_size, o.sequence)))
    }

    #[napi(catch_unwind)]
    pub fn close(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for VirtualDisplay {
    fn drop(&mut self) {
        self.close();
    }
}

/// The simulated vblank: each output ticks at its own refresh; outputs with the same refresh
/// tick together and take the same frame.
/// Later than this, a real-time thread was held up by the machine, not by its own work.
const STALL: Duration = Duration::from_millis(4);

fn vblank_run(state: &Mutex<State>, stop: &AtomicBool) {
    let start = Instant::now();
    // Instant is CLOCK_MONOTONIC too: a vblank's timestamp is this plus its due time, as a
    // KMS flip event's is the kernel's vblank time.
    let start_ns = crate::kms::engine::monotonic_ns();
    let mut ticks: Vec<u64> = Vec::new();
    let heartbeat = crate::heartbeat::Heartbeat::register("vblank");
    while !stop.load(Ordering::Relaxed) {
        heartbeat.beat();
        let next_due = {
            let asked = Instant::now();
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            state.max_lock_wait = state.max_lock_wait.max(asked.elapsed());
            ticks.resize(state.outputs.len(), 0);
            let now = start.elapsed();
            let mut next = Duration::from_millis(100);
            for (o, tick) in state.outputs.iter_mut().zip(ticks.iter_mut()) {
                // Computed from the start, not accumulated, so the clock does not drift.
                let refresh = u64::from(o.refresh);
                let due = |tick: u64| Duration::from_nanos((tick + 1) * 1_000_000_000 / refresh);
                if now >= due(*tick) {
                    if now - due(*tick) > STALL {
                        o.late_ticks += 1;
                    }
                    let at_ns = start_ns + due(*tick).as_nanos() as u64;
                    *tick += 1;
                    vblank(o, at_ns);
                }
                next = next.min(due(*tick).saturating_sub(now));
            }
            next
        };
        std::thread::sleep(next_due.min(Duration::from_millis(20)));
    }
}

fn vblank(o: &mut Output, at_ns: u64) {
    o.vblanks += 1;
    let Some((consumer, source)) = &o.source else {
        return;
    };
    let taken = source.take_newest_shared(|buffer, data, width, height, sequence, _| {
        if sequence == o.sequence {
            return false;
        }
        match buffer {
            // The decoder's buffer itself, as a KMS plane scans it: no copy per output.
            Some(buffer) => o.scanout = Arc::clone(buffer),
            None => {
                let scanout = buffer_writable(&mut o.scanout, &mut o.spare);
                if scanout.len() != data.len() {
                    scanout.resize(data.len(), 0);
                }
                scanout.copy_from_slice(data);
            }
        }
        if o.sequence > 0 && sequence > o.sequence + 1 {
            o.dropped += sequence - o.sequence - 1;
        }
        o.sequence = sequence;
        o.frame_size = (width, height);
        true
    });
    if taken == Some(true) {
        let mark = PlayMark {
            consumer: Arc::clone(consumer),
            sequence: o.sequence,
            pass: source.pass_of(o.sequence),
        };
        o.record.play_shown(&mark, at_ns);
    } else if o.sequence > 0 {
        o.record.play_repeat(at_ns);
    }
    match taken {
        Some(true) => o.frames += 1,
        // Bound to a source that has nothing yet and nothing shown before: a blank vblank.
        None if o.sequence == 0 => o.blank += 1,
        _ => o.repeats += 1,
    }
}
