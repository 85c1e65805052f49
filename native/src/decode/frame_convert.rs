//! Turning a decoded FFmpeg frame into the packed NV12 the ring and the export pool hold, and
//! giving its buffers back. Kept apart from the session because it is the only place that
//! touches pixels on the CPU: what it costs per frame is what status reports as bytes copied per frame.

use ffmpeg::format::Pixel;
use ffmpeg_next as ffmpeg;

use super::nv12::yuv420p_to_nv12;

/// A swscale context with the format it converts from and the frame it converts into, kept
/// across frames so steady state makes no new one.
pub(super) type Scaler = (
    Pixel,
    ffmpeg::software::scaling::Context,
    ffmpeg::frame::Video,
);

/// Writes `frame` as packed NV12 into `out`, converting with swscale when it is neither
/// YUV420P nor NV12 (the scaler is made once per format and size). Returns bytes written.
pub(super) fn nv12_fill(
    scaler: &mut Option<Scaler>,
    source: &str,
    frame: &ffmpeg::frame::Video,
    out: &mut [u8],
) -> Result<usize, String> {
    let (width, height) = (frame.width() as usize, frame.height() as usize);
    match frame.format() {
        Pixel::YUV420P | Pixel::YUVJ420P => Ok(yuv420p_to_nv12(
            frame.data(0),
            frame.stride(0),
            frame.data(1),
            frame.stride(1),
            frame.data(2),
            frame.stride(2),
            width,
            height,
            out,
        )),
        Pixel::NV12 => Ok(nv12_copy(frame, width, height, out)),
        format => {
            let (w, h) = (frame.width(), frame.height());
            let fits = scaler
                .as_ref()
                .is_some_and(|(f, _, o)| *f == format && o.width() == w && o.height() == h);
            if !fits {
                let context = ffmpeg::software::scaling::Context::get(
                    format,
                    w,
                    h,
                    Pixel::NV12,
                    w,
                    h,
                    ffmpeg::software::scaling::Flags::BILINEAR,
                )
                .map_err(|e| format!("{source}: no conversion from {format:?}: {e}"))?;
                *scaler = Some((
                    format,
                    context,
                    ffmpeg::frame::Video::new(Pixel::NV12, w, h),
                ));
            }
            let (_, context, scaled) = scaler.as_mut().expect("set above");
            context
                .run(frame, scaled)
                .map_err(|e| format!("{source}: conversion failed: {e}"))?;
            Ok(nv12_copy(scaled, width, height, out))
        }
    }
}

/// Copies an FFmpeg NV12 frame (with strides) into a packed NV12 buffer.
fn nv12_copy(frame: &ffmpeg::frame::Video, width: usize, height: usize, out: &mut [u8]) -> usize {
    let (y, ys) = (frame.data(0), frame.stride(0));
    let (uv, uvs) = (frame.data(1), frame.stride(1));
    for row in 0..height {
        out[row * width..(row + 1) * width].copy_from_slice(&y[row * ys..row * ys + width]);
    }
    let uv_base = width * height;
    let row_bytes = width.div_ceil(2) * 2;
    for row in 0..height.div_ceil(2) {
        out[uv_base + row * row_bytes..uv_base + (row + 1) * row_bytes]
            .copy_from_slice(&uv[row * uvs..row * uvs + row_bytes]);
    }
    uv_base + height.div_ceil(2) * row_bytes
}

/// Gives a decoded frame back its buffers (the decoder's pool reuses them) and keeps the
/// empty AVFrame for the next decode.
pub(super) fn frame_recycle(frame: &mut ffmpeg::frame::Video) {
    unsafe { ffmpeg::ffi::av_frame_unref(frame.as_mut_ptr()) };
}
