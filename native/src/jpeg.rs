//! Preview JPEGs of what an output shows, encoded with the FFmpeg the addon already links
//! (swscale + libavcodec's MJPEG), so the box carries one FFmpeg and not a second one in
//! node-av only for previews. Off the frame path: a preview is taken once per interval, on a
//! libuv worker thread, from a copy of the frame on screen.

use ffmpeg::format::Pixel;
use ffmpeg_next as ffmpeg;
use std::sync::Arc;

use napi::bindgen_prelude::{AsyncTask, Buffer};
use napi::{Env, Task};
use napi_derive::napi;

use crate::panic_guard::Guarded;
use crate::preview_view::{view_check, view_compose, SnapshotView, View};

/// Larger than any mode a box drives; a bigger frame is a caller's mistake, not a screen.
const MAX_SIDE: u32 = 8192;

#[napi(object)]
pub struct JpegOptions {
    pub width: u32,
    pub height: u32,
    /// 'NV12' (packed: Y rows of `width`, then interleaved UV rows) or 'XR24' (B, G, R, X).
    pub format: String,
    /// Scaled to this width (height follows, both even); default the frame's width.
    pub out_width: Option<u32>,
    /// 1 (smallest) to 100 (best); default 80.
    pub quality: Option<u32>,
}

/// A preview of what an output shows: `snapshotJpeg` on a display.
#[napi(object)]
pub struct SnapshotJpegOptions {
    /// Scaled to this width (height follows, both even); default the output's width.
    pub out_width: Option<u32>,
    /// 1 (smallest) to 100 (best); default 80.
    pub quality: Option<u32>,
    /// What a viewer sees: the frame placed on the whole output (layout, rotation, bars).
    /// Default: the frame as decoded.
    pub view: Option<SnapshotView>,
}

#[napi(object)]
pub struct JpegPicture {
    pub jpeg: Buffer,
    pub width: u32,
    pub height: u32,
}

/// What one encode needs, checked before any FFmpeg call.
#[derive(Debug, Clone, PartialEq)]
struct JpegJob {
    format: Pixel,
    width: u32,
    height: u32,
    out_width: u32,
    out_height: u32,
    qscale: i32,
    /// Composed onto the output before scaling (previews); none: the frame itself.
    view: Option<View>,
}

fn bad(reason: String) -> String {
    format!("ERR_JPEG_BAD_ARGUMENT: {reason}")
}

/// The bytes a packed frame of this format and size holds.
fn frame_bytes(format: Pixel, width: u32, height: u32) -> usize {
    let (w, h) = (width as usize, height as usize);
    match format {
        Pixel::NV12 => w * h + w.div_ceil(2) * 2 * h.div_ceil(2),
        _ => w * h * 4,
    }
}

fn job_check(options: &JpegOptions, data_len: usize) -> Result<JpegJob, String> {
    job_make(
        &options.format,
        options.width,
        options.height,
        data_len,
        options.out_width,
        options.quality,
        None,
    )
}

fn job_make(
    format_name: &str,
    width: u32,
    height: u32,
    data_len: usize,
    out_width: Option<u32>,
    quality: Option<u32>,
    view: Option<&SnapshotView>,
) -> Result<JpegJob, String> {
    let format = match format_name {
        "NV12" => Pixel::NV12,
        "XR24" => Pixel::BGRZ,
        other => return Err(bad(format!("format {other:?} is not NV12 or XR24"))),
    };
    if !(2..=MAX_SIDE).contains(&width) || !(2..=MAX_SIDE).contains(&height) {
        return Err(bad(format!(
            "frame size {width}x{height} is outside 2x2..{MAX_SIDE}x{MAX_SIDE}"
        )));
    }
    let expected = frame_bytes(format, width, height);
    if data_len != expected {
        return Err(bad(format!(
            "{format_name} {width}x{height} needs {expected} bytes, got {data_len}"
        )));
    }
    let view = view
        .map(|v| view_check(v, width, height))
        .transpose()
        .map_err(bad)?;
    // A composed preview is the output's size, not the frame's.
    let (width_shown, height_shown) = view.as_ref().map_or((width, height), |v| v.output);
    let asked = out_width.unwrap_or(width_shown);
    if asked < 2 {
        return Err(bad(format!("outWidth {asked} is below 2")));
    }
    let quality = quality.unwrap_or(80);
    if !(1..=100).contains(&quality) {
        return Err(bad(format!("quality {quality} is outside 1..100")));
    }
    // Even sizes: the encoder works in 4:2:0. Never larger than the frame.
    let out_width = (asked.min(width_shown) & !1).max(2);
    let out_height =
        ((u64::from(height_shown) * u64::from(out_width) / u64::from(width_shown)) as u32 & !1)
            .max(2);
    // FFmpeg's scale: 2 (best) to 31 (worst), the way `-q:v` reads it.
    let qscale = 2 + ((100 - quality) * 29 + 49) / 99;
    Ok(JpegJob {
        format,
        width,
        height,
        out_width,
        out_height,
        qscale: qscale as i32,
        view,
    })
}

