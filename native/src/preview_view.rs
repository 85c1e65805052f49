//! A preview shows what a viewer sees, not the decoded frame: the placement a plane is given
//! (source crop, destination, rotation) with the bars' colour around it, composed on the CPU
//! off the frame path (once per preview) so virtual outputs and KMS previews match the screen.

use ffmpeg::format::Pixel;
use ffmpeg_next as ffmpeg;
use napi_derive::napi;

#[napi(object)]
#[derive(Clone, Debug, PartialEq)]
pub struct ViewRect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Where the frame lands on its output, as the layout computed it for the plane.
#[napi(object)]
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotView {
    pub output_width: u32,
    pub output_height: u32,
    /// Frame pixels shown.
    pub src: ViewRect,
    /// Where, in the output's own (unrotated) pixels.
    pub dst: ViewRect,
    /// Degrees the picture is turned clockwise: 0, 90, 180 or 270.
    pub rotation: u32,
    /// The output outside `dst`, `RRGGBB`.
    pub background: String,
}

/// A checked view: every rectangle inside its frame, even where 4:2:0 needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub output: (u32, u32),
    pub src: (u32, u32, u32, u32),
    pub dst: (u32, u32, u32, u32),
    pub rotation: u32,
    /// Full-range BT.601 Y, Cb, Cr of the background (the JPEG's own colour space).
    pub background: [u8; 3],
}

fn even_down(v: u32) -> u32 {
    v & !1
}

/// Whether `r` is not empty and lies within `width` x `height`.
fn rect_inside(r: &ViewRect, width: u32, height: u32) -> bool {
    r.width > 0
        && r.height > 0
        && u64::from(r.x) + u64::from(r.width) <= u64::from(width)
        && u64::from(r.y) + u64::from(r.height) <= u64::from(height)
}

/// Checks `view` against a frame of `width` x `height`; the message names what is wrong.
pub fn view_check(view: &SnapshotView, width: u32, height: u32) -> Result<View, String> {
    let (ow, oh) = (view.output_width, view.output_height);
    if !(2..=8192).contains(&ow) || !(2..=8192).contains(&oh) {
        return Err(format!("view output {ow}x{oh} is outside 2x2..8192x8192"));
    }
    let (s, d) = (&view.src, &view.dst);
    if !rect_inside(s, width, height) {
        return Err(format!(
            "view src ({}, {}, {}x{}) is outside the {width}x{height} frame",
            s.x, s.y, s.width, s.height
        ));
    }
    if !rect_inside(d, ow, oh) {
        return Err(format!(
            "view dst ({}, {}, {}x{}) is outside the {ow}x{oh} output",
            d.x, d.y, d.width, d.height
        ));
    }
    if ![0, 90, 180, 270].contains(&view.rotation) {
        return Err(format!(
            "view rotation {} is not 0, 90, 180 or 270",
            view.rotation
        ));
    }
    let rgb = u32::from_str_radix(&view.background, 16)
        .ok()
        .filter(|_| view.background.len() == 6)
        .ok_or_else(|| format!("view background {:?} is not RRGGBB", view.background))?;
    let (r, g, b) = (
        f64::from((rgb >> 16) as u8),
        f64::from((rgb >> 8) as u8),
        f64::from(rgb as u8),
    );
    let clamp = |v: f64| v.round().clamp(0.0, 255.0) as u8;
    // Chroma planes are half size: rectangles start on even pixels and span at least two.
    let span = |v: u32| even_down(v).max(2);
    Ok(View {
        output: (span(ow), span(oh)),
        src: (s.x, s.y, s.width, s.height),
        dst: (
            even_down(d.x),
            even_down(d.y),
            span(d.width).min(span(ow) - even_down(d.x)),
            span(d.height).min(span(oh) - even_down(d.y)),
        ),
        rotation: view.rotation,
        background: [
            clamp(0.299 * r + 0.587 * g + 0.114 * b),
            clamp(128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b),
            clamp(128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b),
        ],
    })
}

