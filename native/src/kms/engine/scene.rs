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
        match self.present_build(scene, false, false) {
            // TEST_ONLY refused a layout with YUV layers: try again with converted copies.
            Err(KmsError::CommitRefused { .. }) if self.scene_has_yuv(scene) => {
                self.present_build(scene, true, false)
            }
            other => other,
        }
    }

    /// `present_now` for a video group (see `present_build_into`'s `quiet`).
    pub(in crate::kms) fn present_video(
        &mut self,
        scene: &[SceneOutput],
    ) -> KmsResult<PresentResult> {
        match self.present_build(scene, false, true) {
            Err(KmsError::CommitRefused { .. }) if self.scene_has_yuv(scene) => {
                self.present_build(scene, true, true)
            }
            other => other,
        }
    }

    pub(super) fn present_build(
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
            self.outputs[s.output].staged.fill(BufferId::NONE);
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
                let src = layer
                    .src
                    .unwrap_or(Rect::sized(buffer.width, buffer.height));
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
                let dst = layer.dst.unwrap_or(Rect::sized(mw, mh));
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
                if !b.is_none() {
                    self.buffers.screen_ref(b);
                }
            }
        }
        Ok(PresentResult::Committed)
    }
}
