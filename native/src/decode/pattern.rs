//! Built-in generated pictures (`pattern:` sources): the demo's moving test card and the slates
//! that say "driven, nothing to play". They used to be lavfi graphs (`testsrc2`, `color` +
//! `drawtext`), which made the box carry libavdevice and libavfilter and everything those link
//! (flite, z3, SDL, fontconfig: ~54 MiB of the image, ~10 MB of every supervisor's memory) for
//! two pictures. Here they are drawn in YUV 4:2:0 with a built-in 8x8 font and read through
//! FFmpeg's `rawvideo` demuxer from a custom I/O context, so they take the same decode, pacing
//! and publishing path as any file (opened by `io::input_open`).
//!
//! Grammar: `pattern:testcard?size=1920x1080&rate=30`,
//! `pattern:slate?size=1920x1080&rate=1&colour=181c20&fontsize=36&text=kiosk%20-%20HDMI-A-1` and
//! `pattern:info?size=1920x1080&fontsize=24&text=line%0Aline&qr=http%3A%2F%2F10.0.0.5%3A8080%2F`
//! (the installer screen: lines of text and a QR code, one frame and then the end of the stream,
//! so the decoder holds it as a still image instead of making a frame a second);
//! values are percent-encoded, every key is optional except `size`, unknown keys are refused.

use ffmpeg_next as ffmpeg;
use ffmpeg_next::ffi;

/// Which picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternKind {
    /// Colour bars, a grey ramp with a square crossing it every two seconds, and a frame
    /// counter: motion on every frame, so a frozen screen shows.
    TestCard,
    /// One colour with a line of white text.
    Slate,
    /// Lines of white text and a QR code on one colour, one frame only: a still.
    Info,
}

/// A parsed `pattern:` source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    pub kind: PatternKind,
    pub width: u32,
    pub height: u32,
    pub rate: u32,
    /// Background of a slate, RGB.
    pub colour: [u8; 3],
    pub text: String,
    /// Glyph height in pixels (a multiple of the font's 8 rows).
    pub font_size: u32,
    /// What the QR code of an info screen says (empty: no code).
    pub qr: String,
}

const MAX_TEXT: usize = 400;
/// An info screen has a dozen lines of up to ~80 characters.
const MAX_INFO_TEXT: usize = 1200;
/// A URL with an IPv6 address and a port fits; a QR code of more would need small modules.
const MAX_QR: usize = 120;

