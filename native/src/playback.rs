//! Shared decoding as a JavaScript class. JavaScript decides which output plays which
//! source; the registry decides how many decoders that takes (one per source by default).

use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Task};

use napi::Status;
use napi_derive::napi;

use crate::decode::decoder::Decoder;
use crate::decode::error::DecodeError;
use crate::decode::key::HwMode;
use crate::decode::registry::{Acquired, Plan, Registry, Request};

fn js_error(e: DecodeError) -> napi::Error {
    napi::Error::new(Status::GenericFailure, format!("{}: {e}", e.code()))
}

#[napi(object)]
pub struct DecodeOptions {
    /// One decoder per source for all outputs showing it (default true).
    pub shared_decode: Option<bool>,
    /// Most decoders at once (default 4). Beyond it, with sharing off, an output joins the
    /// running decoder of its source (`forcedShared`); a source no decoder runs is
    /// ERR_DECODE_LIMIT.
    pub max_decoders: Option<u32>,
}

#[napi(object)]
pub struct DecodeRequest {
    /// A file path or URL (http, https, HLS, RTSP).
    pub source: String,
    /// "auto" (default) or "software".
    pub hw: Option<String>,
    /// Where to start, in seconds (default 0). Part of the sharing key.
    pub start_seconds: Option<f64>,
    /// Video stream index (default: the best video stream). Part of the sharing key.
    pub stream: Option<u32>,
    /// Decode the first frame now and hold it until an output shows it: the next item of a
    /// playlist, switched to without a gap. The acquire then resolves only once that frame is
    /// decoded (within 10 s), else fails with ERR_DECODE_NO_PICTURE and leaves nothing behind.
    pub preroll: Option<bool>,
    /// A decoder of its own from the source's start, never one that already runs (a playlist
    /// item plays from its first frame to its last, whatever other outputs show of the same
    /// file). Default false: join the running decoder of the source (the demo, play).
    pub fresh: Option<bool>,
    /// At the end of the file keep its last frame instead of starting over (a playlist item
    /// played to its end: the next item takes over from that frame, never after a first frame
    /// of the same file shown again). Its end is counted in `loops` once. Only with `fresh`
    /// and `preroll`; default false.
    pub hold_at_end: Option<bool>,
}

#[napi(object)]
pub struct AcquireResult {
    pub decoder: u32,
    /// A new decoder was started (false: joined a running one, or kept its own).
    pub created: bool,
    /// Sharing is off, but `maxDecoders` was reached: joined the running decoder of the same
    /// source instead of being refused.
    pub forced_shared: bool,
}

#[napi(object)]
pub struct DecoderInfo {
    pub id: u32,
    pub source: String,
    pub hw_mode: String,
    pub start_seconds: f64,
    pub stream: Option<u32>,
    pub consumers: Vec<String>,
    /// Decoding on the GPU (VAAPI) rather than the CPU.
    pub hw: bool,
    /// How frames reach outputs: "vaapi" (GPU surfaces, zero copy), "dmabuf" (software decode
    /// in dma-bufs, zero copy after decode) or "software" (NV12 ring, one upload per frame).
    pub path: String,
    /// Why frames do not take the hardware path: no VAAPI device, the driver refused the
    /// stream, or it failed mid-stream (decoding then continued in software).
    pub hw_fallback: Option<String>,
    /// Frames handed on as dma-bufs.
    pub exported: f64,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Sample (pixel) aspect ratio: `sarNum:sarDen`; 0:1 when the stream says nothing (square).
    pub sar_num: u32,
    pub sar_den: u32,
    /// Degrees the picture is turned clockwise to stand upright (the stream's display matrix:
    /// a phone's portrait video); layouts turn it so.
    pub rotation: u32,
    /// The stream's nominal frame rate.
    pub frame_rate: f64,
    /// Frames per second actually produced, smoothed.
    pub fps: f64,
    pub frames: f64,
    /// Frames decoded more than one frame period after they were due.
    pub late: f64,
    /// Frames published more than 4 ms after they were due (the machine held the decoder up).
    pub delayed: f64,
    pub loops: f64,
    pub queue_depth: u32,
    /// CPU bytes copied for the newest frame: 0 on the zero-copy hardware path.
    pub bytes_copied_per_frame: f64,
    /// Why the decoder stopped, if it did.
    pub failure: Option<String>,
    /// The ERR_ code of `failure`: ERR_DECODE_STALLED (no data within the I/O timeout),
    /// ERR_DECODE_READ, ERR_DECODE_NO_PICTURE, ERR_DECODE_CODEC, ERR_DECODE_OPEN (a reopen
    /// to loop failed).
    pub failure_code: Option<String>,
    /// A consumer shares this decoder with sharing off because `maxDecoders` was reached.
    /// Always set by the addon (optional in the type so hand-made status objects need not
    /// name it).
    pub forced_shared: Option<bool>,
    /// Keyframe index beside the file: "loaded", "built" (saved after the first pass) or "none".
    pub index: String,
    pub index_keyframes: f64,
    /// Prerolled: the first frame waits for an output to take it.
    pub prerolled: bool,
}

