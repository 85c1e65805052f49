//! Real-time scheduling for the threads that keep time: the KMS presentation thread (reacts to
//! flips) and the virtual vblank clock. On a busy machine a normal-priority thread can wake
//! tens of milliseconds late and miss a vblank. These threads sleep almost all the time, so
//! SCHED_FIFO costs the rest of the system little. Decoder threads stay at normal priority:
//! they demux and may decode, and at SCHED_FIFO that work starved an emulated guest.

use std::sync::atomic::{AtomicU8, Ordering};

/// Low in the FIFO range: above every normal thread, below the kernel's own (irq threads at 50).
const PRIORITY: i32 = 10;

/// 0 not tried, 1 granted, 2 refused (no CAP_SYS_NICE or RLIMIT_RTPRIO).
static OUTCOME: AtomicU8 = AtomicU8::new(0);

/// Puts the calling thread in SCHED_FIFO when MULTIHEAD_REALTIME=1 and the process may;
/// otherwise it stays as it was. Opt-in: the appliance's unit turns it on (with LimitRTPRIO),
/// while under emulation (TCG) a real-time thread can freeze a one-CPU guest.
pub fn realtime_enter() -> bool {
    if std::env::var("MULTIHEAD_REALTIME").as_deref() != Ok("1") {
        return false;
    }
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