impl Pattern {
    /// Parses `pattern:<kind>?<key>=<value>&…`, or says what is wrong with it.
    pub fn parse(source: &str) -> Result<Pattern, String> {
        let rest = source
            .strip_prefix("pattern:")
            .ok_or_else(|| "not a pattern: source".to_owned())?;
        let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
        let kind = match name {
            "testcard" => PatternKind::TestCard,
            "slate" => PatternKind::Slate,
            "info" => PatternKind::Info,
            other => {
                return Err(format!(
                    "unknown pattern \"{other}\" (testcard, slate or info)"
                ))
            }
        };
        let mut pattern = Pattern {
            kind,
            width: 0,
            height: 0,
            rate: if kind == PatternKind::TestCard { 30 } else { 1 },
            colour: [0x18, 0x1c, 0x20],
            text: String::new(),
            font_size: 0,
            qr: String::new(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair
                .split_once('=')
                .ok_or_else(|| format!("\"{pair}\" is not key=value"))?;
            let value = percent_decode(raw)?;
            match key {
                "size" => {
                    let (w, h) = value
                        .split_once('x')
                        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
                        .ok_or_else(|| format!("size \"{value}\" is not WIDTHxHEIGHT"))?;
                    if !(16..=7680).contains(&w) || !(16..=4320).contains(&h) || w % 2 + h % 2 != 0
                    {
                        return Err(format!(
                            "size {w}x{h}: width 16-7680 and height 16-4320, both even"
                        ));
                    }
                    (pattern.width, pattern.height) = (w, h);
                }
                "rate" => pattern.rate = number_in(key, &value, 1..=120)?,
                "colour" => {
                    let hex = value.trim_start_matches('#');
                    let rgb = u32::from_str_radix(hex, 16)
                        .ok()
                        .filter(|_| hex.len() == 6)
                        .ok_or_else(|| format!("colour \"{value}\" is not RRGGBB"))?;
                    pattern.colour = [(rgb >> 16) as u8, (rgb >> 8) as u8, rgb as u8];
                }
                "fontsize" => pattern.font_size = number_in(key, &value, 8..=400)?,
                "text" => {
                    let max = if kind == PatternKind::Info {
                        MAX_INFO_TEXT
                    } else {
                        MAX_TEXT
                    };
                    if value.chars().count() > max {
                        return Err(format!("text longer than {max} characters"));
                    }
                    // The font has printable ASCII; anything else shows as '?'. An info
                    // screen's lines are split at newlines.
                    pattern.text = value
                        .chars()
                        .map(|c| {
                            let line_break = c == '\n' && kind == PatternKind::Info;
                            if c == ' ' || c.is_ascii_graphic() || line_break {
                                c
                            } else {
                                '?'
                            }
                        })
                        .collect();
                }
                "qr" if kind == PatternKind::Info => {
                    if value.len() > MAX_QR {
                        return Err(format!("qr longer than {MAX_QR} bytes"));
                    }
                    pattern.qr = value;
                }
                other => return Err(format!("unknown key \"{other}\" in a pattern source")),
            }
        }
        if pattern.width == 0 {
            return Err("a pattern needs size=WIDTHxHEIGHT".into());
        }
        if pattern.font_size == 0 {
            pattern.font_size = (pattern.height / 30).max(12);
        }
        Ok(pattern)
    }

    fn frame_len(&self) -> usize {
        let (w, h) = (self.width as usize, self.height as usize);
        w * h + 2 * (w / 2) * (h / 2)
    }
}

/// `value` as a whole number within `range`, or an error naming `key` and the range.
fn number_in(key: &str, value: &str, range: std::ops::RangeInclusive<u32>) -> Result<u32, String> {
    value
        .parse()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| format!("{key} \"{value}\" is not {}-{}", range.start(), range.end()))
}

fn percent_decode(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("a bad %-escape in \"{raw}\""))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("\"{raw}\" is not UTF-8 once decoded"))
}

/// Limited-range Y'CbCr of an RGB colour: BT.709 from 720 lines up, else BT.601, the matrix the
/// display path assumes for untagged video of that size.
fn yuv(rgb: [u8; 3], hd: bool) -> [u8; 3] {
    let [r, g, b] = rgb.map(|c| f32::from(c) / 255.0);
    let (kr, kb) = if hd { (0.2126, 0.0722) } else { (0.299, 0.114) };
    let y = kr * r + (1.0 - kr - kb) * g + kb * b;
    let cb = (b - y) / (2.0 * (1.0 - kb));
    let cr = (r - y) / (2.0 * (1.0 - kr));
    [
        (16.0 + 219.0 * y).round() as u8,
        (128.0 + 224.0 * cb).round() as u8,
        (128.0 + 224.0 * cr).round() as u8,
    ]
}

/// One picture in YUV 4:2:0 planes, drawn into.
struct Canvas<'a> {
    buf: &'a mut [u8],
    width: usize,
    height: usize,
    hd: bool,
}