#[napi(object)]
pub struct DecodeStatus {
    pub shared_decode: bool,
    pub max_decoders: u32,
    pub decoders: Vec<DecoderInfo>,
}

#[napi(object)]
pub struct FrameSnapshot {
    pub width: u32,
    pub height: u32,
    pub sequence: f64,
    /// Position on the decoder's timeline (continues across loops), in microseconds.
    pub pts_us: f64,
    /// NV12: the Y plane, then interleaved UV.
    pub data: napi::bindgen_prelude::Buffer,
}

#[napi]
pub struct DecodeManager {
    registry: Arc<Mutex<Registry>>,
}

/// `acquireAsync`: opening a source (a URL can take seconds) happens on a worker thread, with
/// the registry unlocked, so neither JavaScript nor other outputs wait for it.
pub struct AcquireTask {
    registry: Arc<Mutex<Registry>>,
    consumer: String,
    request: Request,
}

impl Task for AcquireTask {
    type Output = Acquired;
    type JsValue = AcquireResult;

    fn compute(&mut self) -> napi::Result<Acquired> {
        acquire_unlocked(&self.registry, &self.consumer, &self.request).map_err(js_error)
    }

    fn resolve(&mut self, _env: Env, output: Acquired) -> napi::Result<AcquireResult> {
        Ok(acquire_result(output))
    }
}

fn acquire_result(a: Acquired) -> AcquireResult {
    AcquireResult {
        decoder: a.decoder,
        created: a.created,
        forced_shared: a.forced_shared,
    }
}

/// Acquire with the source opened (and, for preroll, its first frame decoded) while the
/// registry is unlocked: other outputs' calls and status never wait for a slow source.
fn acquire_unlocked(
    registry: &Mutex<Registry>,
    consumer: &str,
    request: &Request,
) -> Result<Acquired, DecodeError> {
    let plan = locked(registry, |r| r.acquire_plan(consumer, request))?;
    match plan {
        Plan::Done(acquired) => Ok(acquired),
        Plan::Start { key, id } => {
            let decoder = Decoder::start(id, key.clone(), request.preroll)?;
            // Prerolled: the thread waits at its first frame, so this lands before any end.
            decoder.hold_at_end_set(request.hold_at_end);
            locked(registry, |r| {
                r.acquire_finish(consumer, request.clone(), key, decoder)
            })
        }
    }
}

/// Runs `f` under the registry's lock; decoders it stopped are joined afterwards, outside
/// the lock and off the calling thread, so neither JavaScript nor other outputs wait on a
/// decoder thread that is slow to end.
fn locked<T>(registry: &Mutex<Registry>, f: impl FnOnce(&mut Registry) -> T) -> T {
    let (result, retired) = {
        let mut r = registry.lock().unwrap_or_else(|p| p.into_inner());
        let result = f(&mut r);
        (result, r.retired_take())
    };
    reap(retired);
    result
}

/// Joins stopped decoders on a thread of their own. Each was told to stop already (its
/// FFmpeg reads are interrupted), so the join is short unless a driver call hangs; then
/// only this thread waits.
fn reap(retired: Vec<Decoder>) {
    if retired.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("multihead-decode-reap".into())
        .spawn(move || drop(retired));
    // Without a thread (the process is out of them) the join happens here.
    if let Err(e) = spawned {
        drop(e);
    }
}

fn request_parse(request: DecodeRequest) -> Result<Request, DecodeError> {
    let hw_text = request.hw.as_deref().unwrap_or("auto");
    let hw = HwMode::parse(hw_text).ok_or_else(|| {
        DecodeError::BadRequest(format!(
            "hw {hw_text:?} is not \"auto\", \"software\" or \"dmabuf\""
        ))
    })?;
    let hold_at_end = request.hold_at_end.unwrap_or(false);
    if hold_at_end && !(request.fresh == Some(true) && request.preroll == Some(true)) {
        return Err(DecodeError::BadRequest(
            "holdAtEnd needs fresh and preroll (a decoder of its own, from its first frame)".into(),
        ));
    }
    let start = request.start_seconds.unwrap_or(0.0);
    if !start.is_finite() || start < 0.0 {
        return Err(DecodeError::BadRequest(format!(
            "startSeconds {start} must be a number >= 0"
        )));
    }
    Ok(Request {
        source: request.source,
        hw,
        start_ms: (start * 1000.0).round() as u64,
        stream: request.stream,
        preroll: request.preroll.unwrap_or(false),
        fresh: request.fresh.unwrap_or(false),
        hold_at_end,
    })
}

