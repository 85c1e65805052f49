//! The one way anything reaches the screen: an atomic request built into reusable arrays
//! and committed with a single ioctl. Clearing keeps capacity, so steady-state frames do
//! not allocate.

use std::os::fd::AsFd;

use super::device::Card;
use super::error::KmsError;

pub const FLAG_TEST_ONLY: u32 = drm_ffi::DRM_MODE_ATOMIC_TEST_ONLY;
pub const FLAG_NONBLOCK: u32 = drm_ffi::DRM_MODE_ATOMIC_NONBLOCK;
pub const FLAG_ALLOW_MODESET: u32 = drm_ffi::DRM_MODE_ATOMIC_ALLOW_MODESET;
pub const FLAG_PAGE_FLIP_EVENT: u32 = drm_ffi::DRM_MODE_PAGE_FLIP_EVENT;

#[derive(Default)]
pub struct AtomicRequest {
    objects: Vec<u32>,
    counts: Vec<u32>,
    props: Vec<u32>,
    values: Vec<u64>,
}

impl AtomicRequest {
    pub fn clear(&mut self) {
        self.objects.clear();
        self.counts.clear();
        self.props.clear();
        self.values.clear();
    }

    /// Adds `object.prop = value`. Properties of one object must be added together; the
    /// kernel takes them as runs per object.
    pub fn set(&mut self, object: u32, prop: u32, value: u64) {
        if self.objects.last() != Some(&object) {
            self.objects.push(object);
            self.counts.push(0);
        }
        *self.counts.last_mut().expect("pushed above") += 1;
        self.props.push(prop);
        self.values.push(value);
    }

    pub fn commit(&mut self, card: &Card, flags: u32) -> std::io::Result<()> {
        drm_ffi::mode::atomic_commit(
            card.as_fd(),
            flags,
            &mut self.objects,
            &mut self.counts,
            &mut self.props,
            &mut self.values,
        )
    }

    /// "obj 31: 17=54 18=40; obj 40: ..." with property names resolved by `name`.
    pub fn describe(&self, name: impl Fn(u32) -> String) -> String {
        let mut at = 0;
        let mut out = String::new();
        for (object, &count) in self.objects.iter().zip(&self.counts) {
            if !out.is_empty() {
                out.push_str("; ");
            }
            out.push_str(&format!("obj {object}:"));
            for i in at..at + count as usize {
                out.push_str(&format!(" {}={}", name(self.props[i]), self.values[i]));
            }
            at += count as usize;
        }
        out
    }
}

pub fn commit_error(outputs: Vec<String>, properties: String, source: std::io::Error) -> KmsError {
    KmsError::CommitRefused {
        outputs,
        properties,
        source,
    }
}
