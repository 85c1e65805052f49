//! The KMS engine as a JavaScript class. Thin: it converts arguments, takes the engine
//! lock, and maps errors to `error.code` values such as ERR_KMS_MODE_NOT_FOUND.

use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::Uint8Array;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;

use crate::dmabuf::udmabuf::udmabuf_create;
use crate::dmabuf::{DmaBufDesc, Fourcc, FrameFeed, Modifier};
use crate::kms::engine::{
    rotation_bit, Engine, EngineEvent, FlipLoop, PresentResult, SceneLayer, SceneOutput,
};
use crate::kms::error::KmsError;
use crate::kms::formats::{fourcc_name, fourcc_parse, YuvColor, YuvMatrix, MOD_INVALID};
use crate::kms::ids::{BufferId, Rect as KmsRect};
use crate::kms::output::OutputRequest;
use crate::kms::present::{Notice, Presenter};
use crate::kms::resources::{mode_is_preferred, Resources};
use crate::kms::video::VideoPlacement;
use crate::play_record::PlayRecord;

/// napi-rs functions throw with a fixed status, so the stable code leads the message
/// ("ERR_KMS_MODE_NOT_FOUND: connector ..."); src/display/kms.ts lifts it into `error.code`.
fn js_error(e: KmsError) -> napi::Error {
    napi::Error::new(Status::GenericFailure, format!("{}: {e}", e.code()))
}

fn bad_arg(message: String) -> napi::Error {
    napi::Error::new(
        Status::InvalidArg,
        format!("ERR_KMS_BAD_ARGUMENT: {message}"),
    )
}

/// What taking over a previous instance's card found (`KmsDevice.takeover`).
#[napi(object)]
pub struct TakeoverInfo {
    /// Framebuffers the previous instance left in the file.
    pub framebuffers: u32,
    /// Of those, still on screen after the first configure (until our first frames).
    pub kept: u32,
    /// Its buffer handles, closed at the takeover.
    pub handles_closed: u32,
}

#[napi(object)]
pub struct ModeInfo {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub refresh: u32,
    pub preferred: bool,
}

#[napi(object)]
pub struct MonitorInfo {
    pub manufacturer: String,
    pub product_code: u32,
    pub name: Option<String>,
    pub serial: Option<String>,
}

#[napi(object)]
pub struct ConnectorInfo {
    pub id: u32,
    /// Kernel name, e.g. HDMI-A-1.
    pub name: String,
    pub connected: bool,
    pub writeback: bool,
    pub modes: Vec<ModeInfo>,
    /// Indexes of the CRTCs that can drive it.
    pub possible_crtcs: Vec<u32>,
    pub monitor: Option<MonitorInfo>,
}

#[napi(object)]
pub struct CrtcInfo {
    pub id: u32,
    pub index: u32,
}

#[napi(object)]
pub struct FormatModifier {
    pub format: String,
    /// 64-bit modifier as a hex string, e.g. "0x0" for linear.
    pub modifier: String,
}

#[napi(object)]
pub struct ZposInfo {
    pub min: f64,
    pub max: f64,
    pub value: f64,
}

#[napi(object)]
pub struct PlaneInfo {
    pub id: u32,
    /// "primary", "overlay" or "cursor".
    pub kind: String,
    pub possible_crtcs: Vec<u32>,
    pub formats: Vec<String>,
    pub modifiers: Vec<FormatModifier>,
    pub zpos: Option<ZposInfo>,
    /// Rotations the plane accepts, in degrees clockwise (always includes 0).
    pub rotations: Vec<u32>,
    pub reflect_x: bool,
    pub reflect_y: bool,
}

#[napi(object)]
pub struct OutputConfig {
    pub connector: String,
    /// "preferred" (default), "WxH" or "WxH@Hz".
    pub mode: Option<String>,
}

#[napi(object)]
pub struct OutputInfo {
    pub connector: String,
    pub crtc: u32,
    pub crtc_index: u32,
    pub mode: ModeInfo,
    /// Planes owned by this output, primary first.
    pub planes: Vec<u32>,
}

#[napi(object)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub width: u32,
    pub height: u32,
}

#[napi(object)]
pub struct Layer {
    pub buffer: u32,
    /// Part of the buffer to show (crop, e.g. one tile of a video wall). Default: all of it.
    pub src: Option<Rect>,
    /// Where on the output. Default: the whole mode.
    pub dst: Option<Rect>,
    /// 0, 90, 180 or 270 degrees clockwise, where the plane supports it.
    pub rotation: Option<u32>,
    /// YUV buffers only: "bt601", "bt709" or "bt2020". Default: bt709 above 576 lines, else bt601.
    pub color_encoding: Option<String>,
    /// YUV buffers only: "limited" (default) or "full".
    pub color_range: Option<String>,
}