/// Copies a packed frame into an FFmpeg frame, whose rows may be padded.
fn frame_fill(job: &JpegJob, data: &[u8]) -> ffmpeg::frame::Video {
    let mut frame = ffmpeg::frame::Video::new(job.format, job.width, job.height);
    let (w, h) = (job.width as usize, job.height as usize);
    let planes: Vec<(usize, usize)> = match job.format {
        Pixel::NV12 => vec![(w, h), (w.div_ceil(2) * 2, h.div_ceil(2))],
        _ => vec![(w * 4, h)],
    };
    let mut offset = 0;
    for (plane, (row_bytes, rows)) in planes.into_iter().enumerate() {
        let stride = frame.stride(plane);
        let dst = frame.data_mut(plane);
        for row in 0..rows {
            dst[row * stride..row * stride + row_bytes]
                .copy_from_slice(&data[offset + row * row_bytes..offset + (row + 1) * row_bytes]);
        }
        offset += row_bytes * rows;
    }
    frame
}

fn jpeg_encode_run(job: &JpegJob, data: &[u8]) -> Result<Vec<u8>, String> {
    let failed = |what: &str, e: ffmpeg::Error| format!("ERR_JPEG_ENCODE: {what}: {e}");
    ffmpeg::init().map_err(|e| failed("FFmpeg init", e))?;
    // Errors reach the caller; FFmpeg's stderr chatter would bypass the structured log.
    ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Quiet);
    let mut source = frame_fill(job, data);
    if let Some(view) = &job.view {
        let small = view.scaled_to(job.out_width, job.out_height);
        source = view_compose(&source, &small).map_err(|e| failed("compose", e))?;
    }
    let mut scaled = ffmpeg::frame::Video::new(Pixel::YUVJ420P, job.out_width, job.out_height);
    ffmpeg::software::scaling::Context::get(
        source.format(),
        source.width(),
        source.height(),
        Pixel::YUVJ420P,
        job.out_width,
        job.out_height,
        ffmpeg::software::scaling::Flags::BILINEAR,
    )
    .map_err(|e| failed("scaler", e))?
    .run(&source, &mut scaled)
    .map_err(|e| failed("scale", e))?;

    let codec = ffmpeg::encoder::find(ffmpeg::codec::Id::MJPEG)
        .ok_or_else(|| "ERR_JPEG_ENCODE: this FFmpeg has no MJPEG encoder".to_owned())?;
    let mut context = ffmpeg::codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| failed("encoder", e))?;
    context.set_width(job.out_width);
    context.set_height(job.out_height);
    context.set_format(Pixel::YUVJ420P);
    context.set_time_base((1, 1));
    context.set_flags(ffmpeg::codec::Flags::QSCALE);
    // A fixed quantiser: FFmpeg reads it from the frame (in lambda units), as `-q:v` does.
    let lambda = job.qscale * ffmpeg::ffi::FF_QP2LAMBDA;
    context.set_global_quality(lambda);
    let mut encoder = context.open_as(codec).map_err(|e| failed("open", e))?;
    // SAFETY: `scaled` owns its AVFrame; `quality` is a plain field the encoder reads.
    unsafe { (*scaled.as_mut_ptr()).quality = lambda };
    scaled.set_pts(Some(0));
    encoder.send_frame(&scaled).map_err(|e| failed("send", e))?;
    encoder.send_eof().map_err(|e| failed("flush", e))?;
    let mut packet = ffmpeg::Packet::empty();
    encoder
        .receive_packet(&mut packet)
        .map_err(|e| failed("receive", e))?;
    packet
        .data()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "ERR_JPEG_ENCODE: the encoder returned no picture".to_owned())
}

/// The pixels to encode: a copy, or the display's own scanout held (not copied) while encoding.
pub enum JpegData {
    Owned(Vec<u8>),
    Shared(Arc<Vec<u8>>),
}

impl JpegData {
    fn as_slice(&self) -> &[u8] {
        match self {
            JpegData::Owned(v) => v,
            JpegData::Shared(v) => v,
        }
    }
}

/// One encode on a libuv worker thread; no job resolves to null (nothing on screen yet).
pub struct JpegTask {
    job: Option<(JpegJob, JpegData)>,
}