impl View {
    /// The same view on an output of `width` x `height` (the preview's size): composing
    /// there, not at the output's own size, keeps a preview's cost to its pixels.
    pub fn scaled_to(&self, width: u32, height: u32) -> View {
        let (ow, oh) = self.output;
        let (w, h) = (even_down(width).max(2), even_down(height).max(2));
        let sx = |v: u32| (u64::from(v) * u64::from(w) / u64::from(ow)) as u32;
        let sy = |v: u32| (u64::from(v) * u64::from(h) / u64::from(oh)) as u32;
        let (x, y) = (even_down(sx(self.dst.0)), even_down(sy(self.dst.1)));
        View {
            output: (w, h),
            src: self.src,
            dst: (
                x,
                y,
                even_down(sx(self.dst.2)).max(2).min(w - x),
                even_down(sy(self.dst.3)).max(2).min(h - y),
            ),
            rotation: self.rotation,
            background: self.background,
        }
    }
}

/// The part of `frame` inside `src`, as its own frame (chroma rows start on even pixels).
fn frame_crop(frame: &ffmpeg::frame::Video, src: (u32, u32, u32, u32)) -> ffmpeg::frame::Video {
    let format = frame.format();
    let yuv = format != Pixel::BGRZ;
    let (x, y) = if yuv {
        (even_down(src.0), even_down(src.1))
    } else {
        (src.0, src.1)
    };
    let (w, h) = (
        src.2.min(frame.width() - x).max(1),
        src.3.min(frame.height() - y).max(1),
    );
    let mut out = ffmpeg::frame::Video::new(format, w, h);
    let planes: &[(usize, usize, usize)] = if yuv {
        // (bytes per pixel step, horizontal divisor, vertical divisor) per plane: NV12.
        &[(1, 1, 1), (2, 2, 2)]
    } else {
        &[(4, 1, 1)]
    };
    for (p, &(bpp, dx, dy)) in planes.iter().enumerate() {
        let (sstride, dstride) = (frame.stride(p), out.stride(p));
        let row_bytes = (w as usize).div_ceil(dx) * bpp;
        let x0 = x as usize / dx * bpp;
        let rows = (h as usize).div_ceil(dy);
        let y0 = y as usize / dy;
        for row in 0..rows {
            let from = (y0 + row) * sstride + x0;
            let src_row = &frame.data(p)[from..from + row_bytes];
            out.data_mut(p)[row * dstride..row * dstride + row_bytes].copy_from_slice(src_row);
        }
    }
    out
}

