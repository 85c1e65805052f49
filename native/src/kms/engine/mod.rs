//! The display engine for one card: configure outputs (configure.rs), build and commit scenes
//! (scene.rs) onto planes (planes.rs), through converted copies where no plane takes a buffer
//! (copy.rs), and react to flips (flip.rs). It lives behind a mutex shared by the JavaScript
//! thread (which decides what to show) and the presentation thread (which decides when it
//! flips). Video (video.rs) is a client of it that commits one scene per group and vblank.

mod clients;
mod configure;
mod copy;
mod flip;
mod planes;
mod power;
mod scene;

use std::collections::HashMap;
use std::os::fd::AsFd;

use drm::control::Device as ControlDevice;
use drm::Device;

use super::buffer::BufferStore;
use super::commit::AtomicRequest;
use super::device::{device_open, inherited_tidy, Card};
use super::error::{KmsError, KmsResult};
use super::ids::{BufferId, FbId};
use super::output::Output;
use super::props::{prop_name, props_all};
use super::resources::{resources_read, Resources};
use super::video::Video;
use super::video_health::VideoCause;

use copy::Conversion;
pub use copy::CopyCounters;
pub use flip::FlipLoop;
pub use scene::{PresentResult, SceneLayer, SceneOutput};

pub const ROTATE_0: u64 = 1;

const FAULT_MODIFIER_ENV: &str = "MULTIHEAD_FAULT_DMABUF_MODIFIER";

#[derive(Clone, Copy, Debug)]
pub enum EngineEvent {
    Flip {
        output: usize,
        crtc: u32,
        sequence: u32,
        timestamp_ns: u64,
    },
    LoopDone {
        frames: u32,
    },
    /// A buffer no plane takes as it is is being shown through converted copies; once per buffer.
    Fallback {
        output: usize,
        buffer: BufferId,
        format: u32,
    },
    /// No plane of this output takes a video source's dma-bufs (fourcc and modifier): the
    /// decoder was asked for CPU frames. Once per binding and format.
    FormatFallback {
        output: usize,
        format: u32,
        modifier: u64,
    },
    /// This output's video group stopped showing new frames; once per output and cause.
    VideoError {
        output: usize,
        cause: VideoCause,
    },
    /// This output shows new frames again after `cause`.
    VideoRecovered {
        output: usize,
        cause: VideoCause,
    },
}

pub struct Engine {
    pub card: Card,
    pub res: Resources,
    pub outputs: Vec<Output>,
    pub buffers: BufferStore,
    pub(super) request: AtomicRequest,
    queued: Option<Vec<SceneOutput>>,
    pub(super) flip_loop: Option<FlipLoop>,
    /// Filled while handling kernel events; drained by the presentation thread.
    pub events: Vec<EngineEvent>,
    /// One black buffer per mode size, shown by freshly configured outputs.
    blanks: HashMap<(u32, u32), BufferId>,
    conversions: HashMap<copy::ConversionKey, Conversion>,
    /// Reused every commit so the steady-state frame path does not allocate.
    scratch_triples: Vec<(u32, u32, u64)>,
    /// The flip loop's scene, built once; each step only changes buffer ids in it.
    loop_scene: Vec<SceneOutput>,
    /// The video client (video.rs): one group per source, each with its own scene. Taken out
    /// for the client's turn (clients.rs), so it works on the engine through its own API.
    pub(super) video: Video,
    /// Test hook (MULTIHEAD_FAULT_DMABUF_MODIFIER): the modifier the decoder's dma-bufs are
    /// taken to have when the planes are asked, to prove the fallback on a card whose planes
    /// list only linear.
    pub(super) fault_modifier: Option<u64>,
    pub video_counters: super::video::VideoCounters,
    pub video_error: Option<String>,
    /// (source, copy) converted for the commit being built: each source once per frame.
    converted_now: Vec<(copy::ConversionKey, BufferId)>,
    /// Scene shapes (scene.rs `scene_shape`) the planes took only through copies, and how:
    /// later frames of the same shape skip the refused tries. A few, overwritten in turn.
    copy_modes: [(u64, scene::CopyMode); 8],
    copy_modes_next: usize,
    pub copies: CopyCounters,
    /// Set when the card was taken over from a previous instance.
    pub takeover: Option<Takeover>,
}

