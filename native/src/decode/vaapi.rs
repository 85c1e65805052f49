//! VAAPI hardware decode on the render node of the KMS device. Everything here either sets a
//! codec context up for VAAPI or says, in one sentence, why it cannot; the decoder then decodes
//! in software and reports that sentence once.
//!
//! Not proven on hardware: the machines this was written on have no GPU. The path is the one
//! mpv and Kodi use (hw_device_ctx + get_format, frames mapped to DRM PRIME, which syncs the
//! surface with vaSyncSurface before returning), and the engine side of it (PRIME import, frame
//! claims until flipped away) is exercised with udmabuf exports on vkms.

use std::ffi::CString;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ffmpeg_next::ffi;

use super::prime::from_drm_frame;
use crate::dmabuf::PrimeFrame;

/// Where VAAPI opens its display: "auto" picks the first render node.
static DEVICE: Mutex<Option<String>> = Mutex::new(None);

/// Set by the supervisor from the KMS device it drives (its render node), or from config.
pub fn vaapi_device_set(path: Option<String>) {
    *DEVICE.lock().unwrap_or_else(|p| p.into_inner()) = path;
}

fn vaapi_device_path() -> Result<String, String> {
    if let Some(path) = DEVICE.lock().unwrap_or_else(|p| p.into_inner()).clone() {
        return Ok(path);
    }
    let mut nodes: Vec<String> = std::fs::read_dir("/dev/dri")
        .map_err(|_| "no /dev/dri on this machine".to_owned())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("renderD"))
        .collect();
    nodes.sort();
    nodes
        .first()
        .map(|n| format!("/dev/dri/{n}"))
        .ok_or_else(|| "no render node under /dev/dri".to_owned())
}

/// A VAAPI device context (AVBufferRef) that codec contexts reference.
pub struct VaapiDevice {
    device: *mut ffi::AVBufferRef,
    pub path: String,
}

unsafe impl Send for VaapiDevice {}

impl Drop for VaapiDevice {
    fn drop(&mut self) {
        unsafe { ffi::av_buffer_unref(&mut self.device) };
    }
}

impl VaapiDevice {
    pub fn open() -> Result<VaapiDevice, String> {
        let path = vaapi_device_path()?;
        if !Path::new(&path).exists() {
            return Err(format!("{path} does not exist"));
        }
        let c_path = CString::new(path.clone()).map_err(|_| format!("{path:?} is not a path"))?;
        let mut device = std::ptr::null_mut();
        let rc = unsafe {
            ffi::av_hwdevice_ctx_create(
                &mut device,
                ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_VAAPI,
                c_path.as_ptr(),
                std::ptr::null_mut(),
                0,
            )
        };
        if rc < 0 {
            return Err(format!("VAAPI on {path}: {}", ffmpeg_next::Error::from(rc)));
        }
        Ok(VaapiDevice { device, path })
    }

    /// Makes `context` decode on this device. Returns why not, if the codec has no VAAPI
    /// decoder in this FFmpeg. `extra_frames` surfaces are added to the decoder's own pool so
    /// that outputs can hold frames on screen while decoding goes on.
    ///
    /// # Safety
    /// `context` must be an unopened decoder context; `state` must outlive it.
    pub unsafe fn attach(
        &self,
        context: *mut ffi::AVCodecContext,
        state: &HwState,
        extra_frames: i32,
    ) -> Result<(), String> {
        let codec = unsafe { (*context).codec };
        let codec = if codec.is_null() {
            unsafe { ffi::avcodec_find_decoder((*context).codec_id) }
        } else {
            codec
        };
        if codec.is_null() {
            return Err("no decoder for this stream".into());
        }
        let mut supported = false;
        for i in 0.. {
            let config = unsafe { ffi::avcodec_get_hw_config(codec, i) };
            if config.is_null() {
                break;
            }
            let config = unsafe { &*config };
            if config.device_type == ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_VAAPI
                && config.methods & ffi::AV_CODEC_HW_CONFIG_METHOD_HW_DEVICE_CTX as i32 != 0
            {
                supported = true;
                break;
            }
        }
        if !supported {
            let name = unsafe { std::ffi::CStr::from_ptr((*codec).name) };
            return Err(format!(
                "FFmpeg has no VAAPI decoding for {}",
                name.to_string_lossy()
            ));
        }
        unsafe {
            (*context).hw_device_ctx = ffi::av_buffer_ref(self.device);
            (*context).opaque = state as *const HwState as *mut libc::c_void;
            (*context).get_format = Some(format_pick);
            (*context).extra_hw_frames = extra_frames;
        }
        Ok(())
    }
}

/// What get_format saw, read by the decoder after frames arrive.
#[derive(Default)]
pub struct HwState {
    /// The driver refused this stream (profile or size): FFmpeg decodes it in software.
    pub refused: AtomicBool,
}

/// FFmpeg's get_format callback: VAAPI when offered, else the first software format. Choosing
/// software here is FFmpeg's own in-place fallback (same context, same position).
unsafe extern "C" fn format_pick(
    context: *mut ffi::AVCodecContext,
    formats: *const ffi::AVPixelFormat,
) -> ffi::AVPixelFormat {
    let mut at = formats;
    let mut first_software = ffi::AVPixelFormat::AV_PIX_FMT_NONE;
    unsafe {
        while *at != ffi::AVPixelFormat::AV_PIX_FMT_NONE {
            if *at == ffi::AVPixelFormat::AV_PIX_FMT_VAAPI {
                return *at;
            }
            if first_software == ffi::AVPixelFormat::AV_PIX_FMT_NONE {
                let desc = ffi::av_pix_fmt_desc_get(*at);
                if !desc.is_null() && (*desc).flags & ffi::AV_PIX_FMT_FLAG_HWACCEL as u64 == 0 {
                    first_software = *at;
                }
            }
            at = at.add(1);
        }
        let state = (*context).opaque as *const HwState;
        if !state.is_null() {
            (*state).refused.store(true, Ordering::Relaxed);
        }
    }
    first_software
}

/// Maps a decoded VAAPI frame to DRM PRIME (FFmpeg syncs the surface first) and returns it as
/// a frame the engine can import.
///
/// # Safety
/// `frame` must be a valid decoded AVFrame of format AV_PIX_FMT_VAAPI.
pub unsafe fn vaapi_export(
    frame: *const ffi::AVFrame,
    claims: &Arc<AtomicUsize>,
) -> Result<PrimeFrame, String> {
    let mut mapped = unsafe { ffi::av_frame_alloc() };
    if mapped.is_null() {
        return Err("out of memory mapping a VAAPI frame".into());
    }
    unsafe { (*mapped).format = ffi::AVPixelFormat::AV_PIX_FMT_DRM_PRIME as i32 };
    let rc = unsafe { ffi::av_hwframe_map(mapped, frame, ffi::AV_HWFRAME_MAP_READ as i32) };
    if rc < 0 {
        unsafe { ffi::av_frame_free(&mut mapped) };
        return Err(format!(
            "mapping a VAAPI frame to DRM PRIME: {}",
            ffmpeg_next::Error::from(rc)
        ));
    }
    unsafe { from_drm_frame(mapped, claims) }
}
