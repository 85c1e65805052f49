//! A Rust panic must never take Node down with it. Entry points called from JavaScript carry
//! `#[napi(catch_unwind)]`, so a panic there becomes a thrown JS error; the release profile
//! unwinds (Cargo.toml), so a panic on a native thread (presentation, vblank clock, decoder)
//! ends that thread only. Such a thread cannot throw to anyone, so the hook installed here
//! remembers it for `nativePanics()`, and its frame loop stays listed (stale) in `frameLoops()`
//! so the supervisor's watchdog sees it stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use napi_derive::napi;

/// The newest panics kept; older ones are counted only.
const KEPT: usize = 16;

static PANICS: Mutex<Vec<NativePanic>> = Mutex::new(Vec::new());
/// Test hook: the next frame loop iteration panics (see `Heartbeat::beat`).
static PANIC_NEXT_BEAT: AtomicBool = AtomicBool::new(false);

#[napi(object)]
#[derive(Clone)]
pub struct NativePanic {
    /// The panicking thread's name, e.g. "multihead-present" or "main".
    pub thread: String,
    pub message: String,
    /// file:line of the panic.
    pub location: Option<String>,
}

/// Runs when the addon is loaded, before any native thread exists.
#[napi_derive::module_init]
fn panic_hook_install() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| {
                info.payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
            })
            .unwrap_or_else(|| "panic with a non-string payload".to_owned());
        let record = NativePanic {
            thread: std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_owned(),
            message,
            location: info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line())),
        };
        // try_lock: a panic while this very lock is held must not deadlock the hook.
        if let Ok(mut panics) = PANICS.try_lock() {
            if panics.len() == KEPT {
                panics.remove(0);
            }
            panics.push(record);
        }
        // Still on stderr (the journal), with the backtrace setting honoured.
        previous(info);
    }));
}

/// Panics seen in this process (newest last, at most 16), on any thread: those on JavaScript
/// calls were also thrown as errors; those on native threads ended that thread.
#[napi(catch_unwind)]
pub fn native_panics() -> Vec<NativePanic> {
    PANICS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn test_hooks_enabled(name: &str) -> napi::Result<()> {
    if std::env::var("MULTIHEAD_TEST_HOOKS").as_deref() != Ok("1") {
        return Err(napi::Error::from_reason(format!(
            "ERR_TEST_HOOK: {name} needs MULTIHEAD_TEST_HOOKS=1"
        )));
    }
    Ok(())
}

/// Test hook (MULTIHEAD_TEST_HOOKS=1): provokes a panic so tests can prove the process
/// survives. `"call"` panics inside this call (it throws); `"frameLoop"` makes the next
/// iteration of a running frame loop (presentation thread or virtual vblank clock) panic.
#[napi(catch_unwind)]
pub fn panic_for_test(target: String) -> napi::Result<()> {
    test_hooks_enabled("panicForTest")?;
    match target.as_str() {
        "call" => panic!("panicForTest: a panic provoked through the API"),
        "frameLoop" => {
            PANIC_NEXT_BEAT.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => Err(napi::Error::from_reason(format!(
            "ERR_TEST_HOOK: panicForTest target {other:?} is not \"call\" or \"frameLoop\""
        ))),
    }
}

/// Called by frame loops once per iteration: one relaxed load, no allocation.
pub fn frame_loop_test_panic() {
    if PANIC_NEXT_BEAT.load(Ordering::Relaxed) && PANIC_NEXT_BEAT.swap(false, Ordering::Relaxed) {
        panic!("panicForTest: a frame loop panic provoked through the API");
    }
}

/// For work napi-rs runs outside an entry point (an `AsyncTask`'s `compute` on a libuv worker
/// thread): a panic there would unwind into C and abort, so it becomes an error instead.
pub fn unwind_to_error<T>(f: impl FnOnce() -> napi::Result<T>) -> napi::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panic with a non-string payload".to_owned());
        Err(napi::Error::from_reason(format!(
            "ERR_NATIVE_PANIC: {message}"
        )))
    })
}

/// An `AsyncTask` whose `compute` (run by libuv on a worker thread, outside any entry point)
/// turns a panic into a rejected promise instead of unwinding into C, which would abort.
pub struct Guarded<T>(pub T);

impl<T: napi::Task> napi::Task for Guarded<T> {
    type Output = T::Output;
    type JsValue = T::JsValue;

    fn compute(&mut self) -> napi::Result<T::Output> {
        unwind_to_error(|| self.0.compute())
    }

    fn resolve(&mut self, env: napi::Env, output: T::Output) -> napi::Result<T::JsValue> {
        self.0.resolve(env, output)
    }

    fn reject(&mut self, env: napi::Env, err: napi::Error) -> napi::Result<T::JsValue> {
        self.0.reject(env, err)
    }

    fn finally(self, env: napi::Env) -> napi::Result<()> {
        self.0.finally(env)
    }
}
