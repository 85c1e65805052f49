//! Which sources FFmpeg may open, and with which of its protocols and demuxers. The supervisor
//! checks sources before they get here (src/playback/source-policy.ts); this is the second
//! line, so that a caller that skipped that check still cannot make FFmpeg read an arbitrary
//! file, write one (`psnr=stats_file=`), run a process pipe or dial out over a raw socket.
//!
//! Each kind of source gets FFmpeg's `protocol_whitelist` and `format_whitelist`: a nested open
//! (an HLS segment, a playlist inside a playlist) inherits them, so a remote playlist cannot
//! switch to `file:` or reach the `concat`/`image2` demuxers.

use ffmpeg_next::Dictionary;

/// What a source is, as far as opening it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A built-in picture drawn by the addon (`pattern:`, decode/pattern.rs): the demo's test
    /// card and the slates.
    Pattern,
    /// A lavfi graph of the generators below (development and tests: the box has no lavfi).
    Generated,
    /// An absolute path to a local file (the supervisor has resolved it inside its media dirs).
    File,
    /// `http://` or `https://`, HLS included.
    Http,
    /// `rtsp://` or `rtsps://`.
    Rtsp,
}

/// Said whenever a source is refused, so the refusal names what would have been accepted.
pub const ALLOWED: &str =
    "allowed: an absolute path to a local file, an http://, https://, rtsp:// or rtsps:// URL, \
     or a built-in generated source";

/// Plain containers and still images: nothing that opens further files (no hls, dash, concat,
/// image2 sequences).
const FILE_FORMATS: &str =
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,mpegts,mpeg,avi,flv,asf,ogg,ivf,obu,\
     h264,hevc,m4v,mpegvideo,mjpeg,png_pipe,jpeg_pipe,webp_pipe,bmp_pipe,gif";
/// Streams over HTTP: HLS and what its segments and renditions are made of.
const HTTP_FORMATS: &str = "hls,mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,mpegts,mpeg,flv,ivf,ogg,\
     h264,hevc,aac,mp3,ac3,eac3,webvtt";
/// HTTP(S) and HLS (AES-128 segments use `crypto`); never `file`, `pipe`, `data` or `concat`.
const HTTP_PROTOCOLS: &str = "http,https,tcp,tls,crypto";
/// What the RTSP demuxer opens below itself: the control connection and the RTP transports.
const RTSP_PROTOCOLS: &str = "rtp,srtp,udp,tcp,tls";

/// lavfi sources and filters a generated source may use. None of them reads or writes a file
/// or a socket (`movie`, `life`, `sendcmd`, `zmq`, `psnr` and friends are not here).
const GENERATORS: &[&str] = &[
    "testsrc",
    "testsrc2",
    "color",
    "smptebars",
    "smptehdbars",
    "rgbtestsrc",
    "yuvtestsrc",
    "pal75bars",
    "pal100bars",
    "allrgb",
    "allyuv",
    "nullsrc",
    "mandelbrot",
];
const FILTERS: &[&str] = &[
    "format",
    "scale",
    "fps",
    "setsar",
    "setdar",
    "setpts",
    "trim",
    "pad",
    "crop",
    "hflip",
    "vflip",
    "transpose",
    "hue",
    "eq",
    "negate",
    "drawbox",
    "drawgrid",
    "noise",
    "loop",
    "drawtext",
];
/// drawtext reads a font file and a text file when asked to: only these keys, always named.
const DRAWTEXT_KEYS: &[&str] = &[
    "text",
    "fontcolor",
    "fontsize",
    "x",
    "y",
    "box",
    "boxcolor",
    "boxborderw",
    "borderw",
    "bordercolor",
    "line_spacing",
    "shadowx",
    "shadowy",
    "shadowcolor",
    "alpha",
];

