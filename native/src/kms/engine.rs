//! The display engine for one card: configure outputs, present scenes, and react to flip
//! and hotplug events. It lives behind a mutex shared by the JavaScript thread (which
//! decides what to show) and the presentation thread (which decides when it flips).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::os::fd::AsFd;

use drm::control::Device as ControlDevice;
use drm::Device;

use super::buffer::BufferStore;
use super::commit::{
    commit_error, AtomicRequest, FLAG_ALLOW_MODESET, FLAG_NONBLOCK, FLAG_PAGE_FLIP_EVENT,
    FLAG_TEST_ONLY,
};
use super::device::{device_open, inherited_tidy, Card};
use super::error::{KmsError, KmsResult};
use super::formats::{fourcc_name, is_yuv, YuvColor, NV12, XR24};
use super::output::{crtcs_assign, mode_pick, planes_claim, Output, OutputRequest};
use super::props::{prop_name, props_all, Prop};
use super::resources::{resources_read, Resources};
use super::video_health::VideoCause;

pub const ROTATE_0: u64 = 1;

const FAULT_MODIFIER_ENV: &str = "MULTIHEAD_FAULT_DMABUF_MODIFIER";

/// One layer of an output's scene: which buffer, which part of it, where on the screen.
#[derive(Clone, Debug)]
pub struct SceneLayer {
    pub buffer: u32,
    /// Source rectangle in buffer pixels (crop); default: the whole buffer.
    pub src: Option<(u32, u32, u32, u32)>,
    /// Destination rectangle in CRTC pixels; default: the whole mode.
    pub dst: Option<(i32, i32, u32, u32)>,
    /// Degrees clockwise: 0, 90, 180, 270.
    pub rotation: u32,
    /// For YUV buffers: matrix and range; default from the buffer's height (see YuvColor).
    pub color: Option<YuvColor>,
}

#[derive(Clone, Debug)]
pub struct SceneOutput {
    pub output: usize,
    pub layers: Vec<SceneLayer>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresentResult {
    Committed,
    /// Waiting for the flips in flight; the newest queued scene wins.
    Queued,
}

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
        buffer: u32,
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

/// Converted XR24 copies of one source buffer. Several, because the copy on screen must not
/// be overwritten while the next frame is converted.
struct Conversion {
    copies: Vec<u32>,
    reported: bool,
    /// The source generation the newest copy holds: a repeated frame is not converted again.
    latest: Option<(u64, u32)>,
}

/// Most copies kept per source: one on screen, one in flight, one being written.
const COPIES_MAX: usize = 3;

/// CPU work done because a plane could not take a buffer directly.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyCounters {
    pub conversions: u64,
    pub bytes: u64,
}

/// A requested connector, copied out of the resource table so it can change underneath.
struct Picked {
    name: String,
    handle: u32,
    crtc_prop: u32,
    possible_crtcs: u32,
}

