//! Scenes: what each output shows, turned into one atomic request. A layout (planes, formats,
//! rectangles, colour) is tried with TEST_ONLY once; later frames of the same layout only
//! change framebuffer ids and go straight in.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use super::super::commit::{commit_error, FLAG_NONBLOCK, FLAG_PAGE_FLIP_EVENT, FLAG_TEST_ONLY};
use super::super::error::{KmsError, KmsResult};
use super::super::formats::{fourcc_name, is_yuv, YuvColor};
use super::super::ids::{BufferId, Rect};
use super::{monotonic_ns, rotation_bit, Engine, ROTATE_0};

/// One layer of an output's scene: which buffer, which part of it, where on the screen.
#[derive(Clone, Debug)]
pub struct SceneLayer {
    pub buffer: BufferId,
    /// Source rectangle in buffer pixels (crop); default: the whole buffer.
    pub src: Option<Rect<u32>>,
    /// Destination rectangle in CRTC pixels; default: the whole mode.
    pub dst: Option<Rect>,
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

impl Engine {
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

    pub(in crate::kms) fn present_now(
        &mut self,
        scene: &[SceneOutput],
    ) -> KmsResult<PresentResult> {
        self.present_fallbacks(scene, false)
    }

    /// `present_now` for a video group (see `present_build_into`'s `quiet`).
    pub(in crate::kms) fn present_video(
        &mut self,
        scene: &[SceneOutput],
    ) -> KmsResult<PresentResult> {
        self.present_fallbacks(scene, true)
    }

    /// The scene as it is; where TEST_ONLY refuses a layout with YUV layers, with converted
    /// copies; where that is refused too and a layer scales, with copies the CPU scales. The
    /// way that worked is remembered per scene shape, so later frames go straight to it
    /// instead of converting and being refused on every frame.
    fn present_fallbacks(
        &mut self,
        scene: &[SceneOutput],
        quiet: bool,
    ) -> KmsResult<PresentResult> {
        let shape = self.scene_shape(scene);
        let start = self
            .copy_modes
            .iter()
            .find(|(s, _)| *s == shape)
            .map_or(CopyMode::Direct, |&(_, m)| m);
        let mut mode = start;
        // A turn no plane offers is the scaled copy's to do: a plane's refusal either way.
        let turns = scene_turns(scene);
        let refused = |e: &KmsError| {
            matches!(e, KmsError::CommitRefused { .. })
                || (turns && matches!(e, KmsError::NoPlane { .. }))
        };
        loop {
            match self.present_build(scene, mode, quiet) {
                Err(e) if refused(&e) && mode == CopyMode::Direct && self.scene_has_yuv(scene) => {
                    mode = CopyMode::Convert;
                }
                Err(e)
                    if refused(&e)
                        && mode == CopyMode::Convert
                        && (scene_scales(scene) || turns) =>
                {
                    mode = CopyMode::ConvertScaled;
                }
                other => {
                    if other.is_ok() && mode != start {
                        let slot = self.copy_modes_next % self.copy_modes.len();
                        self.copy_modes[slot] = (shape, mode);
                        self.copy_modes_next += 1;
                    }
                    return other;
                }
            }
        }
    }

    pub(super) fn copy_modes_forget(&mut self) {
        self.copy_modes.fill((0, CopyMode::Direct));
    }

    /// What decides whether planes take a scene as it is: per layer its output, buffer
    /// format and size, source, destination and rotation (not which frame it shows).
    fn scene_shape(&self, scene: &[SceneOutput]) -> u64 {
        let mut h = DefaultHasher::new();
        for s in scene {
            s.output.hash(&mut h);
            for l in &s.layers {
                if let Ok(b) = self.buffers.get(l.buffer) {
                    (b.format, b.modifier, b.width, b.height, b.fb.is_none()).hash(&mut h);
                }
                (l.src, l.dst, l.rotation).hash(&mut h);
            }
        }
        h.finish()
    }

    pub(super) fn present_build(
        &mut self,
        scene: &[SceneOutput],
        mode: CopyMode,
        quiet: bool,
    ) -> KmsResult<PresentResult> {
        let mut triples = std::mem::take(&mut self.scratch_triples);
        triples.clear();
        let result = self.present_build_into(scene, mode, quiet, &mut triples);
        self.scratch_triples = triples;
        result
    }

