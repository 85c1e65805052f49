//! Liveness of the native loops that put frames on screens (the KMS presentation thread and
//! the virtual vblank clock). The supervisor pings systemd's watchdog only while every such
//! loop has gone round recently, so a stuck native thread gets the service restarted even if
//! JavaScript is still running.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use napi_derive::napi;

static LOOPS: Mutex<Vec<(u64, &'static str, Arc<AtomicU64>)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Test hook: loops hold still until this time (ms on the heartbeat clock).
static STALL_UNTIL_MS: AtomicU64 = AtomicU64::new(0);

fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// One registered loop; unregistered when dropped (the loop ended on purpose).
pub struct Heartbeat {
    id: u64,
    last: Arc<AtomicU64>,
}

impl Heartbeat {
    pub fn register(name: &'static str) -> Heartbeat {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let last = Arc::new(AtomicU64::new(clock_ms()));
        LOOPS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, name, Arc::clone(&last)));
        Heartbeat { id, last }
    }

    /// Called once per loop iteration: no allocation, no lock. Honours the stall hook.
    pub fn beat(&self) {
        crate::panic_guard::frame_loop_test_panic();
        while STALL_UNTIL_MS.load(Ordering::Relaxed) > clock_ms() {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.last.store(clock_ms(), Ordering::Relaxed);
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        // A loop that ends by panicking did not end on purpose: it stays listed, its age
        // growing, so the watchdog sees a dead frame loop rather than none at all.
        if std::thread::panicking() {
            return;
        }
        LOOPS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(id, _, _)| *id != self.id);
    }
}

#[napi(object)]
pub struct LoopHealth {
    /// "present" (a KMS device) or "vblank" (virtual outputs).
    pub name: String,
    /// Milliseconds since the loop last went round; it wakes at least every 20 ms.
    pub age_ms: f64,
}

/// Every running frame loop and how long ago it last went round. Empty when none runs.
#[napi(catch_unwind)]
pub fn frame_loops() -> Vec<LoopHealth> {
    let now = clock_ms();
    LOOPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(_, name, last)| LoopHealth {
            name: (*name).to_owned(),
            age_ms: now.saturating_sub(last.load(Ordering::Relaxed)) as f64,
        })
        .collect()
}

/// Test and diagnosis hook: every frame loop stops going round for `ms` milliseconds (as a
/// deadlocked driver call would), so watchdog handling can be proven. Refused unless
/// MULTIHEAD_TEST_HOOKS=1 is set in the environment.
#[napi(catch_unwind)]
pub fn frame_loops_stall(ms: u32) -> napi::Result<()> {
    if std::env::var("MULTIHEAD_TEST_HOOKS").as_deref() != Ok("1") {
        return Err(napi::Error::from_reason(
            "ERR_TEST_HOOK: frameLoopsStall needs MULTIHEAD_TEST_HOOKS=1",
        ));
    }
    STALL_UNTIL_MS.store(clock_ms() + u64::from(ms), Ordering::Relaxed);
    Ok(())
}
