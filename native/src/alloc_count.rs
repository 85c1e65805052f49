//! Counts heap allocations made on the frame path, so "the per-frame path does not
//! allocate" is a measured number (see `KmsDevice.framePathAllocations`) rather than a hope.
//! Only code run inside `frame_path` is counted; everything else goes straight through.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Counting;

static FRAME_PATH_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // const-initialised: reading it never allocates, which matters inside the allocator.
    static ON_FRAME_PATH: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if ON_FRAME_PATH.try_with(Cell::get).unwrap_or(false) {
        FRAME_PATH_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `f` with its heap allocations counted.
pub fn frame_path<R>(f: impl FnOnce() -> R) -> R {
    let _ = ON_FRAME_PATH.try_with(|c| c.set(true));
    let result = f();
    let _ = ON_FRAME_PATH.try_with(|c| c.set(false));
    result
}

/// Allocations counted so far, in every `frame_path` of the process.
pub fn frame_path_allocations() -> u64 {
    FRAME_PATH_ALLOCATIONS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_inside_the_frame_path() {
        let before = frame_path_allocations();
        let outside: Vec<u8> = (0..64).collect();
        assert_eq!(frame_path_allocations(), before);
        let inside = frame_path(|| vec![2u8; 64]);
        assert!(frame_path_allocations() > before);
        let reused = frame_path_allocations();
        frame_path(|| outside.len() + inside.len());
        assert_eq!(frame_path_allocations(), reused);
    }
}