impl Canvas<'_> {
    fn fill(&mut self, x0: usize, y0: usize, w: usize, h: usize, rgb: [u8; 3]) {
        let [y, u, v] = yuv(rgb, self.hd);
        let (x1, y1) = ((x0 + w).min(self.width), (y0 + h).min(self.height));
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        let (cw, luma) = (self.width / 2, self.width * self.height);
        for row in y0..y1 {
            self.buf[row * self.width + x0..row * self.width + x1].fill(y);
        }
        let chroma = luma / 4;
        for row in y0 / 2..y1.div_ceil(2) {
            let (a, b) = (row * cw + x0 / 2, row * cw + x1.div_ceil(2));
            self.buf[luma + a..luma + b].fill(u);
            self.buf[luma + chroma + a..luma + chroma + b].fill(v);
        }
    }

    /// `text` in white, glyph cells of `scale` x `scale` pixels, from (x, y); clipped.
    fn text(&mut self, x: usize, y: usize, scale: usize, text: &str) {
        self.text_within(x, y, scale, text, self.width);
    }

    /// `text` as `text` draws it, only the glyphs that end before `max_x` (a whole glyph or none).
    fn text_within(&mut self, x: usize, y: usize, scale: usize, text: &str, max_x: usize) {
        for (i, c) in text.chars().enumerate() {
            let glyph = font8x8::legacy::BASIC_LEGACY
                .get(c as usize)
                .copied()
                .unwrap_or(font8x8::legacy::BASIC_LEGACY[usize::from(b'?')]);
            let gx = x + i * 8 * scale;
            if gx >= self.width || gx + 8 * scale > max_x {
                break;
            }
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits >> col & 1 == 1 {
                        self.fill(gx + col * scale, y + row * scale, scale, scale, [255; 3]);
                    }
                }
            }
        }
    }
}

/// The renderer behind one pattern source: the static part drawn once, each frame copied from
/// it with what moves drawn on top.
pub struct PatternFrames {
    pattern: Pattern,
    base: Vec<u8>,
    frame: Vec<u8>,
    /// Index of the frame in `frame`.
    index: u64,
    /// Bytes of `frame` already handed to FFmpeg.
    pos: usize,
}

impl PatternFrames {
    pub fn new(pattern: Pattern) -> PatternFrames {
        let mut base = vec![0; pattern.frame_len()];
        draw_base(&pattern, &mut base);
        let mut frames = PatternFrames {
            frame: base.clone(),
            base,
            pattern,
            index: 0,
            pos: 0,
        };
        frames.draw(0);
        frames
    }

    fn canvas<'a>(pattern: &Pattern, buf: &'a mut [u8]) -> Canvas<'a> {
        Canvas {
            buf,
            width: pattern.width as usize,
            height: pattern.height as usize,
            hd: pattern.height >= 720,
        }
    }

    fn draw(&mut self, index: u64) {
        self.index = index;
        self.pos = 0;
        if self.pattern.kind != PatternKind::TestCard {
            return; // nothing moves: `frame` is `base`
        }
        self.frame.copy_from_slice(&self.base);
        let p = &self.pattern;
        let (w, h) = (p.width as usize, p.height as usize);
        let mut c = PatternFrames::canvas(p, &mut self.frame);
        // The square crosses the ramp band once every two seconds.
        let side = (h / 8).max(2) & !1;
        let period = u64::from(p.rate) * 2;
        let x = ((index % period) as usize * (w - side)) / period as usize;
        c.fill(x & !1, h * 6 / 10, side, side.min(h * 15 / 100), [255; 3]);
        let secs = index / u64::from(p.rate);
        let label = format!(
            "multihead {}x{} frame {:06} {:02}:{:02}:{:02}.{:02}",
            w,
            h,
            index,
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            (index % u64::from(p.rate)) * 100 / u64::from(p.rate)
        );
        let scale = (h / 216).max(1);
        c.text(w / 20, h * 80 / 100, scale, &label);
    }

    /// FFmpeg reads the endless stream of frames through this: the rest of the current frame,
    /// then the next one.
    fn read(&mut self, out: &mut [u8]) -> usize {
        if self.pos == self.frame.len() {
            if self.pattern.kind == PatternKind::Info {
                return 0; // the end of a one-frame stream: the decoder holds it as a still
            }
            self.draw(self.index + 1);
        }
        let n = out.len().min(self.frame.len() - self.pos);
        out[..n].copy_from_slice(&self.frame[self.pos..self.pos + n]);
        self.pos += n;
        n
    }
}