#[napi(object)]
pub struct OutputScene {
    pub connector: String,
    /// Bottom first.
    pub layers: Vec<Layer>,
}

#[napi(object)]
pub struct DmaBufObject {
    pub fd: i32,
    pub size: f64,
}

#[napi(object)]
pub struct DmaBufPlane {
    pub object: u32,
    pub offset: u32,
    pub pitch: u32,
}

/// A dma-buf described as FFmpeg's AVDRMFrameDescriptor does (one layer).
#[napi(object)]
pub struct DmaBufDescriptor {
    pub width: u32,
    pub height: u32,
    /// Fourcc such as "XR24" or "NV12".
    pub format: String,
    /// 64-bit modifier as a decimal or 0x-hex string; absent means none given (DRM_FORMAT_MOD_INVALID).
    pub modifier: Option<String>,
    pub objects: Vec<DmaBufObject>,
    pub planes: Vec<DmaBufPlane>,
}

#[napi(object)]
pub struct ImportResult {
    pub buffer: u32,
    /// True when this dma-buf was already imported and its framebuffer was reused.
    pub cached: bool,
}

#[napi(object)]
pub struct FlipLoopOutput {
    pub connector: String,
    pub buffers: Vec<u32>,
}

#[napi(object)]
pub struct FlipLoopConfig {
    pub frames: u32,
    pub outputs: Vec<FlipLoopOutput>,
}

#[napi(object)]
pub struct OutputStats {
    pub connector: String,
    pub flips: f64,
    pub commits: f64,
    pub dropped: f64,
    pub last_sequence: u32,
    pub last_timestamp_us: f64,
    pub max_sequence_step: u32,
    pub late_one: f64,
    pub late_more: f64,
    /// Layers shown through a CPU-converted copy (no plane took the buffer as it is).
    pub converted: f64,
    /// Longest time from a flip event to the engine's commit of the next frame, in µs.
    pub max_commit_delay_us: f64,
    /// Next-frame commits the engine issued more than one refresh period after the flip.
    pub late_commits: f64,
    /// Display power: false while the CRTC is inactive (`setPower`), the monitor asleep.
    pub powered: bool,
}

/// CPU work done because planes could not take buffers directly: 0 on the zero-copy path.
/// A shown buffer copied out, rows packed, before it becomes a JS buffer or a JPEG.
struct PackedFrame {
    width: u32,
    height: u32,
    format: String,
    data: Vec<u8>,
}

#[napi(object)]
pub struct ScreenFrame {
    pub width: u32,
    pub height: u32,
    /// "XR24" (B, G, R, X bytes) or "NV12".
    pub format: String,
    pub data: napi::bindgen_prelude::Buffer,
}

#[napi(object)]
pub struct CopyCounters {
    pub conversions: f64,
    pub bytes_copied: f64,
    /// Conversions that also scaled, for a plane that cannot (virtio-gpu, vkms).
    pub scaled: f64,
}

/// Where one output shows decoded video.
#[napi(object)]
pub struct VideoOutput {
    pub connector: String,
    /// Part of the video to show (a video-wall tile). Default: all of it.
    pub src: Option<Rect>,
    /// Where on the output. Default: the whole mode.
    pub dst: Option<Rect>,
    pub rotation: Option<u32>,
    pub color_encoding: Option<String>,
    pub color_range: Option<String>,
}

#[napi(object)]
pub struct VideoCounters {
    /// Decoded frames uploaded to scanout buffers: once each, however many outputs show them.
    pub uploads: f64,
    pub upload_bytes: f64,
    /// Vblanks that showed a new frame, and vblanks that kept the previous one.
    pub frames_shown: f64,
    pub repeats: f64,
    /// Frames shown straight from the decoder's dma-bufs (VAAPI or export pool): no CPU copy.
    pub zero_copy: f64,
    /// Video commits that failed, and the newest reason.
    pub errors: f64,
    pub last_error: Option<String>,
}

#[napi(object)]
pub struct WritebackFrame {
    pub width: u32,
    pub height: u32,
    pub pitch: u32,
    pub data: napi::bindgen_prelude::Buffer,
}

/// Something the presentation thread saw: a flip on a CRTC, a finished flip loop, hotplug,
/// or a buffer that is being shown through converted copies.
#[napi(object)]
#[derive(Default)]
pub struct DisplayEvent {
    /// "flip", "loopDone", "hotplug", "fallback", "videoError" or "videoRecovered".
    /// A "videoError" is sent once per output and cause (`code`, an ERR_ code, and `message`);
    /// "videoRecovered" when that output shows new frames again.
    pub kind: String,
    pub connector: Option<String>,
    pub crtc: Option<u32>,
    pub sequence: Option<u32>,
    /// CLOCK_MONOTONIC time of the flip in microseconds.
    pub timestamp_us: Option<f64>,
    pub frames: Option<u32>,
    pub connectors: Option<Vec<ConnectorInfo>>,
    /// For "fallback": the buffer and its format, and why.
    pub buffer: Option<u32>,
    pub format: Option<String>,
    pub message: Option<String>,
    /// For "videoError" and "videoRecovered": the ERR_ code of the cause.
    pub code: Option<String>,
}