/// A native-paced sequence of frames: each output cycles through its buffers, one step
/// per completed flip on every CRTC, with no JavaScript in between.
pub struct FlipLoop {
    pub outputs: Vec<(usize, Vec<u32>)>,
    pub frame: u32,
    pub frames: u32,
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
    blanks: HashMap<(u32, u32), u32>,
    conversions: HashMap<u32, Conversion>,
    /// Reused every commit so the steady-state frame path does not allocate.
    scratch_triples: Vec<(u32, u32, u64)>,
    /// The flip loop's scene, built once; each step only changes buffer ids in it.
    loop_scene: Vec<SceneOutput>,
    /// Decoded video on outputs (video.rs): one group per source, each with its own scene.
    pub(super) video: Vec<super::video::VideoBinding>,
    /// Test hook (MULTIHEAD_FAULT_DMABUF_MODIFIER): the modifier the decoder's dma-bufs are
    /// taken to have when the planes are asked, to prove the fallback on a card whose planes
    /// list only linear.
    pub(super) fault_modifier: Option<u64>,
    pub video_counters: super::video::VideoCounters,
    pub video_error: Option<String>,
    /// Claims on dma-buf frames of stopped video that outputs may still show: dropped once no
    /// CRTC scans them out, so the decoder cannot overwrite a surface on screen.
    pub(super) video_retired: Vec<(u32, std::sync::Arc<crate::decode::prime::PrimeFrame>)>,
    /// (source, copy) converted for the commit being built: each source once per frame.
    converted_now: Vec<(u32, u32)>,
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
                buffers.inherited_add(u32::from(fb), w, h);
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
            video: Vec::new(),
            fault_modifier: std::env::var(FAULT_MODIFIER_ENV)
                .ok()
                .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok()),
            video_counters: Default::default(),
            video_error: None,
            video_retired: Vec::new(),
            converted_now: Vec::with_capacity(8),
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

    /// Sets the outputs to exactly `requests`, in one atomic commit tested first. Outputs
    /// whose connector, CRTC and mode stay the same are not touched and keep their content.
    pub fn configure(&mut self, requests: &[OutputRequest]) -> KmsResult<()> {
        let mut picked = Vec::with_capacity(requests.len());
        for r in requests {
            let connector = self.res.connector(&r.connector)?;
            if !connector.connected {
                return Err(KmsError::ConnectorDisconnected(r.connector.clone()));
            }
            let mode = mode_pick(connector, &r.mode)?;
            picked.push((
                Picked {
                    name: connector.name.clone(),
                    handle: u32::from(connector.handle),
                    crtc_prop: connector.props.require(Prop::CrtcId, &connector.name)?,
                    possible_crtcs: connector.possible_crtcs,
                },
                mode,
            ));
        }
        let masks: Vec<u32> = picked.iter().map(|(c, _)| c.possible_crtcs).collect();
        let current: Vec<Option<usize>> = picked
            .iter()
            .map(|(c, _)| {
                self.outputs
                    .iter()
                    .find(|o| o.connector == c.name)
                    .map(|o| o.crtc_index)
            })
            .collect();
        let crtcs = crtcs_assign(&masks, &current, self.res.crtcs.len()).ok_or_else(|| {
            // Name the first connector that cannot be added.
            let failing = (1..=masks.len())
                .find(|&n| crtcs_assign(&masks[..n], &current[..n], self.res.crtcs.len()).is_none())
                .unwrap_or(1);
            KmsError::NoCrtc(picked[failing - 1].0.name.clone())
        })?;

        // Keep unchanged outputs as they are; everything else is (re)built.
        let mut old: Vec<Option<Output>> = std::mem::take(&mut self.outputs)
            .into_iter()
            .map(Some)
            .collect();
        let mut kept: Vec<Option<Output>> = Vec::with_capacity(picked.len());
        for ((connector, mode), &crtc_index) in picked.iter().zip(&crtcs) {
            let same = old.iter().position(|o| {
                o.as_ref().is_some_and(|o| {
                    o.connector == connector.name && o.crtc_index == crtc_index && o.mode == *mode
                })
            });
            kept.push(same.and_then(|i| old[i].take()));
        }
        let mut taken: Vec<u32> = kept
            .iter()
            .flatten()
            .flat_map(|o| o.planes.iter().copied())
            .collect();

        let mut triples: Vec<(u32, u32, u64)> = Vec::new();
        let mut new_outputs: Vec<Output> = Vec::with_capacity(picked.len());
        let mut fresh: Vec<bool> = Vec::with_capacity(picked.len());
        let mut fresh_blobs: Vec<u32> = Vec::new();
        let mut names = Vec::new();
        let result = (|| -> KmsResult<()> {
            for (i, ((connector, mode), &crtc_index)) in picked.iter().zip(&crtcs).enumerate() {
                if let Some(output) = kept[i].take() {
                    new_outputs.push(output);
                    fresh.push(false);
                    continue;
                }
                names.push(connector.name.clone());
                let crtc = &self.res.crtcs[crtc_index];
                let crtc_id = u32::from(crtc.handle);
                let mode_prop = crtc.props.require(Prop::ModeId, "crtc")?;
                let active_prop = crtc.props.require(Prop::Active, "crtc")?;
                let planes = planes_claim(&self.res, crtc_index, &mut taken);
                if planes.is_empty() {
                    return Err(KmsError::NoPlane {
                        connector: connector.name.clone(),
                        format: "any (no free primary plane)".into(),
                    });
                }
                let blob = match self.card.create_property_blob(mode) {
                    Ok(drm::control::property::Value::Blob(id)) => id as u32,
                    Ok(_) => {
                        return Err(KmsError::Ioctl(
                            "create mode blob",
                            std::io::Error::other("not a blob"),
                        ))
                    }
                    Err(e) => return Err(KmsError::Ioctl("create mode blob", e)),
                };
                fresh_blobs.push(blob);
                let (w, h) = mode.size();
                let (w, h) = (u32::from(w), u32::from(h));
                let blank = self.blank_buffer(w, h)?;
                // Taken over: the previous instance's last frame stays up until ours replaces
                // it, rather than a blank between the two.
                let first = self
                    .res
                    .planes
                    .iter()
                    .find(|p| u32::from(p.handle) == planes[0])
                    .and_then(|p| self.card.get_plane(p.handle).ok())
                    .and_then(|info| info.framebuffer())
                    .map(u32::from)
                    .filter(|&fb| self.buffers.inherited_fits(fb, w, h))
                    .unwrap_or(blank);
                let conn_id = connector.handle;
                triples.push((conn_id, connector.crtc_prop, u64::from(crtc_id)));
                triples.push((crtc_id, mode_prop, u64::from(blob)));
                triples.push((crtc_id, active_prop, 1));
                for (p, &plane) in planes.iter().enumerate() {
                    let fb = if p == 0 { first } else { 0 };
                    self.plane_triples(
                        &mut triples,
                        plane,
                        crtc_id,
                        fb,
                        (0, 0, w, h),
                        (0, 0, w, h),
                        ROTATE_0,
                    )?;
                }
                let n = planes.len();
                new_outputs.push(Output {
                    connector: connector.name.clone(),
                    connector_id: conn_id,
                    crtc_id,
                    crtc_index,
                    mode: *mode,
                    mode_blob: blob,
                    shown: vec![0; n],
                    incoming: {
                        let mut v = vec![0; n];
                        v[0] = first;
                        v
                    },
                    staged: vec![0; n],
                    planes,
                    pending: false,
                    stats: Default::default(),
                    tested_layout: 0,
                    last_commit_ns: 0,
                });
                fresh.push(true);
            }
            // Switch off whatever this commit does not use: old outputs, fbcon's planes.
            let used_connectors: Vec<u32> = new_outputs.iter().map(|o| o.connector_id).collect();
            let used_crtcs: Vec<u32> = new_outputs.iter().map(|o| o.crtc_id).collect();
            let used_planes: Vec<u32> = new_outputs
                .iter()
                .flat_map(|o| o.planes.iter().copied())
                .collect();
            for c in self.res.connectors.iter().filter(|c| !c.writeback) {
                let id = u32::from(c.handle);
                let attached = self
                    .card
                    .get_connector(c.handle, false)
                    .ok()
                    .and_then(|i| i.current_encoder())
                    .is_some();
                if !used_connectors.contains(&id)
                    && (attached || old.iter().flatten().any(|o| o.connector_id == id))
                {
                    triples.push((id, c.props.require(Prop::CrtcId, &c.name)?, 0));
                }
            }
            for c in &self.res.crtcs {
                let id = u32::from(c.handle);
                let active = self
                    .card
                    .get_crtc(c.handle)
                    .ok()
                    .and_then(|i| i.mode())
                    .is_some();
                if !used_crtcs.contains(&id)
                    && (active || old.iter().flatten().any(|o| o.crtc_id == id))
                {
                    triples.push((id, c.props.require(Prop::Active, "crtc")?, 0));
                    triples.push((id, c.props.require(Prop::ModeId, "crtc")?, 0));
                }
            }
            for p in &self.res.planes {
                let id = u32::from(p.handle);
                let on = self
                    .card
                    .get_plane(p.handle)
                    .ok()
                    .and_then(|i| i.crtc())
                    .is_some();
                if !used_planes.contains(&id) && on {
                    triples.push((id, p.props.require(Prop::FbId, "plane")?, 0));
                    triples.push((id, p.props.require(Prop::CrtcId, "plane")?, 0));
                }
            }
            if triples.is_empty() {
                return Ok(());
            }
            triples.sort_by_key(|t| t.0);
            self.request.clear();
            for &(obj, prop, value) in &triples {
                self.request.set(obj, prop, value);
            }
            if names.is_empty() {
                names = old.iter().flatten().map(|o| o.connector.clone()).collect();
            }
            for flags in [FLAG_TEST_ONLY | FLAG_ALLOW_MODESET, FLAG_ALLOW_MODESET] {
                if let Err(e) = self.request.commit(&self.card, flags) {
                    let described = self.request.describe(|id| self.prop_label(id));
                    return Err(commit_error(names.clone(), described, e));
                }
            }
            Ok(())
        })();

        if let Err(e) = result {
            for blob in fresh_blobs {
                let _ = drm_ffi::mode::destroy_property_blob(self.card.as_fd(), blob);
            }
            // Nothing reached the screen: the outputs that were running stay as they were.
            let untouched = new_outputs
                .into_iter()
                .zip(&fresh)
                .filter(|(_, &f)| !f)
                .map(|(o, _)| o);
            self.outputs = old.into_iter().flatten().chain(untouched).collect();
            return Err(e);
        }

        // The commit was blocking: the fresh outputs show their blank buffer now.
        for (output, _) in new_outputs.iter_mut().zip(&fresh).filter(|(_, &f)| f) {
            let blank = output.incoming[0];
            self.buffers.screen_ref(blank);
            output.shown = std::mem::replace(&mut output.incoming, vec![0; output.planes.len()]);
        }
        for output in old.into_iter().flatten() {
            for &b in output.shown.iter().chain(&output.incoming) {
                if b != 0 {
                    self.buffers.screen_unref(&self.card, b);
                }
            }
            let _ = drm_ffi::mode::destroy_property_blob(self.card.as_fd(), output.mode_blob);
        }
        self.outputs = new_outputs;
        self.queued = None;
        self.flip_loop = None;
        self.video_remap();
        if let Some(takeover) = self.takeover.as_mut().filter(|t| !t.settled) {
            let released = self.buffers.inherited_release_unshown(&self.card) as u32;
            takeover.kept = takeover.framebuffers.saturating_sub(released);
            takeover.settled = true;
        }
        Ok(())
    }

    fn blank_buffer(&mut self, w: u32, h: u32) -> KmsResult<u32> {
        if let Some(&id) = self.blanks.get(&(w, h)) {
            if self.buffers.get(id).is_ok() {
                return Ok(id);
            }
        }
        // Dumb buffers come zeroed: black in XR24.
        let id = self.buffers.dumb_create(&self.card, w, h, XR24)?;
        self.blanks.insert((w, h), id);
        Ok(id)
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

    #[allow(clippy::too_many_arguments)]
    fn plane_triples(
        &self,
        out: &mut Vec<(u32, u32, u64)>,
        plane: u32,
        crtc: u32,
        fb: u32,
        src: (u32, u32, u32, u32),
        dst: (i32, i32, u32, u32),
        rotation: u64,
    ) -> KmsResult<()> {
        let res = self.plane_res(plane)?;
        let p = &res.props;
        let req = |prop| p.require(prop, "plane");
        if fb == 0 {
            out.push((plane, req(Prop::FbId)?, 0));
            out.push((plane, req(Prop::CrtcId)?, 0));
            return Ok(());
        }
        out.push((plane, req(Prop::FbId)?, u64::from(fb)));
        out.push((plane, req(Prop::CrtcId)?, u64::from(crtc)));
        out.push((plane, req(Prop::SrcX)?, u64::from(src.0) << 16));
        out.push((plane, req(Prop::SrcY)?, u64::from(src.1) << 16));
        out.push((plane, req(Prop::SrcW)?, u64::from(src.2) << 16));
        out.push((plane, req(Prop::SrcH)?, u64::from(src.3) << 16));
        out.push((plane, req(Prop::CrtcX)?, dst.0 as i64 as u64));
        out.push((plane, req(Prop::CrtcY)?, dst.1 as i64 as u64));
        out.push((plane, req(Prop::CrtcW)?, u64::from(dst.2)));
        out.push((plane, req(Prop::CrtcH)?, u64::from(dst.3)));
        if let Some(id) = p.id(Prop::Rotation) {
            out.push((plane, id, rotation));
        }
        Ok(())
    }

    /// Tells the plane how to turn this YUV buffer into RGB; planes without the properties
    /// use their fixed conversion.
    fn color_triples(&self, out: &mut Vec<(u32, u32, u64)>, plane: u32, color: YuvColor) {
        let Ok(res) = self.plane_res(plane) else {
            return;
        };
        let (encoding, range) = color.kms_names();
        for (prop, name) in [(Prop::ColorEncoding, encoding), (Prop::ColorRange, range)] {
            let value = res
                .props
                .enum_entries(prop)
                .iter()
                .find(|(n, _)| n == name)
                .map(|&(_, v)| v);
            if let (Some(id), Some(value)) = (res.props.id(prop), value) {
                out.push((plane, id, value));
            }
        }
    }

    pub(super) fn plane_res(&self, plane: u32) -> KmsResult<&super::resources::PlaneRes> {
        self.res
            .planes
            .iter()
            .find(|p| u32::from(p.handle) == plane)
            .ok_or_else(|| {
                KmsError::Ioctl(
                    "plane lookup",
                    std::io::Error::other(format!("plane {plane} vanished")),
                )
            })
    }

    /// Shows `scene` with a nonblocking commit, or queues it while flips are in flight.
    pub fn present(&mut self, scene: Vec<SceneOutput>) -> KmsResult<PresentResult> {
        if scene
            .iter()
            .any(|s| self.outputs.get(s.output).is_none_or(|o| o.pending))
            || self.flip_loop.is_some()
        {
            if let Some(output) = scene.first().and_then(|s| self.outputs.get_mut(s.output)) {
                if self.queued.is_some() {
                    output.stats.dropped += 1;
                }
            }
            self.queued = Some(scene);
            return Ok(PresentResult::Queued);
        }
        self.present_now(&scene)
    }

    pub(super) fn present_now(&mut self, scene: &[SceneOutput]) -> KmsResult<PresentResult> {
        match self.present_build(scene, false, false) {
            // TEST_ONLY refused a layout with YUV layers: try again with converted copies.
            Err(KmsError::CommitRefused { .. }) if self.scene_has_yuv(scene) => {
                self.present_build(scene, true, false)
            }
            other => other,
        }
    }

    /// `present_now` for a video group (see `present_build_into`'s `quiet`).
    pub(super) fn present_video(&mut self, scene: &[SceneOutput]) -> KmsResult<PresentResult> {
        match self.present_build(scene, false, true) {
            Err(KmsError::CommitRefused { .. }) if self.scene_has_yuv(scene) => {
                self.present_build(scene, true, true)
            }
            other => other,
        }
    }

    fn scene_has_yuv(&self, scene: &[SceneOutput]) -> bool {
        scene.iter().flat_map(|s| &s.layers).any(|l| {
            self.buffers
                .get(l.buffer)
                .is_ok_and(|b| b.format == NV12 && b.fb != 0)
        })
    }

    /// Whether `buffer` must be shown through a converted copy on `output`: it has no
    /// framebuffer, or no plane from `first_plane` on takes it, or conversion is forced.
    fn layer_needs_copy(
        &self,
        output: usize,
        first_plane: usize,
        buffer: u32,
        rotation: u64,
        force: bool,
    ) -> KmsResult<bool> {
        let b = self.buffers.get(buffer)?;
        if b.format != NV12 {
            return Ok(false);
        }
        if b.fb == 0 || force {
            return Ok(true);
        }
        let planes = &self.outputs[output].planes;
        let placeable = planes.iter().skip(first_plane).any(|&plane| {
            self.plane_res(plane).is_ok_and(|p| {
                p.accepts(b.format, b.modifier)
                    && (rotation == ROTATE_0 || p.rotations & rotation != 0)
            })
        });
        Ok(!placeable)
    }

    /// An XR24 copy of `source` holding its current frame, converted at most once per commit
    /// however many outputs show it.
    fn conversion_for(&mut self, source: u32, output: usize, color: YuvColor) -> KmsResult<u32> {
        if let Some(&(_, copy)) = self.converted_now.iter().find(|(s, _)| *s == source) {
            return Ok(copy);
        }
        let (width, height, format) = {
            let b = self.buffers.get(source)?;
            (b.width, b.height, b.format)
        };
        let generation = self.buffers.get(source)?.generation;
        let conversion = self.conversions.entry(source).or_insert(Conversion {
            copies: Vec::with_capacity(COPIES_MAX),
            reported: false,
            latest: None,
        });
        if let Some((done, copy)) = conversion.latest {
            if done == generation && self.buffers.get(copy).is_ok() {
                self.converted_now.push((source, copy));
                return Ok(copy);
            }
        }
        let free = conversion
            .copies
            .iter()
            .copied()
            .find(|&c| self.buffers.get(c).is_ok_and(|b| b.screen_refs == 0));
        let copy = match free {
            Some(copy) => copy,
            None if conversion.copies.len() < COPIES_MAX => {
                let copy = self.buffers.dumb_create(&self.card, width, height, XR24)?;
                conversion.copies.push(copy);
                copy
            }
            // Every copy is on screen or in flight: overwrite the oldest rather than stall.
            None => conversion.copies[0],
        };
        let first_time = !conversion.reported;
        conversion.reported = true;
        conversion.latest = Some((generation, copy));
        let bytes = self.buffers.convert_into(source, copy, color)?;
        self.copies.conversions += 1;
        self.copies.bytes += bytes as u64;
        self.converted_now.push((source, copy));
        if first_time && self.events.len() < self.events.capacity() {
            self.events.push(EngineEvent::Fallback {
                output,
                buffer: source,
                format,
            });
        }
        Ok(copy)
    }

    /// Frees `id` now or once off screen, with the converted copies made of it.
    pub fn buffer_release(&mut self, id: u32) -> KmsResult<bool> {
        let freed = self.buffers.release(&self.card, id)?;
        if let Some(conversion) = self.conversions.remove(&id) {
            for copy in conversion.copies {
                let _ = self.buffers.release(&self.card, copy);
            }
        }
        Ok(freed)
    }

    fn present_build(
        &mut self,
        scene: &[SceneOutput],
        force_copy: bool,
        quiet: bool,
    ) -> KmsResult<PresentResult> {
        let mut triples = std::mem::take(&mut self.scratch_triples);
        triples.clear();
        let result = self.present_build_into(scene, force_copy, quiet, &mut triples);
        self.scratch_triples = triples;
        result
    }

    /// `quiet`: for video groups, which retry on their own: a refusal is returned without the
    /// property dump (the caller describes it once per cause), and a CRTC busy with someone
    /// else's commit is `Queued` without queueing the scene (the group tries at its next turn).
    fn present_build_into(
        &mut self,
        scene: &[SceneOutput],
        force_copy: bool,
        quiet: bool,
        triples: &mut Vec<(u32, u32, u64)>,
    ) -> KmsResult<PresentResult> {
        let mut layout = DefaultHasher::new();
        self.converted_now.clear();
        for s in scene {
            let (mw, mh) = self.outputs[s.output].size();
            self.outputs[s.output].staged.fill(0);
            let mut next_plane = 0;
            for layer in &s.layers {
                let rotation = rotation_bit(layer.rotation).ok_or_else(|| {
                    KmsError::BadBuffer(format!(
                        "rotation {} is not 0, 90, 180 or 270",
                        layer.rotation
                    ))
                })?;
                let mut shown_id = layer.buffer;
                let color = {
                    let b = self.buffers.get(layer.buffer)?;
                    layer.color.unwrap_or(YuvColor::default_for(b.height))
                };
                if self.layer_needs_copy(
                    s.output,
                    next_plane,
                    layer.buffer,
                    rotation,
                    force_copy,
                )? {
                    shown_id = self.conversion_for(layer.buffer, s.output, color)?;
                    self.outputs[s.output].stats.converted += 1;
                }
                let output = &self.outputs[s.output];
                let buffer = self.buffers.get(shown_id)?;
                // The bottom layer tries the primary plane; others need overlays.
                let slot = (next_plane..output.planes.len()).find(|&i| {
                    self.plane_res(output.planes[i]).is_ok_and(|p| {
                        p.accepts(buffer.format, buffer.modifier)
                            && (rotation == ROTATE_0 || p.rotations & rotation != 0)
                    })
                });
                let Some(slot) = slot else {
                    return Err(KmsError::NoPlane {
                        connector: output.connector.clone(),
                        format: format!(
                            "{}{}",
                            fourcc_name(buffer.format),
                            if rotation == ROTATE_0 {
                                String::new()
                            } else {
                                format!(" rotated {}°", layer.rotation)
                            }
                        ),
                    });
                };
                next_plane = slot + 1;
                let src = layer.src.unwrap_or((0, 0, buffer.width, buffer.height));
                if src.2 == 0
                    || src.3 == 0
                    || src.0 + src.2 > buffer.width
                    || src.1 + src.3 > buffer.height
                {
                    return Err(KmsError::BadBuffer(format!(
                        "{}: source rectangle {:?} outside buffer {} ({}x{})",
                        output.connector, src, layer.buffer, buffer.width, buffer.height
                    )));
                }
                let dst = layer.dst.unwrap_or((0, 0, mw, mh));
                (
                    output.planes[slot],
                    buffer.format,
                    buffer.modifier,
                    src,
                    dst,
                    rotation,
                    color,
                )
                    .hash(&mut layout);
                self.outputs[s.output].staged[slot] = shown_id;
                let output = &self.outputs[s.output];
                self.plane_triples(
                    triples,
                    output.planes[slot],
                    output.crtc_id,
                    buffer.fb,
                    src,
                    dst,
                    rotation,
                )?;
                if is_yuv(buffer.format) {
                    self.color_triples(triples, output.planes[slot], color);
                }
            }
            let output = &self.outputs[s.output];
            for (i, &plane) in output.planes.iter().enumerate() {
                if output.staged[i] == 0 && (output.shown[i] != 0 || output.incoming[i] != 0) {
                    self.plane_triples(
                        triples,
                        plane,
                        output.crtc_id,
                        0,
                        (0, 0, 0, 0),
                        (0, 0, 0, 0),
                        ROTATE_0,
                    )?;
                }
            }
        }
        // In place and allocation-free, unlike a stable sort.
        triples.sort_unstable_by_key(|t| (t.0, t.1));
        self.request.clear();
        for &(obj, prop, value) in triples.iter() {
            self.request.set(obj, prop, value);
        }
        let layout = layout.finish();
        let untested = scene
            .iter()
            .any(|s| self.outputs[s.output].tested_layout != layout);
        let names = || {
            scene
                .iter()
                .map(|s| self.outputs[s.output].connector.clone())
                .collect::<Vec<_>>()
        };
        if untested {
            if let Err(e) = self.request.commit(&self.card, FLAG_TEST_ONLY) {
                if quiet {
                    return Err(commit_error(Vec::new(), String::new(), e));
                }
                let described = self.request.describe(|id| self.prop_label(id));
                return Err(commit_error(names(), described, e));
            }
        }
        match self
            .request
            .commit(&self.card, FLAG_NONBLOCK | FLAG_PAGE_FLIP_EVENT)
        {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                if !quiet {
                    self.queued = Some(scene.to_vec());
                }
                return Ok(PresentResult::Queued);
            }
            Err(e) if quiet => return Err(commit_error(Vec::new(), String::new(), e)),
            Err(e) => {
                let described = self.request.describe(|id| self.prop_label(id));
                return Err(commit_error(names(), described, e));
            }
        }
        let now = monotonic_ns();
        for s in scene {
            let output = &mut self.outputs[s.output];
            output.incoming.copy_from_slice(&output.staged);
            output.pending = true;
            output.last_commit_ns = now;
            output.tested_layout = layout;
            output.stats.commits += 1;
            for i in 0..self.outputs[s.output].incoming.len() {
                let b = self.outputs[s.output].incoming[i];
                if b != 0 {
                    self.buffers.screen_ref(b);
                }
            }
        }
        Ok(PresentResult::Committed)
    }

    pub fn flip_loop_start(&mut self, flip_loop: FlipLoop) -> KmsResult<()> {
        for (output, buffers) in &flip_loop.outputs {
            if *output >= self.outputs.len() || buffers.is_empty() {
                return Err(KmsError::BadBuffer(
                    "a flip loop needs configured outputs and at least one buffer each".into(),
                ));
            }
            for &b in buffers {
                self.buffers.get(b)?;
            }
        }
        self.queued = None;
        self.loop_scene = flip_loop
            .outputs
            .iter()
            .map(|(output, buffers)| SceneOutput {
                output: *output,
                layers: vec![SceneLayer {
                    buffer: buffers[0],
                    src: None,
                    dst: None,
                    rotation: 0,
                    color: None,
                }],
            })
            .collect();
        self.flip_loop = Some(flip_loop);
        if self.outputs.iter().all(|o| !o.pending) {
            self.flip_loop_step()?;
        }
        Ok(())
    }

    fn flip_loop_step(&mut self) -> KmsResult<()> {
        let Some(l) = self.flip_loop.as_mut() else {
            return Ok(());
        };
        if l.frame >= l.frames {
            let frames = l.frames;
            self.flip_loop = None;
            self.events.push(EngineEvent::LoopDone { frames });
            return Ok(());
        }
        let frame = l.frame as usize;
        l.frame += 1;
        for (scene, (_, buffers)) in self.loop_scene.iter_mut().zip(&l.outputs) {
            scene.layers[0].buffer = buffers[frame % buffers.len()];
        }
        let scene = std::mem::take(&mut self.loop_scene);
        let result = self.present_now(&scene).map(|_| ());
        self.loop_scene = scene;
        result
    }

    /// A page flip completed on `crtc`: account for it, free what left the screen, and
    /// commit the next scene once every CRTC is idle.
    pub fn flip_complete(&mut self, crtc: u32, sequence: u32, timestamp_ns: u64) {
        let Some(index) = self.outputs.iter().position(|o| o.crtc_id == crtc) else {
            return;
        };
        let output = &mut self.outputs[index];
        output.pending = false;
        let stats = &mut output.stats;
        if stats.flips > 0 && sequence > stats.last_sequence {
            let step = sequence - stats.last_sequence;
            stats.max_sequence_step = stats.max_sequence_step.max(step);
            if step == 2 {
                stats.late_one += 1;
            } else if step > 2 {
                stats.late_more += 1;
            }
        }
        stats.flips += 1;
        stats.last_sequence = sequence;
        stats.last_timestamp_ns = timestamp_ns;
        // What was shown leaves the screen; what was in flight is shown. Swapped in place.
        std::mem::swap(&mut output.shown, &mut output.incoming);
        for i in 0..self.outputs[index].incoming.len() {
            let b = self.outputs[index].incoming[i];
            if b != 0 {
                self.buffers.screen_unref(&self.card, b);
            }
        }
        self.outputs[index].incoming.fill(0);
        if self.events.len() < self.events.capacity() {
            self.events.push(EngineEvent::Flip {
                output: index,
                crtc,
                sequence,
                timestamp_ns,
            });
        }
        // Each user of the screen goes on once ITS outputs are idle: the flip loop and a queued
        // scene from JavaScript, and every video group on its own (pacing.rs). One that waited
        // for all outputs would hold every screen to the slowest or latest one.
        let mark = monotonic_ns();
        if self.flip_loop.is_some() {
            if self.outputs.iter().all(|o| !o.pending) {
                let _ = self.flip_loop_step();
            }
        } else {
            let queued_idle = self.queued.as_ref().is_some_and(|scene| {
                scene
                    .iter()
                    .all(|s| self.outputs.get(s.output).is_some_and(|o| !o.pending))
            });
            if queued_idle {
                if let Some(scene) = self.queued.take() {
                    let _ = self.present_now(&scene);
                }
            }
            if !self.video.is_empty() {
                // Commit every vblank, new frame or not, so the flip events keep the clock.
                self.video_service(mark);
            }
        }
        // How long after ITS last flip each output's next commit went in: the part of lateness
        // that is ours, as opposed to a device (or an emulator) that flips late.
        for output in self.outputs.iter_mut().filter(|o| o.last_commit_ns >= mark) {
            let stats = &mut output.stats;
            let delay = output
                .last_commit_ns
                .saturating_sub(stats.last_timestamp_ns);
            stats.max_commit_delay_ns = stats.max_commit_delay_ns.max(delay);
            let refresh = u64::from(output.mode.vrefresh().max(1));
            if delay > 1_000_000_000 / refresh {
                stats.late_commits += 1;
            }
        }
    }

    pub fn close(&mut self) {
        self.video.clear();
        self.video_retired.clear();
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
