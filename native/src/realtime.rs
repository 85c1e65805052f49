//! Real-time scheduling for the threads that keep time: the presentation thread (reacts to
//! flips), the virtual vblank clock and each decoder's pacing thread. On a busy machine a
//! normal-priority thread can wake tens of milliseconds late, and a frame is then replaced
//! before any vblank showed it. These threads sleep almost all the time, so SCHED_FIFO costs
//! the rest of the system nothing; FFmpeg's own decode workers stay at normal priority.

use std::sync::atomic::{AtomicU8, Ordering};

/// Low in the FIFO range: above every normal thread, below the kernel's own (irq threads at 50).
const PRIORITY: i32 = 10;

/// 0 not tried, 1 granted, 2 refused (no CAP_SYS_NICE or RLIMIT_RTPRIO).
static OUTCOME: AtomicU8 = AtomicU8::new(0);

/// Puts the calling thread in SCHED_FIFO if the process may; otherwise it stays as it was.
pub fn realtime_enter() -> bool {
    let param = libc::sched_param {
        sched_priority: PRIORITY,
    };
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    OUTCOME.store(if rc == 0 { 1 } else { 2 }, Ordering::Relaxed);
    rc == 0
}

/// Whether time-keeping threads run real-time: Some(true/false) once one has tried.
pub fn realtime_granted() -> Option<bool> {
    match OUTCOME.load(Ordering::Relaxed) {
        1 => Some(true),
        2 => Some(false),
        _ => None,
    }
}

/// Back to normal scheduling, before a thread creates others (FFmpeg's decode workers would
/// inherit SCHED_FIFO and could starve the machine on a heavy stream).
pub fn realtime_leave() {
    let param = libc::sched_param { sched_priority: 0 };
    unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_OTHER, &param) };
}