/// What a takeover found in the card's file: the previous instance's framebuffers (`kept` of
/// them stayed on screen through the first configure) and how many buffer handles it left.
#[derive(Clone, Copy, Debug)]
pub struct Takeover {
    pub framebuffers: u32,
    pub handles_closed: u32,
    pub kept: u32,
    /// The first configure is done: what no output kept is gone.
    pub settled: bool,
}

impl Engine {
    /// Opens the card, or takes over `inherited` (see `device_open`): then the previous
    /// instance's framebuffers stay on screen until this one's first frames replace them.
    pub fn open(wanted: &str, inherited: Option<std::os::fd::OwnedFd>) -> KmsResult<Engine> {
        let card = device_open(wanted, inherited)?;
        let res = resources_read(&card)?;
        let mut buffers = BufferStore::default();
        buffers.modifiers_supported = card
            .get_driver_capability(drm::DriverCapability::AddFB2Modifiers)
            .is_ok_and(|v| v != 0);
        let mut takeover = None;
        if card.adopted() {
            let (framebuffers, handles_closed) = inherited_tidy(&card);
            for &fb in &framebuffers {
                let (w, h) = card.get_framebuffer(fb).map(|i| i.size()).unwrap_or((0, 0));
                buffers.inherited_add(FbId(u32::from(fb)), w, h);
            }
            takeover = Some(Takeover {
                framebuffers: framebuffers.len() as u32,
                handles_closed,
                kept: 0,
                settled: false,
            });
        }
        Ok(Engine {
            takeover,
            card,
            res,
            outputs: Vec::new(),
            buffers,
            request: AtomicRequest::default(),
            queued: None,
            flip_loop: None,
            events: Vec::with_capacity(64),
            blanks: HashMap::new(),
            conversions: HashMap::new(),
            scratch_triples: Vec::with_capacity(256),
            loop_scene: Vec::new(),
            video: Video::default(),
            fault_modifier: std::env::var(FAULT_MODIFIER_ENV)
                .ok()
                .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok()),
            video_counters: Default::default(),
            video_error: None,
            converted_now: Vec::with_capacity(8),
            copy_modes: [(0, scene::CopyMode::Direct); 8],
            copy_modes_next: 0,
            copies: CopyCounters::default(),
        })
    }

    pub fn output_index(&self, connector: &str) -> KmsResult<usize> {
        self.outputs
            .iter()
            .position(|o| o.connector == connector)
            .ok_or_else(|| KmsError::OutputNotConfigured(connector.to_owned()))
    }

    pub fn refresh(&mut self) -> KmsResult<()> {
        self.res = resources_read(&self.card)?;
        Ok(())
    }

    pub(super) fn prop_label(&self, id: u32) -> String {
        let objects = self
            .res
            .connectors
            .iter()
            .map(|c| &c.props)
            .chain(self.res.crtcs.iter().map(|c| &c.props))
            .chain(self.res.planes.iter().map(|p| &p.props));
        for props in objects {
            for prop in props_all() {
                if props.id(prop) == Some(id) {
                    return prop_name(prop).to_owned();
                }
            }
        }
        id.to_string()
    }

    pub fn close(&mut self) {
        self.video.clear();
        self.conversions.clear();
        self.flip_loop = None;
        self.queued = None;
        self.buffers.destroy_all(&self.card);
        for output in self.outputs.drain(..) {
            let _ = drm_ffi::mode::destroy_property_blob(self.card.as_fd(), output.mode_blob);
        }
    }
}

/// CLOCK_MONOTONIC, the clock DRM stamps page-flip events with.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Our API counts degrees clockwise, as people do; DRM's DRM_MODE_ROTATE_* bits count them
/// counter-clockwise, so 90 here is DRM's rotate-270.
pub fn rotation_bit(degrees: u32) -> Option<u64> {
    match degrees {
        0 => Some(1),
        90 => Some(1 << 3),
        180 => Some(1 << 2),
        270 => Some(1 << 1),
        _ => None,
    }
}