impl DecodeManager {
    /// The newest-frame handle of `consumer`'s decoder, for the KMS engine.
    pub(crate) fn source_of(
        &self,
        consumer: &str,
    ) -> napi::Result<crate::decode::decoder::FrameSource> {
        self.with(|r| {
            r.source_of(consumer)
                .ok_or_else(|| DecodeError::UnknownConsumer(consumer.to_owned()))
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Registry) -> Result<T, DecodeError>) -> napi::Result<T> {
        locked(&self.registry, f).map_err(js_error)
    }
}

#[napi]
impl DecodeManager {
    #[napi(constructor, catch_unwind)]
    pub fn new(options: Option<DecodeOptions>) -> Self {
        let shared = options
            .as_ref()
            .and_then(|o| o.shared_decode)
            .unwrap_or(true);
        let max = options.as_ref().and_then(|o| o.max_decoders).unwrap_or(4);
        DecodeManager {
            registry: Arc::new(Mutex::new(Registry::new(shared, max))),
        }
    }

    /// Gives `consumer` (an output, or a video-wall tile) the decoder for `request`. Opens
    /// the source on the calling thread: use `acquireAsync` for URLs.
    #[napi(catch_unwind)]
    pub fn acquire(&self, consumer: String, request: DecodeRequest) -> napi::Result<AcquireResult> {
        let request = request_parse(request).map_err(js_error)?;
        acquire_unlocked(&self.registry, &consumer, &request)
            .map(acquire_result)
            .map_err(js_error)
    }

    /// `acquire` with the source opened on a worker thread; resolves when it is decoding.
    #[napi(ts_return_type = "Promise<AcquireResult>", catch_unwind)]
    pub fn acquire_async(
        &self,
        consumer: String,
        request: DecodeRequest,
    ) -> napi::Result<AsyncTask<crate::panic_guard::Guarded<AcquireTask>>> {
        let request = request_parse(request).map_err(js_error)?;
        Ok(AsyncTask::new(crate::panic_guard::Guarded(AcquireTask {
            registry: Arc::clone(&self.registry),
            consumer,
            request,
        })))
    }

    /// The consumer leaves its decoder; the last consumer out stops it.
    #[napi(catch_unwind)]
    pub fn release(&self, consumer: String) -> napi::Result<()> {
        self.with(|r| r.release(&consumer))
    }

    /// Sharing on or off at run time (the RFC's runtime control).
    #[napi(catch_unwind)]
    pub fn set_shared_decode(&self, on: bool) -> napi::Result<()> {
        self.with(|r| r.set_shared(on))
    }

    /// The VAAPI device (a render node) for decoders opened from now on; null picks the first
    /// render node. The supervisor passes the render node of the KMS device it drives, so
    /// decoded surfaces live on the GPU that scans them out.
    #[napi(catch_unwind)]
    pub fn set_vaapi_device(&self, path: Option<String>) {
        crate::decode::vaapi::vaapi_device_set(path);
    }

    #[napi(catch_unwind)]
    pub fn set_max_decoders(&self, max: u32) -> napi::Result<()> {
        self.with(|r| {
            r.set_max_decoders(max);
            Ok(())
        })
    }

    #[napi(catch_unwind)]
    pub fn status(&self) -> napi::Result<DecodeStatus> {
        self.with(|r| {
            Ok(DecodeStatus {
                shared_decode: r.shared(),
                max_decoders: r.max_decoders(),
                decoders: r
                    .status()
                    .into_iter()
                    .map(|s| DecoderInfo {
                        id: s.id,
                        source: s.key.source,
                        hw_mode: s.key.hw.as_str().to_owned(),
                        start_seconds: s.key.start_ms as f64 / 1000.0,
                        stream: s.key.stream,
                        consumers: s.consumers,
                        hw: s.hw,
                        path: s.path.to_owned(),
                        hw_fallback: s.hw_fallback,
                        exported: s.exported as f64,
                        codec: s.codec,
                        width: s.width,
                        height: s.height,
                        sar_num: s.sar.0,
                        sar_den: s.sar.1,
                        rotation: s.rotation,
                        frame_rate: s.frame_rate,
                        fps: s.fps,
                        frames: s.frames as f64,
                        late: s.late as f64,
                        delayed: s.delayed as f64,
                        loops: s.loops as f64,
                        queue_depth: s.queue_depth,
                        bytes_copied_per_frame: s.bytes_copied_per_frame as f64,
                        failure: s.failure,
                        failure_code: s.failure_code.map(str::to_owned),
                        forced_shared: Some(s.forced_shared),
                        index: s.index.to_owned(),
                        index_keyframes: s.index_keyframes as f64,
                        prerolled: s.prerolled,
                    })
                    .collect(),
            })
        })
    }

    /// A copy of the newest frame the consumer's decoder produced (for previews and tests;
    /// outputs take frames without this copy).
    #[napi(catch_unwind)]
    pub fn snapshot(&self, consumer: String) -> napi::Result<Option<FrameSnapshot>> {
        // The registry lock only to find the decoder: acquire, release and status never wait
        // for a whole-frame copy.
        let source = self.source_of(&consumer)?;
        Ok(
            source.with_newest(|data, width, height, sequence, pts| FrameSnapshot {
                width,
                height,
                sequence: sequence as f64,
                pts_us: pts as f64,
                data: data.to_vec().into(),
            }),
        )
    }

    /// Stops every decoder.
    #[napi(catch_unwind)]
    pub fn close(&self) {
        locked(&self.registry, Registry::clear);
    }
}