type EventCallback = ThreadsafeFunction<DisplayEvent, (), DisplayEvent, Status, false, true>;

struct Shared {
    engine: Arc<Mutex<Option<Engine>>>,
    presenter: Mutex<Option<Presenter>>,
    callback: Arc<Mutex<Option<EventCallback>>>,
    path: String,
    driver: String,
}

/// One KMS device, opened as DRM master with atomic mode setting.
#[napi]
pub struct KmsDevice {
    shared: Arc<Shared>,
}

fn connectors_info(res: &Resources) -> Vec<ConnectorInfo> {
    res.connectors
        .iter()
        .map(|c| ConnectorInfo {
            id: u32::from(c.handle),
            name: c.name.clone(),
            connected: c.connected,
            writeback: c.writeback,
            modes: c.modes.iter().map(mode_info).collect(),
            possible_crtcs: mask_indexes(c.possible_crtcs),
            monitor: c.edid.as_ref().map(|e| MonitorInfo {
                manufacturer: e.manufacturer.clone(),
                product_code: u32::from(e.product_code),
                name: e.monitor_name.clone(),
                serial: e.serial.clone(),
            }),
        })
        .collect()
}

fn mode_info(m: &drm::control::Mode) -> ModeInfo {
    let (w, h) = m.size();
    ModeInfo {
        name: crate::kms::resources::mode_name(m),
        width: u32::from(w),
        height: u32::from(h),
        refresh: m.vrefresh(),
        preferred: mode_is_preferred(m),
    }
}

fn mask_indexes(mask: u32) -> Vec<u32> {
    (0..32).filter(|i| mask & (1 << i) != 0).collect()
}

fn parse_modifier(text: Option<&str>) -> napi::Result<u64> {
    let Some(text) = text else {
        return Ok(MOD_INVALID);
    };
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse::<u64>(),
    };
    parsed.map_err(|_| bad_arg(format!("modifier {text:?} is not a 64-bit number")))
}

fn rect_tuple(r: &Rect) -> Result<KmsRect<u32>, KmsError> {
    if r.x < 0 || r.y < 0 {
        return Err(KmsError::BadBuffer(format!(
            "source rectangle ({}, {}) must not be negative",
            r.x, r.y
        )));
    }
    Ok(KmsRect {
        x: r.x as u32,
        y: r.y as u32,
        w: r.width,
        h: r.height,
    })
}

fn rect_dst(r: &Rect) -> KmsRect {
    KmsRect {
        x: r.x,
        y: r.y,
        w: r.width,
        h: r.height,
    }
}

/// The layer's colour settings, or None to let the engine pick from the buffer's height.
fn yuv_color(
    encoding: Option<&str>,
    range: Option<&str>,
    height: u32,
) -> Result<Option<YuvColor>, KmsError> {
    if encoding.is_none() && range.is_none() {
        return Ok(None);
    }
    let mut color = YuvColor::default_for(height);
    if let Some(encoding) = encoding {
        color.matrix = match encoding {
            "bt601" => YuvMatrix::Bt601,
            "bt709" => YuvMatrix::Bt709,
            "bt2020" => YuvMatrix::Bt2020,
            other => {
                return Err(KmsError::BadBuffer(format!(
                    "colorEncoding {other:?} is not bt601, bt709 or bt2020"
                )))
            }
        };
    }
    if let Some(range) = range {
        color.full_range = match range {
            "limited" => false,
            "full" => true,
            other => {
                return Err(KmsError::BadBuffer(format!(
                    "colorRange {other:?} is not limited or full"
                )))
            }
        };
    }
    Ok(Some(color))
}

/// The connector of output `output` for an event's text ("?" if it went meanwhile).
fn connector_of(engine: &Engine, output: usize) -> String {
    engine
        .outputs
        .get(output)
        .map_or_else(|| "?".to_owned(), |o| o.connector.clone())
}

impl KmsDevice {
    fn with_engine<T>(
        &self,
        f: impl FnOnce(&mut Engine) -> Result<T, KmsError>,
    ) -> napi::Result<T> {
        let mut guard = self.shared.engine.lock().unwrap_or_else(|p| p.into_inner());
        let engine = guard.as_mut().ok_or_else(|| js_error(KmsError::Closed))?;
        f(engine).map_err(js_error)
    }
}