fn draw_base(p: &Pattern, buf: &mut [u8]) {
    let (w, h) = (p.width as usize, p.height as usize);
    let mut c = PatternFrames::canvas(p, buf);
    match p.kind {
        PatternKind::Slate => {
            c.fill(0, 0, w, h, p.colour);
            let scale = (p.font_size as usize / 8).max(1);
            c.text(p.font_size as usize, p.font_size as usize, scale, &p.text);
        }
        PatternKind::Info => {
            c.fill(0, 0, w, h, p.colour);
            let text_end = match qr_draw(&mut c, p) {
                Some(qr_x) => qr_x,
                None => w,
            };
            info_text_draw(&mut c, p, text_end);
        }
        PatternKind::TestCard => {
            // 75 % bars, then a grey ramp, then a dark band for the counter.
            const BARS: [[u8; 3]; 8] = [
                [191, 191, 191],
                [191, 191, 0],
                [0, 191, 191],
                [0, 191, 0],
                [191, 0, 191],
                [191, 0, 0],
                [0, 0, 191],
                [16, 16, 16],
            ];
            let bars_h = h * 6 / 10;
            for (i, rgb) in BARS.iter().enumerate() {
                let (x0, x1) = ((i * w / 8) & !1, ((i + 1) * w / 8) & !1);
                c.fill(x0, 0, x1 - x0, bars_h, *rgb);
            }
            let steps = 16;
            for i in 0..steps {
                let (x0, x1) = ((i * w / steps) & !1, ((i + 1) * w / steps) & !1);
                let v = (i * 255 / (steps - 1)) as u8;
                c.fill(x0, bars_h, x1 - x0, h * 15 / 100, [v; 3]);
            }
            c.fill(0, h * 75 / 100, w, h - h * 75 / 100, [24, 28, 32]);
        }
    }
}

/// Modules of white around a QR code that readers need to find it (the standard's quiet zone).
const QR_QUIET: usize = 4;

/// An info screen's QR code: on the right, vertically centred, dark modules on white with the
/// quiet zone, each module a square of whole pixels as large as 38 % of the width and all the
/// height allow (13 pixels at 1280x720 for a LAN URL), so a phone reads it from a ladder. The left edge of the white square,
/// or None when there is no code (or it cannot be encoded: the text still shows).
fn qr_draw(c: &mut Canvas, p: &Pattern) -> Option<usize> {
    if p.qr.is_empty() {
        return None;
    }
    let code = qrcode::QrCode::with_error_correction_level(&p.qr, qrcode::EcLevel::M).ok()?;
    let (w, h) = (c.width, c.height);
    let margin = p.font_size as usize;
    let modules = code.width() + 2 * QR_QUIET;
    let room = (h.saturating_sub(2 * margin)).min(w * 38 / 100);
    let px = (room / modules).max(2);
    let side = modules * px;
    let (x0, y0) = (w.saturating_sub(margin + side), h.saturating_sub(side) / 2);
    c.fill(x0, y0, side, side, [255; 3]);
    for my in 0..code.width() {
        for mx in 0..code.width() {
            if code[(mx, my)] == qrcode::Color::Dark {
                let (x, y) = (x0 + (QR_QUIET + mx) * px, y0 + (QR_QUIET + my) * px);
                c.fill(x, y, px, px, [0; 3]);
            }
        }
    }
    Some(x0)
}

/// An info screen's lines from the top left, the first at twice the size (the device's name);
/// glyphs that would reach `end` (the QR code) or lines below the bottom margin are left out.
fn info_text_draw(c: &mut Canvas, p: &Pattern, end: usize) {
    let margin = p.font_size as usize;
    let scale = (margin / 8).max(1);
    let max_x = end.saturating_sub(margin);
    let mut y = margin;
    for (i, line) in p.text.split('\n').enumerate() {
        let s = if i == 0 { scale * 2 } else { scale };
        if y + 8 * s > c.height.saturating_sub(margin) {
            break;
        }
        c.text_within(margin, y, s, line, max_x);
        y += 8 * s + 8 * s / 2;
    }
}

