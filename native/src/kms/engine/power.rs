//! Display power (DPMS): an output's CRTC made inactive so its monitor sleeps, and active again.
//! The output keeps its mode, planes and last frame; while it sleeps, scenes leave it out
//! (a flip on an inactive CRTC is refused), so the outputs awake go on unaffected.

use super::super::commit::{commit_error, FLAG_ALLOW_MODESET};
use super::super::error::{KmsError, KmsResult};
use super::super::props::Prop;
use super::Engine;

impl Engine {
    /// Puts `output`'s CRTC to sleep (`on` false) or wakes it, with a blocking commit of its
    /// ACTIVE property. Going to sleep, a flip in flight answers `Busy`: no commit takes the
    /// output any more, so asking again a frame later finds it idle.
    pub fn output_power(&mut self, output: usize, on: bool) -> KmsResult<()> {
        let o = self
            .outputs
            .get_mut(output)
            .ok_or_else(|| KmsError::OutputNotConfigured(format!("#{output}")))?;
        if !on {
            o.asleep = true;
        }
        if o.inactive != on {
            o.asleep = !on;
            return Ok(());
        }
        if o.pending {
            return Err(KmsError::Busy(format!("output {} power", o.connector)));
        }
        let crtc_id = o.crtc_id;
        let connector = o.connector.clone();
        let active = self
            .res
            .crtcs
            .iter()
            .find(|c| u32::from(c.handle) == crtc_id)
            .ok_or_else(|| KmsError::OutputNotConfigured(connector.clone()))?
            .props
            .require(Prop::Active, "crtc")?;
        self.request.clear();
        self.request.set(crtc_id, active, u64::from(on));
        if let Err(e) = self.request.commit(&self.card, FLAG_ALLOW_MODESET) {
            let described = self.request.describe(|id| self.prop_label(id));
            return Err(commit_error(vec![connector], described, e));
        }
        let o = &mut self.outputs[output];
        o.inactive = !on;
        o.asleep = !on;
        // Awake again: its next layout is tested afresh (the CRTC was reset).
        o.tested_layout = 0;
        Ok(())
    }
}
