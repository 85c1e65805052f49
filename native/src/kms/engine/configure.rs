//! Setting the outputs: connectors, CRTCs and modes, in one blocking commit tested first.

use std::os::fd::AsFd;

use drm::control::Device as ControlDevice;
use drm::control::Mode;

use super::super::commit::{commit_error, FLAG_ALLOW_MODESET, FLAG_TEST_ONLY};
use super::super::error::{KmsError, KmsResult};
use super::super::formats::XR24;
use super::super::ids::{BufferId, FbId, PlaneId, Rect};
use super::super::output::{crtcs_assign, mode_pick, planes_claim, Output, OutputRequest};
use super::super::props::Prop;
use super::{Engine, ROTATE_0};

/// A requested connector, copied out of the resource table so it can change underneath.
struct Picked {
    name: String,
    handle: u32,
    crtc_prop: u32,
    possible_crtcs: u32,
}

impl Engine {
    /// Sets the outputs to exactly `requests`, in one atomic commit tested first. Outputs
    /// whose connector, CRTC and mode stay the same are not touched and keep their content.
    pub fn configure(&mut self, requests: &[OutputRequest]) -> KmsResult<()> {
        let picked = self.connectors_pick(requests)?;
        let crtcs = self.crtcs_pick(&picked)?;
        // Other outputs, modes or planes: what the planes took through copies is asked afresh.
        self.copy_modes_forget();

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
        let mut taken: Vec<PlaneId> = kept
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
                    .find(|p| PlaneId(u32::from(p.handle)) == planes[0])
                    .and_then(|p| self.card.get_plane(p.handle).ok())
                    .and_then(|info| info.framebuffer())
                    .map(|fb| FbId(u32::from(fb)))
                    .filter(|&fb| self.buffers.inherited_fits(fb, w, h))
                    .map_or(blank, BufferId::from);
                let conn_id = connector.handle;
                triples.push((conn_id, connector.crtc_prop, u64::from(crtc_id)));
                triples.push((crtc_id, mode_prop, u64::from(blob)));
                triples.push((crtc_id, active_prop, 1));
                for (p, &plane) in planes.iter().enumerate() {
                    let fb = if p == 0 {
                        self.buffers.get(first)?.fb
                    } else {
                        FbId::NONE
                    };
                    self.plane_triples(
                        &mut triples,
                        plane,
                        crtc_id,
                        fb,
                        Rect::sized(w, h),
                        Rect::sized(w, h),
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
                    shown: vec![BufferId::NONE; n],
                    incoming: {
                        let mut v = vec![BufferId::NONE; n];
                        v[0] = first;
                        v
                    },
                    staged: vec![BufferId::NONE; n],
                    planes,
                    pending: false,
                    stats: Default::default(),
                    tested_layout: 0,
                    last_commit_ns: 0,
                    asleep: false,
                    inactive: false,
                    play_incoming: None,
                    record: Default::default(),
                });
                fresh.push(true);
            }
            self.unused_off(&mut triples, &new_outputs, &old)?;
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
            output.shown = std::mem::replace(
                &mut output.incoming,
                vec![BufferId::NONE; output.planes.len()],
            );
        }
        for output in old.into_iter().flatten() {
            for &b in output.shown.iter().chain(&output.incoming) {
                if !b.is_none() {
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

    /// The requested connectors and their modes; refuses unknown or disconnected ones.
    fn connectors_pick(&self, requests: &[OutputRequest]) -> KmsResult<Vec<(Picked, Mode)>> {
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
        Ok(picked)
    }

    /// A CRTC for each picked connector, keeping the one it has where possible; names the
    /// first connector that cannot get one.
    fn crtcs_pick(&self, picked: &[(Picked, Mode)]) -> KmsResult<Vec<usize>> {
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
        crtcs_assign(&masks, &current, self.res.crtcs.len()).ok_or_else(|| {
            // Name the first connector that cannot be added.
            let failing = (1..=masks.len())
                .find(|&n| crtcs_assign(&masks[..n], &current[..n], self.res.crtcs.len()).is_none())
                .unwrap_or(1);
            KmsError::NoCrtc(picked[failing - 1].0.name.clone())
        })
    }

    /// Switches off whatever the new outputs do not use: old outputs, fbcon's planes.
    fn unused_off(
        &self,
        triples: &mut Vec<(u32, u32, u64)>,
        new_outputs: &[Output],
        old: &[Option<Output>],
    ) -> KmsResult<()> {
        let used_connectors: Vec<u32> = new_outputs.iter().map(|o| o.connector_id).collect();
        let used_crtcs: Vec<u32> = new_outputs.iter().map(|o| o.crtc_id).collect();
        let used_planes: Vec<PlaneId> = new_outputs
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
            if !used_planes.contains(&PlaneId(id)) && on {
                triples.push((id, p.props.require(Prop::FbId, "plane")?, 0));
                triples.push((id, p.props.require(Prop::CrtcId, "plane")?, 0));
            }
        }
        Ok(())
    }

    fn blank_buffer(&mut self, w: u32, h: u32) -> KmsResult<BufferId> {
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
}