/// FFmpeg's read callback: `opaque` is the `PatternFrames` owned by the `PatternIo` that owns
/// this AVIOContext.
unsafe extern "C" fn pattern_read(
    opaque: *mut libc::c_void,
    buf: *mut u8,
    size: libc::c_int,
) -> libc::c_int {
    if buf.is_null() || size <= 0 {
        return 0;
    }
    let frames = unsafe { &mut *(opaque as *mut PatternFrames) };
    let out = unsafe { std::slice::from_raw_parts_mut(buf, size as usize) };
    match frames.read(out) {
        0 => ffi::AVERROR_EOF,
        n => n as libc::c_int,
    }
}

/// The custom I/O context of a pattern source and the renderer behind it. FFmpeg does not free
/// a caller's I/O context when it closes the input, so this is kept beside the input and
/// dropped after it.
pub struct PatternIo {
    avio: *mut ffi::AVIOContext,
    frames: *mut PatternFrames,
}

// The decoder thread that opened it owns it, and only FFmpeg calls on that thread touch it.
unsafe impl Send for PatternIo {}

impl Drop for PatternIo {
    fn drop(&mut self) {
        unsafe {
            if !self.avio.is_null() {
                // FFmpeg may have replaced the buffer it was given: free the one it holds now.
                ffi::av_freep(std::ptr::addr_of_mut!((*self.avio).buffer) as *mut libc::c_void);
                ffi::avio_context_free(&mut self.avio);
            }
            drop(Box::from_raw(self.frames));
        }
    }
}

const IO_BUFFER: usize = 256 * 1024;

impl PatternIo {
    /// The renderer for `pattern` behind a read-only AVIOContext, for `io::input_open` to open
    /// with `rawvideo` and `Pattern::demuxer_options`.
    pub fn new(pattern: &Pattern) -> Result<PatternIo, String> {
        let frames = Box::into_raw(Box::new(PatternFrames::new(pattern.clone())));
        // From here on, dropping `io` frees whatever was made.
        let mut io = PatternIo {
            avio: std::ptr::null_mut(),
            frames,
        };
        let buffer = unsafe { ffi::av_malloc(IO_BUFFER) } as *mut u8;
        if buffer.is_null() {
            return Err("out of memory".into());
        }
        io.avio = unsafe {
            ffi::avio_alloc_context(
                buffer,
                IO_BUFFER as libc::c_int,
                0,
                frames as *mut libc::c_void,
                Some(pattern_read),
                None,
                None,
            )
        };
        if io.avio.is_null() {
            unsafe { ffi::av_free(buffer as *mut libc::c_void) };
            return Err("out of memory".into());
        }
        Ok(io)
    }

    /// The I/O context to set as the format context's `pb`.
    pub fn avio(&self) -> *mut ffi::AVIOContext {
        self.avio
    }
}

impl Pattern {
    /// What FFmpeg's `rawvideo` demuxer needs to cut the stream into frames and time them.
    pub fn demuxer_options(&self) -> ffmpeg::Dictionary<'static> {
        let mut options = ffmpeg::Dictionary::new();
        options.set("video_size", &format!("{}x{}", self.width, self.height));
        options.set("pixel_format", "yuv420p");
        options.set("framerate", &self.rate.to_string());
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::policy::SourceKind;