/// The picture a viewer sees on the whole output: `frame`'s `src` part scaled into `dst`,
/// turned by the rotation, on the background colour. Full-range 4:2:0, for the JPEG encoder.
pub fn view_compose(
    frame: &ffmpeg::frame::Video,
    view: &View,
) -> Result<ffmpeg::frame::Video, ffmpeg::Error> {
    let cropped = frame_crop(frame, view.src);
    let (dx, dy, dw, dh) = view.dst;
    let sideways = view.rotation == 90 || view.rotation == 270;
    // The picture upright, at the size it covers before being turned onto the panel.
    let (uw, uh) = if sideways { (dh, dw) } else { (dw, dh) };
    let mut upright = ffmpeg::frame::Video::new(Pixel::YUVJ420P, uw, uh);
    ffmpeg::software::scaling::Context::get(
        cropped.format(),
        cropped.width(),
        cropped.height(),
        Pixel::YUVJ420P,
        uw,
        uh,
        ffmpeg::software::scaling::Flags::BILINEAR,
    )?
    .run(&cropped, &mut upright)?;
    let (ow, oh) = view.output;
    let mut canvas = ffmpeg::frame::Video::new(Pixel::YUVJ420P, ow, oh);
    for p in 0..3 {
        let div = if p == 0 { 1 } else { 2 };
        let (pw, ph) = ((dw / div) as usize, (dh / div) as usize);
        let (px0, py0) = ((dx / div) as usize, (dy / div) as usize);
        let (ustride, cstride) = (upright.stride(p), canvas.stride(p));
        let (umax_x, umax_y) = ((uw / div) as usize - 1, (uh / div) as usize - 1);
        let fill = view.background[p];
        let rows = (oh / div) as usize;
        let up = upright.data(p).to_vec();
        let out = canvas.data_mut(p);
        for row in 0..rows {
            out[row * cstride..row * cstride + (ow / div) as usize].fill(fill);
        }
        for py in 0..ph {
            for px in 0..pw {
                // Which upright pixel lands here: the inverse of turning it clockwise.
                let (u, v) = match view.rotation {
                    90 => (py, pw - 1 - px),
                    180 => (pw - 1 - px, ph - 1 - py),
                    270 => (ph - 1 - py, px),
                    _ => (px, py),
                };
                out[(py0 + py) * cstride + px0 + px] = up[v.min(umax_y) * ustride + u.min(umax_x)];
            }
        }
    }
    Ok(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(x: u32, y: u32, width: u32, height: u32) -> ViewRect {
        ViewRect {
            x,
            y,
            width,
            height,
        }
    }

    fn view(src: ViewRect, dst: ViewRect, rotation: u32) -> SnapshotView {
        SnapshotView {
            output_width: 64,
            output_height: 36,
            src,
            dst,
            rotation,
            background: "ff0000".into(),
        }
    }

    #[test]
    fn view_check_names_what_is_wrong() {
        let e = view_check(&view(rect(0, 0, 33, 10), rect(0, 0, 8, 8), 0), 32, 32).unwrap_err();
        assert!(
            e.contains("view src (0, 0, 33x10) is outside the 32x32 frame"),
            "{e}"
        );
        let e = view_check(&view(rect(0, 0, 8, 8), rect(60, 0, 8, 8), 0), 32, 32).unwrap_err();
        assert!(
            e.contains("view dst (60, 0, 8x8) is outside the 64x36 output"),
            "{e}"
        );
        let e = view_check(&view(rect(0, 0, 8, 8), rect(0, 0, 8, 8), 45), 32, 32).unwrap_err();
        assert!(e.contains("rotation 45"), "{e}");
        let mut v = view(rect(0, 0, 8, 8), rect(0, 0, 8, 8), 0);
        v.background = "red".into();
        assert!(view_check(&v, 32, 32).unwrap_err().contains("\"red\""));
        let ok = view_check(&view(rect(0, 0, 8, 8), rect(0, 0, 8, 8), 0), 32, 32).unwrap();
        // Pure red in full-range BT.601.
        assert_eq!(ok.background, [76, 85, 255]);
    }

    #[test]
    fn a_view_scaled_to_the_preview_keeps_its_proportions() {
        let v = view_check(&view(rect(0, 0, 8, 8), rect(8, 0, 48, 36), 0), 32, 32).unwrap();
        let small = v.scaled_to(32, 18);
        assert_eq!(small.output, (32, 18));
        assert_eq!(small.dst, (4, 0, 24, 18));
    }

    /// A 4x2 XR24 frame whose left half is white and right half black, composed sideways.
    #[test]
    fn view_compose_turns_and_places_on_the_background() {
        let mut frame = ffmpeg::frame::Video::new(Pixel::BGRZ, 8, 4);
        let stride = frame.stride(0);
        for y in 0..4 {
            for x in 0..8 {
                let v = if x < 4 { 255 } else { 0 };
                frame.data_mut(0)[y * stride + x * 4..y * stride + x * 4 + 4]
                    .copy_from_slice(&[v, v, v, 0]);
            }
        }
        // Turned clockwise into a 4x8 box at (10, 4) of a 64x36 output.
        let v = view_check(&view(rect(0, 0, 8, 4), rect(10, 4, 4, 8), 90), 8, 4).unwrap();
        let canvas = view_compose(&frame, &v).unwrap();
        let luma = |x: usize, y: usize| canvas.data(0)[y * canvas.stride(0) + x];
        // Background around it (red's luma), the picture's left (white) now on top.
        assert_eq!(luma(0, 0), 76);
        assert_eq!(luma(9, 6), 76);
        assert!(luma(11, 5) > 230, "top: {}", luma(11, 5));
        assert!(luma(11, 10) < 25, "bottom: {}", luma(11, 10));
    }
}
