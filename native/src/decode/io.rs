//! Opening a source so that no FFmpeg call can hold a decoder thread forever: every blocking
//! read goes through an interrupt callback (`AVIOInterruptCB`) that answers "stop" when the
//! decoder is told to stop or when the current operation passed its deadline, and network
//! protocols get `rw_timeout` so a server that accepts and then sends nothing is given up on.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ffmpeg_next as ffmpeg;
use ffmpeg_next::ffi;

use super::pattern::{Pattern, PatternIo};
use super::policy::{self, SourceKind};

/// One read or write on a network source that waits longer than this fails (FFmpeg's
/// `rw_timeout`): the server stalled.
pub const RW_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one `av_read_frame` may take in all (an HLS segment switch opens connections
/// inside it): the backstop behind `RW_TIMEOUT` for protocols that do not honour it.
pub const READ_DEADLINE: Duration = Duration::from_secs(12);
/// How long opening and probing a source may take.
pub const OPEN_DEADLINE: Duration = Duration::from_secs(20);

/// Shared by the decoder thread (which arms deadlines) and whoever stops it; FFmpeg polls it
/// through `callback` while it waits on I/O.
pub struct IoGuard {
    pub stop: AtomicBool,
    epoch: Instant,
    /// Milliseconds after `epoch` when the current operation gives up; 0: no deadline.
    deadline_ms: AtomicU64,
    /// The callback cut an operation short because of its deadline (not a stop).
    expired: AtomicBool,
}

impl Default for IoGuard {
    fn default() -> IoGuard {
        IoGuard {
            stop: AtomicBool::new(false),
            epoch: Instant::now(),
            deadline_ms: AtomicU64::new(0),
            expired: AtomicBool::new(false),
        }
    }
}

impl IoGuard {
    /// The next blocking operation must end within `within`.
    pub fn arm(&self, within: Duration) {
        let at = self.epoch.elapsed() + within;
        self.expired.store(false, Ordering::Relaxed);
        self.deadline_ms
            .store((at.as_millis() as u64).max(1), Ordering::Relaxed);
    }

    /// No deadline: the thread is pacing, not reading.
    pub fn disarm(&self) {
        self.deadline_ms.store(0, Ordering::Relaxed);
    }

    /// Whether the last operation was cut short by its deadline.
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::Relaxed)
    }

    fn interrupted(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return true;
        }
        let deadline = self.deadline_ms.load(Ordering::Relaxed);
        if deadline != 0 && self.epoch.elapsed().as_millis() as u64 >= deadline {
            self.expired.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }
}

/// FFmpeg's interrupt callback: non-zero aborts the blocking call in progress.
unsafe extern "C" fn callback(opaque: *mut libc::c_void) -> libc::c_int {
    // `opaque` is the IoGuard of the decoder that owns this format context; it outlives the
    // context (see `input_open`).
    let guard = unsafe { &*(opaque as *const IoGuard) };
    libc::c_int::from(guard.interrupted())
}

/// What `input_open` opened: the input, and for a `pattern:` source the I/O context behind
/// it, which must outlive the input (keep it in a field declared after the input's).
pub type Opened = (
    ffmpeg::format::context::Input,
    Option<super::pattern::PatternIo>,
);

/// Opens `source` (already classified as `kind`) with the policy's whitelists, `rw_timeout`
/// for network sources and `guard` as the interrupt callback, and probes its streams.
///
/// # Safety
/// `guard` must outlive the returned context: FFmpeg calls back into it on every blocking read.
pub unsafe fn input_open(
    source: &str,
    kind: SourceKind,
    guard: &IoGuard,
) -> Result<Opened, String> {
    let mut options = policy::open_options(kind);
    // A pattern is read from the addon's own I/O context, cut into frames by `rawvideo`.
    let mut pattern_io = None;
    let (url, format) = match (kind, source.strip_prefix("lavfi:")) {
        (SourceKind::Pattern, _) => {
            let pattern = Pattern::parse(source)?;
            pattern_io = Some(PatternIo::new(&pattern)?);
            options = pattern.demuxer_options();
            let rawvideo = unsafe { ffi::av_find_input_format(c"rawvideo".as_ptr()) };
            if rawvideo.is_null() {
                return Err("this FFmpeg has no rawvideo demuxer".into());
            }
            ("pattern", rawvideo)
        }
        (SourceKind::Generated, Some(graph)) => {
            lavfi_register()?;
            let lavfi = unsafe { ffi::av_find_input_format(c"lavfi".as_ptr()) };
            if lavfi.is_null() {
                return Err("this FFmpeg has no lavfi device".into());
            }
            (graph, lavfi)
        }
        _ => (source, std::ptr::null()),
    };
    let url = CString::new(url).map_err(|_| "a NUL byte in the source".to_owned())?;
    if matches!(kind, SourceKind::Http | SourceKind::Rtsp) {
        options.set("rw_timeout", &RW_TIMEOUT.as_micros().to_string());
    }
    guard.arm(OPEN_DEADLINE);
    let mut context = unsafe { ffi::avformat_alloc_context() };
    if context.is_null() {
        return Err("out of memory".into());
    }
    unsafe {
        (*context).interrupt_callback = ffi::AVIOInterruptCB {
            callback: Some(callback),
            opaque: guard as *const IoGuard as *mut libc::c_void,
        };
        if let Some(io) = &pattern_io {
            (*context).pb = io.avio();
        }
    }
    let mut raw_options = options.disown();
    // On failure avformat_open_input frees the context itself (not a pattern's I/O context:
    // `pattern_io` does, when it goes out of scope).
    let rc =
        unsafe { ffi::avformat_open_input(&mut context, url.as_ptr(), format, &mut raw_options) };
    unsafe { ffmpeg::Dictionary::own(raw_options) };
    if rc < 0 {
        guard.disarm();
        return Err(open_failure(rc, guard));
    }
    let rc = unsafe { ffi::avformat_find_stream_info(context, std::ptr::null_mut()) };
    guard.disarm();
    if rc < 0 {
        unsafe { ffi::avformat_close_input(&mut context) };
        return Err(open_failure(rc, guard));
    }
    Ok((
        unsafe { ffmpeg::format::context::Input::wrap(context) },
        pattern_io,
    ))
}