    #[test]
    fn parses_what_the_supervisor_sends_and_refuses_the_rest() {
        let p = Pattern::parse(
            "pattern:slate?size=1280x720&colour=181c20&fontsize=24&text=kiosk%20-%20HDMI-A-1%0A",
        )
        .unwrap();
        assert_eq!(
            (p.kind, p.width, p.height, p.rate),
            (PatternKind::Slate, 1280, 720, 1)
        );
        assert_eq!(p.colour, [0x18, 0x1c, 0x20]);
        assert_eq!(p.text, "kiosk - HDMI-A-1?", "a newline is not in the font");
        let t = Pattern::parse("pattern:testcard?size=64x48&rate=25").unwrap();
        assert_eq!(
            (t.kind, t.rate, t.font_size),
            (PatternKind::TestCard, 25, 12)
        );
        for (bad, says) in [
            ("pattern:movie?size=64x48", "unknown pattern"),
            ("pattern:testcard", "needs size"),
            ("pattern:testcard?size=65x48", "both even"),
            ("pattern:testcard?size=100000x48", "width 16-7680"),
            ("pattern:testcard?size=64x48&rate=0", "rate"),
            (
                "pattern:testcard?size=64x48&file=/etc/passwd",
                "unknown key",
            ),
            ("pattern:slate?size=64x48&colour=red", "RRGGBB"),
            ("pattern:slate?size=64x48&text=%zz", "%-escape"),
            ("pattern:slate?size=64x48&text=%ff", "UTF-8"),
            ("pattern:slate?size=64x48&fontsize=9999", "fontsize"),
        ] {
            let e = Pattern::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let long = format!("pattern:slate?size=64x48&text={}", "a".repeat(MAX_TEXT + 1));
        assert!(Pattern::parse(&long).unwrap_err().contains("longer"));
    }

    fn luma_at(frames: &PatternFrames, x: usize, y: usize) -> u8 {
        frames.frame[y * frames.pattern.width as usize + x]
    }

    #[test]
    fn the_test_card_moves_on_every_frame_and_a_slate_never_does() {
        let mut card =
            PatternFrames::new(Pattern::parse("pattern:testcard?size=320x240&rate=30").unwrap());
        let len = card.frame.len();
        assert_eq!(len, 320 * 240 * 3 / 2);
        let mut out = vec![0; len];
        let mut previous = Vec::new();
        for _ in 0..5 {
            let mut got = 0;
            while got < len {
                got += card.read(&mut out[got..]);
            }
            assert_ne!(out, previous, "each frame differs from the one before");
            previous.clone_from(&out);
        }
        // White bar on the left, blue one near the right edge (BT.601 at 240 lines).
        assert_eq!(luma_at(&card, 5, 5), yuv([191; 3], false)[0]);
        assert_eq!(luma_at(&card, 260, 5), yuv([0, 0, 191], false)[0]);

        let mut slate = PatternFrames::new(
            Pattern::parse("pattern:slate?size=320x240&colour=ff0000&fontsize=16&text=A").unwrap(),
        );
        let first = slate.frame.clone();
        let mut out = vec![0; first.len() * 3];
        let mut got = 0;
        while got < out.len() {
            got += slate.read(&mut out[got..]);
        }
        assert!(out.chunks(first.len()).all(|f| f == first));
        assert_eq!(
            luma_at(&slate, 300, 200),
            yuv([255, 0, 0], false)[0],
            "background"
        );
        // The glyph 'A' at (16, 16), two pixels a dot: some of its cells are white.
        let white = yuv([255; 3], false)[0];
        let lit = (16..32)
            .flat_map(|y| (16..32).map(move |x| (x, y)))
            .filter(|&(x, y)| luma_at(&slate, x, y) == white);
        assert!(lit.count() > 20);
    }

    #[test]
    fn an_info_screen_is_one_frame_of_lines_and_a_qr_code_with_its_quiet_zone() {
        let source = "pattern:info?size=1280x720&colour=181c20&fontsize=16\
            &text=kiosk%0Aid%3A%20k1&qr=http%3A%2F%2F192.168.1.20%3A8080%2F";
        let p = Pattern::parse(source).unwrap();
        assert_eq!((p.kind, p.rate), (PatternKind::Info, 1));
        assert_eq!(
            p.text, "kiosk\nid: k1",
            "newlines split an info screen's lines"
        );
        assert_eq!(p.qr, "http://192.168.1.20:8080/");
        let e = Pattern::parse("pattern:slate?size=64x48&qr=x").unwrap_err();
        assert!(e.contains("unknown key"), "{e}");
        let mut info = PatternFrames::new(p);
        let len = info.frame.len();
        let mut out = vec![0; len];
        let mut got = 0;
        while got < len {
            got += info.read(&mut out[got..]);
        }
        assert_eq!(info.read(&mut out), 0, "one frame, then the end");

        let code = qrcode::QrCode::with_error_correction_level(
            "http://192.168.1.20:8080/",
            qrcode::EcLevel::M,
        )
        .unwrap();
        let modules = code.width() + 2 * QR_QUIET;
        // 38 % of the width is less than the height between the margins at 1280x720.
        let px = 1280 * 38 / 100 / modules;
        assert!(px >= 8, "modules of {px} pixels at 720 lines");
        let (x0, y0) = (1280 - 16 - modules * px, (720 - modules * px) / 2);
        let (white, black) = (yuv([255; 3], true)[0], yuv([0; 3], true)[0]);
        // Every module's centre as the code says, the quiet zone's included.
        for my in 0..modules {
            for mx in 0..modules {
                let inner = (QR_QUIET..QR_QUIET + code.width()).contains(&mx)
                    && (QR_QUIET..QR_QUIET + code.width()).contains(&my);
                let dark = inner && code[(mx - QR_QUIET, my - QR_QUIET)] == qrcode::Color::Dark;
                let at = luma_at(&info, x0 + mx * px + px / 2, y0 + my * px + px / 2);
                assert_eq!(at, if dark { black } else { white }, "module {mx},{my}");
            }
        }
        // The device name, twice the size, at the top left: some of its cells are white.
        let lit = (16..48)
            .flat_map(|y| (16..300).map(move |x| (x, y)))
            .filter(|&(x, y)| luma_at(&info, x, y) == white);
        assert!(lit.count() > 100);
    }

    #[test]
    fn an_info_screen_decodes_to_one_frame_then_the_end() {
        ffmpeg::init().unwrap();
        let source = "pattern:info?size=64x48&fontsize=8&text=a&qr=b";
        let guard = crate::decode::io::IoGuard::default();
        let (mut input, io) =
            unsafe { crate::decode::io::input_open(source, SourceKind::Pattern, &guard) }.unwrap();
        let stream = input.streams().best(ffmpeg::media::Type::Video).unwrap();
        let ctx = ffmpeg::codec::context::Context::from_parameters(stream.parameters()).unwrap();
        let mut decoder = ctx.decoder().video().unwrap();
        let mut frame = ffmpeg::frame::Video::empty();
        let mut decoded = 0;
        for (_, packet) in input.packets().take(10) {
            decoder.send_packet(&packet).unwrap();
            while decoder.receive_frame(&mut frame).is_ok() {
                decoded += 1;
            }
        }
        let _ = decoder.send_eof();
        while decoder.receive_frame(&mut frame).is_ok() {
            decoded += 1;
        }
        assert_eq!(decoded, 1);
        drop(input);
        drop(io);
    }

    #[test]
    fn opens_through_rawvideo_and_decodes_frames_of_its_size() {
        ffmpeg::init().unwrap();
        let source = "pattern:testcard?size=64x48&rate=30";
        let guard = crate::decode::io::IoGuard::default();
        let (mut input, io) =
            unsafe { crate::decode::io::input_open(source, SourceKind::Pattern, &guard) }.unwrap();
        assert!(io.is_some(), "the I/O context comes back with the input");
        let stream = input.streams().best(ffmpeg::media::Type::Video).unwrap();
        let index = stream.index();
        let ctx = ffmpeg::codec::context::Context::from_parameters(stream.parameters()).unwrap();
        let mut decoder = ctx.decoder().video().unwrap();
        let mut frame = ffmpeg::frame::Video::empty();
        let mut decoded = 0;
        for (s, packet) in input.packets().take(10) {
            assert_eq!(s.index(), index);
            decoder.send_packet(&packet).unwrap();
            while decoder.receive_frame(&mut frame).is_ok() {
                assert_eq!((frame.width(), frame.height()), (64, 48));
                decoded += 1;
            }
        }
        assert_eq!(decoded, 10);
        drop(input);
        drop(io);
    }
}
