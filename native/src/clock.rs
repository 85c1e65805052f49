//! The kernel's view of the wall clock, so the supervisor can tell when time is first
//! synchronised. `adjtimex` with no mode bits only reads: no privilege is needed, and it is
//! what NTP daemons (systemd-timesyncd, chrony, ntpd) update when they discipline the clock.

use napi::bindgen_prelude::*;
use napi_derive::napi;

/// What `adjtimex(2)` says about the system clock.
#[napi(object)]
pub struct ClockState {
    /// False while the kernel's STA_UNSYNC bit is set (no NTP daemon has synchronised it yet).
    pub synchronized: bool,
    /// The kernel's maximum error estimate, in microseconds (grows while unsynchronised).
    pub max_error_us: i64,
    /// The estimated error, in microseconds.
    pub est_error_us: i64,
    /// The raw `status` bits (STA_*).
    pub status: i32,
    /// The clock state `adjtimex` returned (TIME_OK 0 … TIME_ERROR 5).
    pub state: i32,
}

/// Reads the kernel clock state (`adjtimex` with modes 0: read-only).
#[napi(catch_unwind)]
pub fn clock_state() -> Result<ClockState> {
    // SAFETY: a zeroed timex is a valid argument; modes 0 asks the kernel only to fill it in.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        let err = std::io::Error::last_os_error();
        return Err(Error::from_reason(format!("adjtimex: {err}")));
    }
    Ok(ClockState {
        synchronized: tx.status & libc::STA_UNSYNC == 0,
        max_error_us: tx.maxerror as i64,
        est_error_us: tx.esterror as i64,
        status: tx.status,
        state,
    })
}