impl Task for JpegTask {
    type Output = Option<(Vec<u8>, u32, u32)>;
    type JsValue = Option<JpegPicture>;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let Some((job, data)) = &self.job else {
            return Ok(None);
        };
        let jpeg = jpeg_encode_run(job, data.as_slice()).map_err(napi::Error::from_reason)?;
        Ok(Some((jpeg, job.out_width, job.out_height)))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(output.map(|(jpeg, width, height)| JpegPicture {
            jpeg: jpeg.into(),
            width,
            height,
        }))
    }
}

/// The frame an output shows, as the display hands it over for a preview.
pub struct ShownFrame {
    pub data: JpegData,
    pub width: u32,
    pub height: u32,
    /// "NV12" or "XR24"; any other format is refused by name.
    pub format: String,
}

/// `snapshotJpeg` of a display: the shown frame (or none yet) encoded on a worker thread.
pub fn snapshot_jpeg_task(
    shown: Option<ShownFrame>,
    options: &SnapshotJpegOptions,
) -> napi::Result<AsyncTask<Guarded<JpegTask>>> {
    let job = match shown {
        None => None,
        Some(f) => {
            let job = job_make(
                &f.format,
                f.width,
                f.height,
                f.data.as_slice().len(),
                options.out_width,
                options.quality,
                options.view.as_ref(),
            )
            .map_err(napi::Error::from_reason)?;
            Some((job, f.data))
        }
    };
    Ok(AsyncTask::new(Guarded(JpegTask { job })))
}

/// Encodes a frame (a copy: the caller may reuse its buffer at once) as a JPEG on a worker
/// thread. Bad arguments throw `ERR_JPEG_BAD_ARGUMENT` naming what was wrong.
#[napi(ts_return_type = "Promise<JpegPicture>", catch_unwind)]
pub fn jpeg_encode(
    data: &[u8],
    options: JpegOptions,
) -> napi::Result<AsyncTask<Guarded<JpegTask>>> {
    let job = job_check(&options, data.len()).map_err(napi::Error::from_reason)?;
    Ok(AsyncTask::new(Guarded(JpegTask {
        job: Some((job, JpegData::Owned(data.to_vec()))),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(format: &str, width: u32, height: u32) -> JpegOptions {
        JpegOptions {
            width,
            height,
            format: format.to_owned(),
            out_width: None,
            quality: None,
        }
    }

    #[test]
    fn job_check_names_what_is_wrong() {
        let nv12 = frame_bytes(Pixel::NV12, 64, 36);
        assert_eq!(nv12, 64 * 36 * 3 / 2);
        let err = job_check(&options("NV12", 64, 36), nv12 - 1).unwrap_err();
        assert!(err.contains("needs 3456 bytes, got 3455"), "{err}");
        let err = job_check(&options("RGB", 64, 36), nv12).unwrap_err();
        assert!(
            err.starts_with("ERR_JPEG_BAD_ARGUMENT: format \"RGB\""),
            "{err}"
        );
        let err = job_check(&options("XR24", 0, 36), 0).unwrap_err();
        assert!(err.contains("frame size 0x36"), "{err}");
        let mut o = options("XR24", 64, 36);
        o.quality = Some(0);
        assert!(job_check(&o, 64 * 36 * 4)
            .unwrap_err()
            .contains("quality 0"));
    }

    #[test]
    fn job_check_scales_to_even_sizes_never_up() {
        let mut o = options("NV12", 63, 35);
        o.out_width = Some(1000);
        let job = job_check(&o, frame_bytes(Pixel::NV12, 63, 35)).unwrap();
        assert_eq!((job.out_width, job.out_height), (62, 34));
        o.out_width = Some(31);
        let job = job_check(&o, frame_bytes(Pixel::NV12, 63, 35)).unwrap();
        assert_eq!((job.out_width, job.out_height), (30, 16));
        o.quality = Some(100);
        assert_eq!(
            job_check(&o, frame_bytes(Pixel::NV12, 63, 35))
                .unwrap()
                .qscale,
            2
        );
        o.quality = Some(1);
        assert_eq!(
            job_check(&o, frame_bytes(Pixel::NV12, 63, 35))
                .unwrap()
                .qscale,
            31
        );
    }

    #[test]
    fn jpeg_encode_run_writes_a_jpeg_of_the_scaled_size() {
        let mut o = options("XR24", 64, 36);
        o.out_width = Some(32);
        let job = job_check(&o, 64 * 36 * 4).unwrap();
        let jpeg = jpeg_encode_run(&job, &vec![0x80; 64 * 36 * 4]).unwrap();
        assert_eq!(&jpeg[..2], &[0xff, 0xd8]);
        assert_eq!(&jpeg[jpeg.len() - 2..], &[0xff, 0xd9]);
    }
}