/// The kind of `source`, or why it may not be opened.
pub fn classify(source: &str) -> Result<SourceKind, String> {
    if source.chars().any(char::is_control) {
        return Err(format!("control characters in the source; {ALLOWED}"));
    }
    if source.starts_with("pattern:") {
        super::pattern::Pattern::parse(source)?;
        return Ok(SourceKind::Pattern);
    }
    if let Some(graph) = source.strip_prefix("lavfi:") {
        graph_check(graph)?;
        return Ok(SourceKind::Generated);
    }
    if source.starts_with('/') {
        if source.split('/').any(|part| part == "..") {
            return Err(format!("\"..\" in a path; {ALLOWED}"));
        }
        return Ok(SourceKind::File);
    }
    for (scheme, kind) in [
        ("http://", SourceKind::Http),
        ("https://", SourceKind::Http),
        ("rtsp://", SourceKind::Rtsp),
        ("rtsps://", SourceKind::Rtsp),
    ] {
        if let Some(rest) = source.strip_prefix(scheme) {
            if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
                return Err(format!("{scheme} needs a host and no spaces; {ALLOWED}"));
            }
            return Ok(kind);
        }
    }
    let scheme = source.split(':').next().filter(|s| *s != source);
    Err(match scheme {
        Some(s) => format!("\"{s}:\" sources are not allowed; {ALLOWED}"),
        None => format!("a relative path; {ALLOWED}"),
    })
}

/// Options for `avformat_open_input` that keep FFmpeg to the protocols and demuxers of `kind`.
pub fn open_options(kind: SourceKind) -> Dictionary<'static> {
    let mut options = Dictionary::new();
    let (protocols, formats) = match kind {
        // Opened through the lavfi device or rawvideo directly: no protocol, no probing.
        SourceKind::Generated | SourceKind::Pattern => return options,
        SourceKind::File => ("file", FILE_FORMATS),
        SourceKind::Http => (HTTP_PROTOCOLS, HTTP_FORMATS),
        SourceKind::Rtsp => (RTSP_PROTOCOLS, "rtsp"),
    };
    options.set("protocol_whitelist", protocols);
    options.set("format_whitelist", formats);
    options
}

const WHITESPACE: [char; 4] = [' ', '\n', '\t', '\r'];

/// Reads one token as FFmpeg's `av_get_token` does (backslash escapes, single quotes), up to
/// one of `term`: the check sees exactly the names and values FFmpeg will.
fn token<'a>(text: &'a str, term: &str) -> (String, &'a str) {
    let text = text.trim_start_matches(WHITESPACE);
    let mut out = String::new();
    let mut chars = text.char_indices();
    let mut end = text.len();
    while let Some((i, c)) = chars.next() {
        if term.contains(c) {
            end = i;
            break;
        }
        match c {
            '\\' => match chars.next() {
                Some((_, next)) => out.push(next),
                None => out.push(c),
            },
            '\'' => {
                for (_, q) in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    out.push(q);
                }
            }
            _ => out.push(c),
        }
    }
    (out.trim_end_matches(WHITESPACE).to_owned(), &text[end..])
}

/// One filter's options as `av_opt_get_key_value` splits them: (key, value), the key empty
/// when the value is positional.
fn filter_options(args: &str) -> Vec<(String, String)> {
    let key_char = |c: char| c.is_ascii_alphanumeric() || "-_/.".contains(c);
    let mut options = Vec::new();
    let mut rest = args;
    while !rest.is_empty() {
        let start = rest.trim_start_matches(WHITESPACE);
        let key_len = start.find(|c: char| !key_char(c)).unwrap_or(start.len());
        let after_key = start[key_len..].trim_start_matches(WHITESPACE);
        let key = match after_key.strip_prefix('=') {
            Some(value) => {
                let key = start[..key_len].to_owned();
                rest = value;
                key
            }
            None => String::new(),
        };
        let (value, after) = token(rest, ":");
        options.push((key, value));
        rest = after.strip_prefix(':').unwrap_or(after);
    }
    options
}