#[napi]
impl KmsDevice {
    /// Opens `path` (e.g. /dev/dri/card0) or "auto" and starts the presentation thread. With
    /// `inheritedFd` (a descriptor systemd kept for us, see `fdStore`) the card is taken over
    /// instead: the descriptor is consumed whether or not that succeeds.
    #[napi(factory, catch_unwind)]
    pub fn open(path: String, inherited_fd: Option<i32>) -> napi::Result<Self> {
        // Checked before it is owned: a wrong number must not close someone else's file.
        let inherited = inherited_fd
            .map(|fd| crate::fd_guard::adopt(fd, crate::fd_guard::check_drm_device))
            .transpose()
            .map_err(|e| bad_arg(format!("inheritedFd: {e}")))?;
        let engine = Engine::open(&path, inherited).map_err(js_error)?;
        let card_fd = engine.card.raw_fd();
        let device_path = engine.card.path().to_string_lossy().into_owned();
        let driver = engine.card.driver().to_owned();
        let engine = Arc::new(Mutex::new(Some(engine)));
        let callback: Arc<Mutex<Option<EventCallback>>> = Arc::new(Mutex::new(None));
        let sink_callback = Arc::clone(&callback);
        // Uevents name the card by its node (DEVNAME=dri/card1), symlinks resolved.
        let card_name = std::fs::canonicalize(&device_path)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.as_encoded_bytes().to_vec()))
            .unwrap_or_default();
        let presenter = Presenter::start(
            Arc::clone(&engine),
            card_fd,
            card_name,
            Box::new(move |notice| {
                let guard = sink_callback.lock().unwrap_or_else(|p| p.into_inner());
                let Some(cb) = guard.as_ref() else { return };
                match notice {
                    Notice::Events(events, engine) => {
                        for event in events {
                            let js = match *event {
                                EngineEvent::Flip {
                                    output,
                                    crtc,
                                    sequence,
                                    timestamp_ns,
                                } => DisplayEvent {
                                    kind: "flip".into(),
                                    connector: engine
                                        .outputs
                                        .get(output)
                                        .map(|o| o.connector.clone()),
                                    crtc: Some(crtc),
                                    sequence: Some(sequence),
                                    timestamp_us: Some(timestamp_ns as f64 / 1000.0),
                                    ..Default::default()
                                },
                                EngineEvent::LoopDone { frames } => DisplayEvent {
                                    kind: "loopDone".into(),
                                    frames: Some(frames),
                                    ..Default::default()
                                },
                                EngineEvent::Fallback {
                                    output,
                                    buffer,
                                    format,
                                } => {
                                    let connector = engine
                                        .outputs
                                        .get(output)
                                        .map(|o| o.connector.clone());
                                    DisplayEvent {
                                        kind: "fallback".into(),
                                        message: Some(format!(
                                            "{}: no plane takes buffer {buffer} ({}) as it is; showing CPU-converted XR24 copies",
                                            connector.as_deref().unwrap_or("?"),
                                            fourcc_name(format)
                                        )),
                                        connector,
                                        buffer: Some(buffer.0),
                                        format: Some(fourcc_name(format)),
                                        ..Default::default()
                                    }
                                }
                                EngineEvent::FormatFallback {
                                    output,
                                    format,
                                    modifier,
                                } => {
                                    let connector = connector_of(engine, output);
                                    DisplayEvent {
                                        kind: "fallback".into(),
                                        message: Some(format!(
                                            "{connector}: no plane takes the decoder's {} dma-bufs with modifier {modifier:#x}; the decoder goes on in software and frames are copied",
                                            fourcc_name(format)
                                        )),
                                        connector: Some(connector),
                                        format: Some(fourcc_name(format)),
                                        ..Default::default()
                                    }
                                }
                                EngineEvent::VideoError { output, cause } => {
                                    let connector = connector_of(engine, output);
                                    let detail = engine.video_fault_detail(output, cause).unwrap_or("");
                                    DisplayEvent {
                                        kind: "videoError".into(),
                                        message: Some(format!(
                                            "{connector}: {}{}{detail}; it keeps its last picture, other outputs are not affected",
                                            cause.describe(),
                                            if detail.is_empty() { "" } else { ": " },
                                        )),
                                        connector: Some(connector),
                                        code: Some(cause.code().into()),
                                        ..Default::default()
                                    }
                                }
                                EngineEvent::VideoRecovered { output, cause } => {
                                    let connector = connector_of(engine, output);
                                    DisplayEvent {
                                        kind: "videoRecovered".into(),
                                        message: Some(format!(
                                            "{connector}: shows new frames again (after {})",
                                            cause.code()
                                        )),
                                        connector: Some(connector),
                                        code: Some(cause.code().into()),
                                        ..Default::default()
                                    }
                                }
                            };
                            cb.call(js, ThreadsafeFunctionCallMode::NonBlocking);
                        }
                    }
                    Notice::Hotplug(engine) => {
                        cb.call(
                            DisplayEvent {
                                kind: "hotplug".into(),
                                connectors: Some(connectors_info(&engine.res)),
                                ..Default::default()
                            },
                            ThreadsafeFunctionCallMode::NonBlocking,
                        );
                    }
                }
            }),
        )
        .map_err(|e| js_error(KmsError::Ioctl("start presentation thread", e)))?;
        Ok(KmsDevice {
            shared: Arc::new(Shared {
                engine,
                presenter: Mutex::new(Some(presenter)),
                callback,
                path: device_path,
                driver,
            }),
        })
    }

    #[napi(getter, catch_unwind)]
    pub fn path(&self) -> String {
        self.shared.path.clone()
    }

    #[napi(getter, catch_unwind)]
    pub fn driver(&self) -> String {
        self.shared.driver.clone()
    }

    /// Set when `open` took the card over from a previous instance.
    #[napi(getter, catch_unwind)]
    pub fn takeover(&self) -> napi::Result<Option<TakeoverInfo>> {
        self.with_engine(|e| {
            Ok(e.takeover.map(|t| TakeoverInfo {
                framebuffers: t.framebuffers,
                kept: t.kept,
                handles_closed: t.handles_closed,
            }))
        })
    }

    /// Hands a duplicate of the card's descriptor to systemd's file descriptor store
    /// (`FDSTORE=1`, `FDNAME=name`). If this process dies, systemd keeps the file open: the
    /// outputs keep their last frame and DRM master stays with the file, and the next instance
    /// gets it back as `LISTEN_FDS` to pass to `open`. False without `$NOTIFY_SOCKET`.
    #[napi(catch_unwind)]
    pub fn fd_store(&self, name: String) -> napi::Result<bool> {
        let fd = self.with_engine(|e| Ok(e.card.raw_fd()))?;
        // SAFETY: the engine (and so the card's file) lives as long as this object; the fd is
        // only read for the duration of the send.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        crate::systemd::sd_notify_fd(&format!("FDSTORE=1\nFDNAME={name}"), borrowed)
    }

    #[napi(catch_unwind)]
    pub fn connectors(&self) -> napi::Result<Vec<ConnectorInfo>> {
        self.with_engine(|e| Ok(connectors_info(&e.res)))
    }

    #[napi(catch_unwind)]
    pub fn crtcs(&self) -> napi::Result<Vec<CrtcInfo>> {
        self.with_engine(|e| {
            Ok(e.res
                .crtcs
                .iter()
                .map(|c| CrtcInfo {
                    id: u32::from(c.handle),
                    index: c.index as u32,
                })
                .collect())
        })
    }

    #[napi(catch_unwind)]
    pub fn planes(&self) -> napi::Result<Vec<PlaneInfo>> {
        self.with_engine(|e| {
            Ok(e.res
                .planes
                .iter()
                .map(|p| PlaneInfo {
                    id: u32::from(p.handle),
                    kind: p.kind.as_str().to_owned(),
                    possible_crtcs: mask_indexes(p.possible_crtcs),
                    formats: p.formats.iter().map(|&f| fourcc_name(f)).collect(),
                    modifiers: p
                        .modifiers
                        .iter()
                        .map(|&(f, m)| FormatModifier {
                            format: fourcc_name(f),
                            modifier: format!("{m:#x}"),
                        })
                        .collect(),
                    zpos: p.zpos.map(|(min, max, value)| ZposInfo {
                        min: min as f64,
                        max: max as f64,
                        value: value as f64,
                    }),
                    rotations: [0, 90, 180, 270]
                        .into_iter()
                        .filter(|&deg| {
                            deg == 0 || rotation_bit(deg).is_some_and(|bit| p.rotations & bit != 0)
                        })
                        .collect(),
                    reflect_x: p.rotations & 16 != 0,
                    reflect_y: p.rotations & 32 != 0,
                })
                .collect())
        })
    }

    /// Drives exactly these outputs, in one atomic commit tested first. Unchanged outputs
    /// keep their content; new ones start black.
    #[napi(catch_unwind)]
    pub fn configure(&self, outputs: Vec<OutputConfig>) -> napi::Result<Vec<OutputInfo>> {
        let requests: Vec<OutputRequest> = outputs
            .into_iter()
            .map(|o| OutputRequest {
                connector: o.connector,
                mode: o.mode.unwrap_or_else(|| "preferred".into()),
            })
            .collect();
        self.with_engine(|e| {
            e.configure(&requests)?;
            Ok(e.outputs
                .iter()
                .map(|o| OutputInfo {
                    connector: o.connector.clone(),
                    crtc: o.crtc_id,
                    crtc_index: o.crtc_index as u32,
                    mode: mode_info(&o.mode),
                    planes: o.planes.iter().map(|p| p.0).collect(),
                })
                .collect())
        })
    }

    /// A CPU-writable buffer ("XR24", "AR24" or "NV12"), zero-filled. Returns its id.
    #[napi(catch_unwind)]
    pub fn create_dumb_buffer(&self, width: u32, height: u32, format: String) -> napi::Result<u32> {
        let code = fourcc_parse(&format)
            .ok_or_else(|| bad_arg(format!("format {format:?} is not a fourcc")))?;
        self.with_engine(|e| {
            e.buffers
                .dumb_create(&e.card, width, height, code)
                .map(|id| id.0)
        })
    }

    /// A linear scanout buffer object from Mesa's GBM ("XR24" or "AR24"). Returns its id;
    /// fill it with `writeBuffer`.
    #[napi(catch_unwind)]
    pub fn create_gbm_buffer(&self, width: u32, height: u32, format: String) -> napi::Result<u32> {
        let code = fourcc_parse(&format)
            .ok_or_else(|| bad_arg(format!("format {format:?} is not a fourcc")))?;
        self.with_engine(|e| {
            e.buffers
                .gbm_create(&e.card, width, height, code)
                .map(|id| id.0)
        })
    }

    /// Copies tightly packed pixel rows (planes one after another) into a dumb buffer.
    #[napi(catch_unwind)]
    pub fn write_buffer(&self, buffer: u32, data: Uint8Array) -> napi::Result<()> {
        self.with_engine(|e| e.buffers.dumb_write(BufferId(buffer), &data))
    }

    /// Imports a dma-buf through PRIME. The same dma-buf imported again returns the cached
    /// framebuffer. The fds stay the caller's.
    #[napi(catch_unwind)]
    pub fn import_dma_buf(&self, descriptor: DmaBufDescriptor) -> napi::Result<ImportResult> {
        let format = fourcc_parse(&descriptor.format)
            .ok_or_else(|| bad_arg(format!("format {:?} is not a fourcc", descriptor.format)))?;
        let modifier = parse_modifier(descriptor.modifier.as_deref())?;
        for o in &descriptor.objects {
            if o.fd < 0 || unsafe { libc::fcntl(o.fd, libc::F_GETFD) } < 0 {
                return Err(bad_arg(format!(
                    "object fd {} is not an open file descriptor",
                    o.fd
                )));
            }
        }
        let objects: Vec<_> = descriptor
            .objects
            .iter()
            .map(|o| (unsafe { BorrowedFd::borrow_raw(o.fd) }, o.size as u64))
            .collect();
        let planes: Vec<_> = descriptor
            .planes
            .iter()
            .map(|p| (p.object as usize, p.offset, p.pitch))
            .collect();
        let desc = DmaBufDesc {
            width: descriptor.width,
            height: descriptor.height,
            format: Fourcc(format),
            modifier: Modifier(modifier),
            objects: &objects,
            planes: &planes,
        };
        self.with_engine(|e| {
            let (buffer, cached) = e.buffers.dmabuf_import(&e.card, &desc)?;
            Ok(ImportResult {
                buffer: buffer.0,
                cached,
            })
        })
    }

    /// Frees a buffer now, or once no CRTC shows it. Returns true if it was freed now.
    #[napi(catch_unwind)]
    pub fn release_buffer(&self, buffer: u32) -> napi::Result<bool> {
        self.with_engine(|e| e.buffer_release(BufferId(buffer)))
    }

    #[napi(catch_unwind)]
    pub fn buffer_count(&self) -> napi::Result<u32> {
        self.with_engine(|e| Ok(e.buffers.count() as u32))
    }

    /// Shows a scene on one or more outputs in one nonblocking atomic commit. Returns
    /// "committed", or "queued" when flips are in flight (the newest queued scene wins).
    #[napi(catch_unwind)]
    pub fn present(&self, scene: Vec<OutputScene>) -> napi::Result<String> {
        self.with_engine(|e| {
            let mut resolved = Vec::with_capacity(scene.len());
            for s in &scene {
                let output = e.output_index(&s.connector)?;
                let mut layers = Vec::with_capacity(s.layers.len());
                for l in &s.layers {
                    layers.push(SceneLayer {
                        buffer: BufferId(l.buffer),
                        src: l.src.as_ref().map(rect_tuple).transpose()?,
                        dst: l.dst.as_ref().map(rect_dst),
                        rotation: l.rotation.unwrap_or(0),
                        color: yuv_color(
                            l.color_encoding.as_deref(),
                            l.color_range.as_deref(),
                            e.buffers.get(BufferId(l.buffer)).map_or(0, |b| b.height),
                        )?,
                    });
                }
                resolved.push(SceneOutput { output, layers });
            }
            Ok(match e.present(resolved)? {
                PresentResult::Committed => "committed".to_owned(),
                PresentResult::Queued => "queued".to_owned(),
            })
        })
    }

    /// Flips through each output's buffers, one step per vblank, paced by the native thread.
    /// A "loopDone" event follows the last frame.
    #[napi(catch_unwind)]
    pub fn start_flip_loop(&self, config: FlipLoopConfig) -> napi::Result<()> {
        self.with_engine(|e| {
            let mut outputs = Vec::with_capacity(config.outputs.len());
            for o in config.outputs {
                let buffers = o.buffers.into_iter().map(BufferId).collect();
                outputs.push((e.output_index(&o.connector)?, buffers));
            }
            e.flip_loop_start(FlipLoop {
                outputs,
                frame: 0,
                frames: config.frames,
            })
        })
    }

    /// One frame of what the output's CRTC really composes, read back through a writeback
    /// connector (XR24, `pitch` bytes a row). Needs the outputs idle.
    #[napi(catch_unwind)]
    pub fn capture_writeback(&self, connector: String) -> napi::Result<WritebackFrame> {
        // The lock is held to commit and to detach, not while the kernel writes the frame nor
        // while it is copied (see kms/writeback.rs): flips go on meanwhile.
        let job = self.with_engine(|e| e.writeback_start(&connector))?;
        let waited = job.wait();
        let pinned = self.with_engine(|e| e.writeback_finish(job))?;
        let frame = waited.map(|()| WritebackFrame {
            width: pinned.width,
            height: pinned.height,
            pitch: pinned.width * 4,
            data: pinned.packed().into(),
        });
        pinned.unpin(&self.shared.engine);
        frame.map_err(js_error)
    }

    /// Plays the decoder that `consumer` holds in `manager` on these outputs, frame-locked:
    /// the presentation thread uploads each new frame once and commits all of them together
    /// at every vblank.
    #[napi(catch_unwind)]
    pub fn play_video(
        &self,
        manager: &crate::playback::DecodeManager,
        consumer: String,
        outputs: Vec<VideoOutput>,
    ) -> napi::Result<()> {
        // Where decode meets kms: the engine reads the decoder's frames through `FrameFeed`.
        let source: Arc<dyn FrameFeed> = Arc::new(manager.source_of(&consumer)?);
        let consumer: Arc<str> = Arc::from(consumer);
        self.with_engine(|e| {
            let mut placements = Vec::with_capacity(outputs.len());
            for o in &outputs {
                let output = e.output_index(&o.connector)?;
                placements.push(VideoPlacement {
                    output,
                    connector: o.connector.clone(),
                    src: o.src.as_ref().map(rect_tuple).transpose()?,
                    dst: o.dst.as_ref().map(rect_dst),
                    rotation: o.rotation.unwrap_or(0),
                    // The frame height is not known before the first frame; an untagged
                    // setting fills in as for HD video.
                    color: yuv_color(o.color_encoding.as_deref(), o.color_range.as_deref(), 1080)?,
                });
            }
            e.video_play(consumer, source, placements)
        })
    }

    /// Proof of play: each output's records of which consumer's frames were on show from
    /// which flip to which, with the kernel's vblank timestamps (closed records handed over
    /// once, the open one each time). See play_record.rs.
    #[napi(catch_unwind)]
    pub fn play_records(&self) -> napi::Result<Vec<PlayRecord>> {
        self.with_engine(|e| {
            let mut records = Vec::new();
            for o in &mut e.outputs {
                o.record.play_drain(&o.connector, &mut records);
            }
            Ok(records)
        })
    }

    /// Stops video on every output; each keeps its last frame.
    #[napi(catch_unwind)]
    pub fn stop_video(&self) -> napi::Result<()> {
        self.with_engine(|e| {
            e.video_stop();
            Ok(())
        })
    }

    #[napi(catch_unwind)]
    pub fn video_counters(&self) -> napi::Result<VideoCounters> {
        self.with_engine(|e| {
            let c = e.video_counters;
            Ok(VideoCounters {
                uploads: c.uploads as f64,
                upload_bytes: c.upload_bytes as f64,
                frames_shown: c.frames_shown as f64,
                repeats: c.repeats as f64,
                zero_copy: c.zero_copy as f64,
                errors: c.errors as f64,
                last_error: e.video_error.clone(),
            })
        })
    }

    #[napi(catch_unwind)]
    pub fn stats(&self) -> napi::Result<Vec<OutputStats>> {
        self.with_engine(|e| {
            Ok(e.outputs
                .iter()
                .map(|o| OutputStats {
                    connector: o.connector.clone(),
                    flips: o.stats.flips as f64,
                    commits: o.stats.commits as f64,
                    dropped: o.stats.dropped as f64,
                    last_sequence: o.stats.last_sequence,
                    last_timestamp_us: o.stats.last_timestamp_ns as f64 / 1000.0,
                    max_sequence_step: o.stats.max_sequence_step,
                    late_one: o.stats.late_one as f64,
                    late_more: o.stats.late_more as f64,
                    converted: o.stats.converted as f64,
                    max_commit_delay_us: o.stats.max_commit_delay_ns as f64 / 1000.0,
                    late_commits: o.stats.late_commits as f64,
                    powered: !o.inactive,
                })
                .collect())
        })
    }

    /// Display power (DPMS): `on` false makes the output's CRTC inactive, so the monitor
    /// sleeps; true wakes it on its last frame. Other outputs are not touched. Throws
    /// ERR_KMS_BUSY while a flip is in flight on it (ask again a frame later).
    #[napi(catch_unwind)]
    pub fn set_power(&self, connector: String, on: bool) -> napi::Result<()> {
        self.with_engine(|e| {
            let index = e.output_index(&connector)?;
            e.output_power(index, on)
        })
    }

    /// A JPEG of what an output's primary plane shows now (previews, the screenshot command),
    /// or null when it shows nothing or a GPU buffer the CPU cannot read. The packed copy is
    /// made here; the encode runs on a worker thread.
    #[napi(ts_return_type = "Promise<JpegPicture | null>", catch_unwind)]
    pub fn snapshot_jpeg(
        &self,
        connector: String,
        options: crate::jpeg::SnapshotJpegOptions,
    ) -> napi::Result<
        napi::bindgen_prelude::AsyncTask<crate::panic_guard::Guarded<crate::jpeg::JpegTask>>,
    > {
        let shown = self.shown_packed(&connector)?.and_then(|frame| {
            matches!(frame.format.as_str(), "NV12" | "XR24").then(|| crate::jpeg::ShownFrame {
                width: frame.width,
                height: frame.height,
                format: frame.format,
                data: crate::jpeg::JpegData::Owned(frame.data),
            })
        });
        crate::jpeg::snapshot_jpeg_task(shown, &options)
    }

    /// What an output's primary plane shows now, rows packed (for previews and screenshots):
    /// XR24 or NV12. Null when the output shows nothing, or a GPU buffer the CPU cannot read.
    #[napi(catch_unwind)]
    pub fn snapshot(&self, connector: String) -> napi::Result<Option<ScreenFrame>> {
        Ok(self.shown_packed(&connector)?.map(|f| ScreenFrame {
            width: f.width,
            height: f.height,
            format: f.format,
            data: f.data.into(),
        }))
    }

    fn shown_packed(&self, connector: &str) -> napi::Result<Option<PackedFrame>> {
        // Under the lock only the pin; the copy is made without it (see screen_copy.rs).
        let pinned = self.with_engine(|e| {
            let index = e.output_index(connector)?;
            let buffer = e.outputs[index].shown.first().map_or(0, |b| b.0);
            Ok((buffer != 0)
                .then(|| crate::screen_copy::pin(e, buffer).ok())
                .flatten())
        })?;
        Ok(pinned.map(|pinned| {
            let frame = PackedFrame {
                width: pinned.width,
                height: pinned.height,
                format: fourcc_name(pinned.format),
                data: pinned.packed(),
            };
            pinned.unpin(&self.shared.engine);
            frame
        }))
    }

    #[napi(catch_unwind)]
    pub fn copy_counters(&self) -> napi::Result<CopyCounters> {
        self.with_engine(|e| {
            Ok(CopyCounters {
                conversions: e.copies.conversions as f64,
                bytes_copied: e.copies.bytes as f64,
                scaled: e.copies.scaled as f64,
            })
        })
    }

    /// Heap allocations made so far (process-wide) while handling page flips and committing
    /// the next frame on presentation threads. Steady-state flipping adds none.
    #[napi(catch_unwind)]
    pub fn frame_path_allocations(&self) -> f64 {
        crate::alloc_count::frame_path_allocations() as f64
    }

    /// Delivers flip, loopDone, hotplug and fallback events. Does not keep Node's event loop alive.
    #[napi(catch_unwind)]
    pub fn on_event(&self, callback: EventCallback) {
        *self
            .shared
            .callback
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(callback);
    }

    /// Stops the presentation thread, frees every buffer, drops master and closes the card.
    #[napi(catch_unwind)]
    pub fn close(&self) {
        if let Some(mut presenter) = self
            .shared
            .presenter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            presenter.stop();
        }
        self.shared
            .callback
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut engine) = self
            .shared
            .engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            engine.close();
        }
    }
}

/// A dma-buf (from /dev/udmabuf) holding `data`, for CPU-made frames. Returns the fd;
/// close it with `closeFd` once imported.
#[napi(catch_unwind)]
pub fn create_udmabuf(data: Uint8Array) -> napi::Result<i32> {
    udmabuf_create(&data)
        .map(crate::fd_guard::hand_out)
        .map_err(|e| js_error(e.into()))
}

/// Closes a descriptor this addon handed out (`createUdmabuf`); any other is refused.
#[napi(catch_unwind)]
pub fn close_fd(fd: i32) -> napi::Result<()> {
    crate::fd_guard::close_handed_out(fd).map_err(|e| bad_arg(format!("closeFd: {e}")))
}