/// Registers libavdevice's inputs (lavfi among them) the first time a `lavfi:` source is
/// opened. The addon does not link libavdevice: it and libavfilter pull in most of FFmpeg's
/// optional libraries, and the box needs neither (its pictures are `pattern:` sources). Where
/// FFmpeg's full set is installed (a development machine, the tests' host), it is loaded here;
/// its major version is libavformat's in every FFmpeg since 5.
fn lavfi_register() -> Result<(), String> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let major = unsafe { ffi::avformat_version() } >> 16;
            let name = CString::new(format!("libavdevice.so.{major}")).expect("no NUL");
            // Never closed: FFmpeg keeps pointers into it once its devices are registered.
            let lib = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if lib.is_null() {
                return Err(format!(
                    "lavfi: sources need {} (FFmpeg's libavdevice), which is not installed",
                    name.to_string_lossy()
                ));
            }
            let register = unsafe { libc::dlsym(lib, c"avdevice_register_all".as_ptr()) };
            if register.is_null() {
                return Err("libavdevice has no avdevice_register_all".into());
            }
            // SAFETY: FFmpeg's `void avdevice_register_all(void)`.
            let register: unsafe extern "C" fn() = unsafe { std::mem::transmute(register) };
            unsafe { register() };
            Ok(())
        })
        .clone()
}

fn open_failure(rc: i32, guard: &IoGuard) -> String {
    if guard.expired() {
        format!("no answer within {} s", OPEN_DEADLINE.as_secs())
    } else {
        ffmpeg::Error::from(rc).to_string()
    }
}

/// Whether the source can seek back to its start: false for lavfi graphs, pipes, HTTP servers
/// without Range support and live streams. Those loop by opening the source again.
pub fn seekable(input: &ffmpeg::format::context::Input) -> bool {
    let pb = unsafe { (*input.as_ptr()).pb };
    !pb.is_null() && unsafe { (*pb).seekable } != 0
}

/// The I/O error behind an end of stream, if there was one: FFmpeg's demuxers report a
/// failed read (a timeout, a reset) as the end of the stream and leave the error on the
/// AVIOContext.
pub fn io_error(input: &ffmpeg::format::context::Input) -> Option<i32> {
    let pb = unsafe { (*input.as_ptr()).pb };
    if pb.is_null() {
        return None;
    }
    let error = unsafe { (*pb).error };
    (error < 0 && error != ffi::AVERROR_EOF).then_some(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_interrupts_once_it_passes_and_says_so() {
        let guard = IoGuard::default();
        assert!(!guard.interrupted(), "no deadline: never");
        guard.arm(Duration::from_millis(30));
        assert!(!guard.interrupted());
        std::thread::sleep(Duration::from_millis(40));
        assert!(guard.interrupted());
        assert!(guard.expired());
        guard.disarm();
        assert!(!guard.interrupted(), "disarmed while pacing");
        guard.arm(Duration::from_secs(60));
        assert!(!guard.expired(), "a new deadline clears the old verdict");
    }

    #[test]
    fn stop_interrupts_at_once_and_is_not_a_deadline() {
        let guard = IoGuard::default();
        guard.arm(Duration::from_secs(60));
        guard.stop.store(true, Ordering::Relaxed);
        assert!(guard.interrupted());
        assert!(!guard.expired());
    }
}
