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
    /// Most decoders at once (default 4); asking for more is ERR_DECODE_LIMIT.
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
    /// playlist, switched to without a gap.
    pub preroll: Option<bool>,
}

#[napi(object)]
pub struct AcquireResult {
    pub decoder: u32,
    /// A new decoder was started (false: joined a running one, or kept its own).
    pub created: bool,
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
        let lock = || self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let plan = lock()
            .acquire_plan(&self.consumer, &self.request)
            .map_err(js_error)?;
        match plan {
            Plan::Done(acquired) => Ok(acquired),
            Plan::Start { key, id } => {
                let decoder =
                    Decoder::start(id, key.clone(), self.request.preroll).map_err(js_error)?;
                lock()
                    .acquire_finish(&self.consumer, self.request.clone(), key, decoder)
                    .map_err(js_error)
            }
        }
    }

    fn resolve(&mut self, _env: Env, output: Acquired) -> napi::Result<AcquireResult> {
        Ok(AcquireResult {
            decoder: output.decoder,
            created: output.created,
        })
    }
}

fn request_parse(request: DecodeRequest) -> Result<Request, DecodeError> {
    let hw_text = request.hw.as_deref().unwrap_or("auto");
    let hw = HwMode::parse(hw_text).ok_or_else(|| {
        DecodeError::BadRequest(format!(
            "hw {hw_text:?} is not \"auto\", \"software\" or \"dmabuf\""
        ))
    })?;
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
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut registry).map_err(js_error)
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
        self.with(|r| {
            r.acquire(&consumer, request).map(|a| AcquireResult {
                decoder: a.decoder,
                created: a.created,
            })
        })
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
                        frame_rate: s.frame_rate,
                        fps: s.fps,
                        frames: s.frames as f64,
                        late: s.late as f64,
                        delayed: s.delayed as f64,
                        loops: s.loops as f64,
                        queue_depth: s.queue_depth,
                        bytes_copied_per_frame: s.bytes_copied_per_frame as f64,
                        failure: s.failure,
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
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
