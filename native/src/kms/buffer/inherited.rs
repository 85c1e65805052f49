//! Framebuffers a previous instance left on screen, taken over with the card: shown until our
//! first frame replaces them, then removed.

use super::super::device::Card;
use super::super::ids::{BufferId, FbId};
use super::{Buffer, BufferStore, Storage};

impl BufferStore {
    /// Takes a framebuffer left by a previous instance into the store, to be removed as soon as
    /// no plane shows it (`screen_unref`, or `inherited_release_unshown` after the first commit).
    pub fn inherited_add(&mut self, fb: FbId, width: u32, height: u32) {
        self.buffers.insert(
            BufferId::from(fb),
            Buffer {
                fb,
                width,
                height,
                format: 0,
                modifier: None,
                pitches: [0; 4],
                offsets: [0; 4],
                storage: Storage::Inherited,
                screen_refs: 0,
                release_requested: true,
                generation: 0,
            },
        );
    }

    /// The inherited framebuffer of this size, if `fb` is one (an output may keep showing it).
    pub fn inherited_fits(&self, fb: FbId, width: u32, height: u32) -> bool {
        self.buffers.get(&BufferId::from(fb)).is_some_and(|b| {
            matches!(b.storage, Storage::Inherited) && b.width == width && b.height == height
        })
    }

    /// Removes the inherited framebuffers no output kept. Returns how many.
    pub fn inherited_release_unshown(&mut self, card: &Card) -> usize {
        let unshown: Vec<BufferId> = self
            .buffers
            .iter()
            .filter(|(_, b)| matches!(b.storage, Storage::Inherited) && b.screen_refs == 0)
            .map(|(&id, _)| id)
            .collect();
        for &id in &unshown {
            self.destroy(card, id);
        }
        unshown.len()
    }
}