    /// `quiet`: for video groups, which retry on their own: a refusal is returned without the
    /// property dump (the caller describes it once per cause), and a CRTC busy with someone
    /// else's commit is `Queued` without queueing the scene (the group tries at its next turn).
    fn present_build_into(
        &mut self,
        scene: &[SceneOutput],
        mode: CopyMode,
        quiet: bool,
        triples: &mut Vec<(u32, u32, u64)>,
    ) -> KmsResult<PresentResult> {
        let mut layout = DefaultHasher::new();
        self.converted_now.clear();
        // Sleeping outputs (display power off) keep their last frame and take no flips.
        if scene.iter().all(|s| self.outputs[s.output].asleep) {
            return Ok(PresentResult::Committed);
        }
        for s in scene {
            if self.outputs[s.output].asleep {
                continue;
            }
            let (mw, mh) = self.outputs[s.output].size();
            self.outputs[s.output].staged.fill(BufferId::NONE);
            let mut next_plane = 0;
            for layer in &s.layers {
                let mut rotation = rotation_bit(layer.rotation).ok_or_else(|| {
                    KmsError::BadBuffer(format!(
                        "rotation {} is not 0, 90, 180 or 270",
                        layer.rotation
                    ))
                })?;
                let mut shown_id = layer.buffer;
                let (color, whole) = {
                    let b = self.buffers.get(layer.buffer)?;
                    (
                        layer.color.unwrap_or(YuvColor::default_for(b.height)),
                        Rect::sized(b.width, b.height),
                    )
                };
                let mut dst = layer.dst.unwrap_or(Rect::sized(mw, mh));
                // The scaled copy is the whole scanout, the picture placed in it: shown at
                // the mode's size, it needs the plane neither to scale nor to be positioned.
                let scale = if mode == CopyMode::ConvertScaled {
                    layer_scale(layer.src.unwrap_or(whole), dst, layer.rotation, (mw, mh))
                } else {
                    None
                };
                if self.layer_needs_copy(
                    s.output,
                    next_plane,
                    layer.buffer,
                    rotation,
                    mode != CopyMode::Direct,
                )? {
                    shown_id = self.conversion_for(layer.buffer, s.output, color, scale)?;
                    self.outputs[s.output].stats.converted += 1;
                }
                let copied_scaled = scale.is_some() && shown_id != layer.buffer;
                if copied_scaled {
                    // The copy is the whole scanout, already turned.
                    dst = Rect::sized(mw, mh);
                    rotation = ROTATE_0;
                }
                let output = &self.outputs[s.output];
                let buffer = self.buffers.get(shown_id)?;
                let slot = self.plane_slot(
                    s.output,
                    next_plane,
                    buffer.format,
                    buffer.modifier,
                    rotation,
                );
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
                let src = match layer.src {
                    Some(src) if !copied_scaled => src,
                    _ => Rect::sized(buffer.width, buffer.height),
                };
                if src.w == 0
                    || src.h == 0
                    || src.x + src.w > buffer.width
                    || src.y + src.h > buffer.height
                {
                    return Err(KmsError::BadBuffer(format!(
                        "{}: source rectangle ({}, {}, {}, {}) outside buffer {} ({}x{})",
                        output.connector,
                        src.x,
                        src.y,
                        src.w,
                        src.h,
                        layer.buffer,
                        buffer.width,
                        buffer.height
                    )));
                }
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
            self.planes_unused_off(triples, s.output)?;
        }
        // In place and allocation-free, unlike a stable sort.
        triples.sort_unstable_by_key(|t| (t.0, t.1));
        self.request.clear();
        for &(obj, prop, value) in triples.iter() {
            self.request.set(obj, prop, value);
        }
        let layout = layout.finish();
        let untested = scene.iter().any(|s| {
            !self.outputs[s.output].asleep && self.outputs[s.output].tested_layout != layout
        });
        let names = || {
            scene
                .iter()
                .filter(|s| !self.outputs[s.output].asleep)
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
            if self.outputs[s.output].asleep {
                continue;
            }
            let output = &mut self.outputs[s.output];
            output.incoming.copy_from_slice(&output.staged);
            output.pending = true;
            output.last_commit_ns = now;
            output.tested_layout = layout;
            output.stats.commits += 1;
            for i in 0..self.outputs[s.output].incoming.len() {
                let b = self.outputs[s.output].incoming[i];
                if !b.is_none() {
                    self.buffers.screen_ref(b);
                }
            }
        }
        Ok(PresentResult::Committed)
    }
}

/// How a layer's buffer reaches its plane: as it is, through a converted copy, or through a
/// copy the CPU also scales to the destination's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CopyMode {
    Direct,
    Convert,
    ConvertScaled,
}

/// The CPU scaling a layer needs, if its source and destination differ in size, the
/// destination is not the whole mode or the picture is turned: the source rectangle, the
/// destination clipped to the mode, the mode's size and the rotation.
fn layer_scale(
    src: Rect<u32>,
    dst: Rect,
    rotation: u32,
    mode: (u32, u32),
) -> super::copy::CopyScale {
    if dst.x < 0 || dst.y < 0 {
        return None;
    }
    let (x, y) = (dst.x as u32, dst.y as u32);
    let (w, h) = (
        dst.w.min(mode.0.saturating_sub(x)),
        dst.h.min(mode.1.saturating_sub(y)),
    );
    let whole = (x, y, w, h) == (0, 0, mode.0, mode.1);
    (w > 0 && h > 0 && ((src.w, src.h) != (w, h) || !whole || rotation != 0)).then_some((
        src,
        Rect { x, y, w, h },
        mode.0,
        mode.1,
        rotation,
    ))
}

/// Whether a layer of the scene is turned.
fn scene_turns(scene: &[SceneOutput]) -> bool {
    scene
        .iter()
        .flat_map(|s| &s.layers)
        .any(|l| l.rotation != 0)
}

/// Whether a layer of the scene is scaled by its plane (a source and destination that differ).
fn scene_scales(scene: &[SceneOutput]) -> bool {
    scene
        .iter()
        .flat_map(|s| &s.layers)
        .any(|l| match (l.src, l.dst) {
            (_, None) => true,
            (None, Some(_)) => true,
            (Some(src), Some(dst)) => src.w != dst.w || src.h != dst.h || dst.x != 0 || dst.y != 0,
        })
}
