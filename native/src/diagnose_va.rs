//! VAAPI profiles and entrypoints of a render node, for `multihead diagnose`.
//!
//! libva is opened with dlopen rather than through FFmpeg's hwcontext: FFmpeg can open a
//! VAAPI device but has no call that lists profiles and entrypoints (that needs
//! vaQueryConfigProfiles/vaQueryConfigEntrypoints on the VADisplay anyway), and linking libva
//! at build time would make the addon refuse to load on a box without it. With dlopen, a box
//! without libva still diagnoses, and says "libva.so.2 not installed".

use std::ffi::{c_char, c_int, c_void, CStr};
use std::os::fd::AsRawFd;
use std::path::Path;

type VaDisplay = *mut c_void;
type VaStatus = c_int;
type VaMessageCallback = extern "C" fn(*mut c_void, *const c_char);

pub struct VaProfile {
    /// libva's name without the prefix, e.g. "H264High", "HEVCMain10".
    pub profile: String,
    /// e.g. "VLD" (decode), "EncSlice", "VideoProc".
    pub entrypoints: Vec<String>,
}

pub struct VaReport {
    pub vendor: String,
    pub profiles: Vec<VaProfile>,
}

/// Functions resolved from libva.so.2 and libva-drm.so.2; the libraries stay loaded (they
/// register nothing that unloading would clean up safely).
struct Libva {
    get_display_drm: unsafe extern "C" fn(c_int) -> VaDisplay,
    initialize: unsafe extern "C" fn(VaDisplay, *mut c_int, *mut c_int) -> VaStatus,
    terminate: unsafe extern "C" fn(VaDisplay) -> VaStatus,
    vendor: unsafe extern "C" fn(VaDisplay) -> *const c_char,
    max_profiles: unsafe extern "C" fn(VaDisplay) -> c_int,
    profiles: unsafe extern "C" fn(VaDisplay, *mut c_int, *mut c_int) -> VaStatus,
    max_entrypoints: unsafe extern "C" fn(VaDisplay) -> c_int,
    entrypoints: unsafe extern "C" fn(VaDisplay, c_int, *mut c_int, *mut c_int) -> VaStatus,
    profile_str: unsafe extern "C" fn(c_int) -> *const c_char,
    entrypoint_str: unsafe extern "C" fn(c_int) -> *const c_char,
    error_str: unsafe extern "C" fn(VaStatus) -> *const c_char,
    set_info_callback:
        unsafe extern "C" fn(VaDisplay, VaMessageCallback, *mut c_void) -> VaMessageCallback,
    set_error_callback:
        unsafe extern "C" fn(VaDisplay, VaMessageCallback, *mut c_void) -> VaMessageCallback,
}

extern "C" fn quiet(_: *mut c_void, _: *const c_char) {}

fn dl_open(name: &CStr) -> Result<*mut c_void, String> {
    // SAFETY: dlopen with a NUL-terminated name; the handle is never closed.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(format!("{} not installed", name.to_string_lossy()));
    }
    Ok(handle)
}

/// # Safety
/// `T` must be the C function pointer type of `name` in that library.
unsafe fn dl_sym<T: Copy>(handle: *mut c_void, name: &CStr) -> Result<T, String> {
    let sym = unsafe { libc::dlsym(handle, name.as_ptr()) };
    if sym.is_null() {
        return Err(format!("libva lacks {}", name.to_string_lossy()));
    }
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&sym) })
}

impl Libva {
    fn load() -> Result<Libva, String> {
        let va = dl_open(c"libva.so.2")?;
        let drm = dl_open(c"libva-drm.so.2")?;
        // SAFETY: each type matches libva 2.x's prototype (va.h, va_drm.h, va_str.h).
        unsafe {
            Ok(Libva {
                get_display_drm: dl_sym(drm, c"vaGetDisplayDRM")?,
                initialize: dl_sym(va, c"vaInitialize")?,
                terminate: dl_sym(va, c"vaTerminate")?,
                vendor: dl_sym(va, c"vaQueryVendorString")?,
                max_profiles: dl_sym(va, c"vaMaxNumProfiles")?,
                profiles: dl_sym(va, c"vaQueryConfigProfiles")?,
                max_entrypoints: dl_sym(va, c"vaMaxNumEntrypoints")?,
                entrypoints: dl_sym(va, c"vaQueryConfigEntrypoints")?,
                profile_str: dl_sym(va, c"vaProfileStr")?,
                entrypoint_str: dl_sym(va, c"vaEntrypointStr")?,
                error_str: dl_sym(va, c"vaErrorStr")?,
                set_info_callback: dl_sym(va, c"vaSetInfoCallback")?,
                set_error_callback: dl_sym(va, c"vaSetErrorCallback")?,
            })
        }
    }
}

fn text(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: libva returns static NUL-terminated strings.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// Opens `render_node`, initialises libva on it and lists what its driver offers.
pub fn va_query(render_node: &Path) -> Result<VaReport, String> {
    let lib = Libva::load()?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(render_node)
        .map_err(|e| format!("{}: cannot open: {e}", render_node.display()))?;
    // SAFETY: libva calls on a display made from a descriptor that outlives it; terminated
    // before `file` closes. Buffers are sized by vaMaxNum*.
    unsafe {
        let display = (lib.get_display_drm)(file.as_raw_fd());
        if display.is_null() {
            return Err("vaGetDisplayDRM returned no display".into());
        }
        // libva prints "libva info: ..." lines on stderr; the report says it all instead.
        (lib.set_info_callback)(display, quiet, std::ptr::null_mut());
        (lib.set_error_callback)(display, quiet, std::ptr::null_mut());
        let (mut major, mut minor) = (0, 0);
        let status = (lib.initialize)(display, &mut major, &mut minor);
        if status != 0 {
            (lib.terminate)(display);
            return Err(format!(
                "vaInitialize failed: {} (no VAAPI driver for this GPU?)",
                text((lib.error_str)(status))
            ));
        }
        let report = va_list(&lib, display);
        (lib.terminate)(display);
        Ok(report)
    }
}

unsafe fn va_list(lib: &Libva, display: VaDisplay) -> VaReport {
    let vendor = text(unsafe { (lib.vendor)(display) });
    let max = unsafe { (lib.max_profiles)(display) }.max(0) as usize;
    let mut ids = vec![0 as c_int; max];
    let mut count: c_int = 0;
    if unsafe { (lib.profiles)(display, ids.as_mut_ptr(), &mut count) } != 0 {
        count = 0;
    }
    ids.truncate((count.max(0) as usize).min(max));
    let max_entry = unsafe { (lib.max_entrypoints)(display) }.max(0) as usize;
    let profiles = ids
        .into_iter()
        .map(|id| {
            let mut entries = vec![0 as c_int; max_entry];
            let mut n: c_int = 0;
            if unsafe { (lib.entrypoints)(display, id, entries.as_mut_ptr(), &mut n) } != 0 {
                n = 0;
            }
            entries.truncate((n.max(0) as usize).min(max_entry));
            let name = text(unsafe { (lib.profile_str)(id) });
            VaProfile {
                profile: name.strip_prefix("VAProfile").unwrap_or(&name).to_owned(),
                entrypoints: entries
                    .into_iter()
                    .map(|e| {
                        let s = text(unsafe { (lib.entrypoint_str)(e) });
                        s.strip_prefix("VAEntrypoint").unwrap_or(&s).to_owned()
                    })
                    .collect(),
            }
        })
        .collect();
    VaReport { vendor, profiles }
}