/// A generated source: one chain of allowed generators and filters, no labels, no second chain.
fn graph_check(graph: &str) -> Result<(), String> {
    let allowed = || {
        format!(
            "generators {} and filters {}",
            GENERATORS.join(", "),
            FILTERS.join(", ")
        )
    };
    let mut rest = graph;
    loop {
        if rest.trim_start().starts_with('[') {
            return Err("a generated source is one chain without [labels]".into());
        }
        let (name, after) = token(rest, "=,;[");
        let (args, after) = match after.strip_prefix('=') {
            Some(args) => token(args, "[],;"),
            None => (String::new(), after),
        };
        if !GENERATORS.contains(&name.as_str()) && !FILTERS.contains(&name.as_str()) {
            return Err(format!(
                "\"{name}\" may not be used in a generated source; allowed: {}",
                allowed()
            ));
        }
        for (key, _) in filter_options(&args) {
            if key.contains("file") {
                return Err(format!(
                    "\"{name}\" option \"{key}\" names a file; not allowed"
                ));
            }
            if name == "drawtext" && !DRAWTEXT_KEYS.contains(&key.as_str()) {
                return Err(format!(
                    "drawtext takes only named options {} (got \"{key}\")",
                    DRAWTEXT_KEYS.join(", ")
                ));
            }
        }
        match after.chars().next() {
            None => return Ok(()),
            Some(',') => rest = &after[1..],
            Some(c) => {
                return Err(format!(
                    "a generated source is one chain (\"{c}\" is not allowed)"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_slates_and_allowed_kinds_pass() {
        for source in [
            "lavfi:testsrc2=size=1280x720:rate=30",
            "lavfi:color=c=0x181c20:size=64x64:rate=1",
            "lavfi:color=c=0x181c20:size=64x64:rate=1,drawtext=text='kiosk - HDMI-A-1 -- no content\\: x':fontcolor=white:fontsize=12:x=12:y=12",
        ] {
            assert_eq!(classify(source), Ok(SourceKind::Generated), "{source}");
        }
        assert_eq!(
            classify("/var/lib/multihead/media/a.mp4"),
            Ok(SourceKind::File)
        );
        assert_eq!(classify("https://cdn.example/a.m3u8"), Ok(SourceKind::Http));
        assert_eq!(classify("rtsps://cam.local/stream"), Ok(SourceKind::Rtsp));
    }

    #[test]
    fn graphs_that_touch_files_or_sockets_are_refused() {
        for source in [
            "lavfi:movie=/etc/passwd",
            "lavfi:testsrc2,movie=/etc/passwd",
            "lavfi:testsrc2[a];testsrc2[b];[a][b]psnr=stats_file=/tmp/x",
            "lavfi:testsrc2;movie=/etc/passwd",
            "lavfi:mov\\ie=/etc/passwd",
            "lavfi:'movie'=/etc/passwd",
            "lavfi:color,drawtext=textfile=/etc/passwd",
            "lavfi:color,drawtext=/usr/share/fonts/x.ttf",
            "lavfi:color,drawtext=text='a':tex\\tfile=/etc/passwd",
            "lavfi:life=f=/etc/passwd",
            "lavfi:testsrc2,sendcmd=f=/tmp/cmds",
            "lavfi:testsrc2,zmq",
        ] {
            assert!(classify(source).is_err(), "{source}");
        }
    }

    #[test]
    fn other_protocols_and_relative_paths_are_refused() {
        for source in [
            "file:/etc/passwd",
            "concat:/a.ts|/b.ts",
            "subfile,,start,0,end,100,,:/etc/passwd",
            "pipe:0",
            "tcp://127.0.0.1:9",
            "data:video/mp4;base64,AAAA",
            "HTTP://example.com/a.mp4",
            "http:///etc/passwd",
            "media/a.mp4",
            "/var/lib/multihead/media/../../../etc/passwd",
            "/media/a.mp4\n",
        ] {
            let refused = classify(source).expect_err(source);
            assert!(refused.contains("allowed"), "{source}: {refused}");
        }
    }

    #[test]
    fn each_kind_gets_its_whitelists() {
        let http = open_options(SourceKind::Http);
        assert_eq!(http.get("protocol_whitelist"), Some(HTTP_PROTOCOLS));
        assert!(!HTTP_PROTOCOLS.split(',').any(|p| p == "file"));
        assert!(!HTTP_FORMATS
            .split(',')
            .any(|f| f == "concat" || f == "image2"));
        assert!(!FILE_FORMATS.split(',').any(|f| f == "hls" || f == "concat"));
        assert_eq!(
            open_options(SourceKind::File).get("protocol_whitelist"),
            Some("file")
        );
        assert_eq!(
            open_options(SourceKind::Rtsp).get("format_whitelist"),
            Some("rtsp")
        );
    }
}
