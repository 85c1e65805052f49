//! Which decode→plane path a box will use, judged from what its planes accept (IN_FORMATS)
//! and what its VAAPI driver decodes. Pure, so it is tested without a GPU.
//!
//! The modifier of a VAAPI surface is the driver's choice at export time; what is known per
//! driver family is written in `export_modifiers` (docs/diagnose.md says which generations).

use crate::kms::formats::{fourcc, fourcc_name, MOD_INVALID, NV12, XR24};

pub const P010: u32 = fourcc(b"P010");
pub const MOD_LINEAR: u64 = 0;
const VENDOR_AMD: u64 = 0x02;

/// A modifier a decoder may export: one exact value, or any of a vendor's (AMD encodes tile
/// mode, DCC and pipe layout in the value; which one depends on the chip and the surface).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModMatch {
    Exact(u64),
    Vendor(u64),
}

impl ModMatch {
    fn matches(self, modifier: u64) -> bool {
        match self {
            ModMatch::Exact(m) => m == modifier,
            ModMatch::Vendor(v) => modifier >> 56 == v && modifier != MOD_INVALID,
        }
    }

    fn name(self) -> String {
        match self {
            ModMatch::Exact(m) => modifier_name(m),
            ModMatch::Vendor(VENDOR_AMD) => "AMD tiled/DCC".into(),
            ModMatch::Vendor(v) => format!("vendor {v:#x}"),
        }
    }
}

/// A readable name for a DRM format modifier (drm_fourcc.h), hex for ones not named here.
pub fn modifier_name(m: u64) -> String {
    let name = match m {
        MOD_LINEAR => "linear",
        MOD_INVALID => "implicit",
        0x0100_0000_0000_0001 => "Intel X-tiled",
        0x0100_0000_0000_0002 => "Intel Y-tiled",
        0x0100_0000_0000_0003 => "Intel Yf-tiled",
        0x0100_0000_0000_0004 => "Intel Y-tiled CCS",
        0x0100_0000_0000_0005 => "Intel Yf-tiled CCS",
        0x0100_0000_0000_0006 => "Intel gen12 RC CCS",
        0x0100_0000_0000_0007 => "Intel gen12 MC CCS",
        0x0100_0000_0000_0008 => "Intel gen12 RC CCS-CC",
        0x0100_0000_0000_0009 => "Intel 4-tiled",
        _ if m >> 56 == VENDOR_AMD => return format!("AMD {m:#x}"),
        _ => return format!("{m:#x}"),
    };
    name.to_owned()
}

/// What a VAAPI driver family exports decoded surfaces as. Intel's media driver (iHD) and
/// i965 hand out Y-tiled NV12/P010 up to gen12 (Tiger Lake, Alder Lake), 4-tiled from
/// gen12.5 (DG2, Meteor Lake); Mesa's radeonsi hands out AMD-modifier layouts (linear for
/// some chips and sizes). Other drivers: linear.
pub fn export_modifiers(render_driver: &str) -> Vec<ModMatch> {
    match render_driver {
        "i915" | "xe" => vec![
            ModMatch::Exact(0x0100_0000_0000_0002),
            ModMatch::Exact(0x0100_0000_0000_0009),
        ],
        "amdgpu" => vec![ModMatch::Exact(MOD_LINEAR), ModMatch::Vendor(VENDOR_AMD)],
        _ => vec![ModMatch::Exact(MOD_LINEAR)],
    }
}

/// A decoder output to place: "H.264 VAAPI" as NV12 in one of `modifiers`.
pub struct DecodeOutput {
    pub label: String,
    pub format: u32,
    pub modifiers: Vec<ModMatch>,
}

/// The VAAPI decoders a driver offers (profiles with a VLD entrypoint), one per codec and
/// bit depth, with the format its surfaces have.
pub fn vaapi_outputs(profiles: &[(String, bool)], render_driver: &str) -> Vec<DecodeOutput> {
    const FAMILIES: [(&str, &str, u32); 7] = [
        ("H264", "H.264", NV12),
        ("HEVCMain10", "HEVC 10-bit", P010),
        ("HEVCMain", "HEVC", NV12),
        ("VP9Profile2", "VP9 10-bit", P010),
        ("VP9Profile0", "VP9", NV12),
        ("AV1Profile0", "AV1", NV12),
        ("AV1Profile0", "AV1 10-bit", P010),
    ];
    let mut out: Vec<DecodeOutput> = Vec::new();
    for (prefix, label, format) in FAMILIES {
        let offered = profiles
            .iter()
            .any(|(p, decodes)| *decodes && p.starts_with(prefix) && !shadowed(p, prefix));
        let label = format!("{label} VAAPI");
        if offered && !out.iter().any(|o| o.label == label) {
            out.push(DecodeOutput {
                label,
                format,
                modifiers: export_modifiers(render_driver),
            });
        }
    }
    out
}

/// "HEVCMain" must not match "HEVCMain10", "HEVCMain12", "HEVCMain422_10"...: those are
/// other bit depths or chroma layouts.
fn shadowed(profile: &str, prefix: &str) -> bool {
    prefix == "HEVCMain" && profile != "HEVCMain"
}

/// One plane as the judgement needs it.
pub struct PlaneView {
    pub id: u32,
    pub primary: bool,
    pub possible_crtcs: u32,
    pub formats: Vec<u32>,
    /// (format, modifier) from IN_FORMATS; empty when the driver reports none (then only
    /// implicit/linear layouts can be assumed).
    pub modifiers: Vec<(u32, u64)>,
}

impl PlaneView {
    fn on_crtc(&self, crtc_index: u32) -> bool {
        self.possible_crtcs & (1 << crtc_index) != 0
    }

    fn takes(&self, format: u32, wanted: ModMatch) -> bool {
        if self.modifiers.is_empty() {
            return self.formats.contains(&format) && wanted.matches(MOD_LINEAR);
        }
        self.modifiers
            .iter()
            .any(|&(f, m)| f == format && wanted.matches(m))
    }

    fn modifiers_of(&self, format: u32) -> Vec<String> {
        if self.modifiers.is_empty() && self.formats.contains(&format) {
            return vec!["implicit".into()];
        }
        self.modifiers
            .iter()
            .filter(|&&(f, _)| f == format)
            .map(|&(_, m)| modifier_name(m))
            .collect()
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A plane scans the decoder's buffers out as they are.
    ZeroCopy,
    /// Planes take the format but not the layout: converted (GPU video processing where the
    /// engine has it, else software decoding with a CPU copy).
    Convert,
    /// No plane takes the format at all: software decoding, then a CPU conversion to XR24.
    CpuConvert,
    /// Software decoding uploaded once per frame into a linear buffer a plane takes.
    CpuUpload,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::ZeroCopy => "zero-copy",
            Outcome::Convert => "convert",
            Outcome::CpuConvert => "cpu-convert",
            Outcome::CpuUpload => "cpu-upload",
        }
    }
}

pub struct PathJudgement {
    pub crtc_index: u32,
    pub decode: String,
    pub outcome: Outcome,
    pub plane: Option<u32>,
    /// One line for people, e.g. "H.264 VAAPI → NV12 Intel Y-tiled on plane 31: zero-copy".
    pub text: String,
}

/// The path of `output` on the CRTC with index `crtc_index`.
pub fn judge(planes: &[PlaneView], crtc_index: u32, output: &DecodeOutput) -> PathJudgement {
    let fmt = fourcc_name(output.format);
    let on_crtc: Vec<&PlaneView> = planes.iter().filter(|p| p.on_crtc(crtc_index)).collect();
    let wanted = output
        .modifiers
        .iter()
        .map(|m| m.name())
        .collect::<Vec<_>>()
        .join(" or ");
    let result = |outcome, plane, text: String| PathJudgement {
        crtc_index,
        decode: output.label.clone(),
        outcome,
        plane,
        text: format!("{} → {text}", output.label),
    };
    for &m in &output.modifiers {
        if let Some(p) = on_crtc.iter().find(|p| p.takes(output.format, m)) {
            return result(
                Outcome::ZeroCopy,
                Some(p.id),
                format!("{fmt} {} on plane {}: zero-copy", m.name(), p.id),
            );
        }
    }
    if let Some(p) = on_crtc
        .iter()
        .find(|p| !p.modifiers_of(output.format).is_empty())
    {
        return result(
            Outcome::Convert,
            Some(p.id),
            format!(
                "no plane takes {fmt} {wanted} (plane {} takes {fmt} only as {}): converted, \
                 by GPU video processing where available, else software decode + CPU copy",
                p.id,
                p.modifiers_of(output.format).join(", ")
            ),
        );
    }
    let primary = on_crtc.iter().find(|p| p.primary).map(|p| p.id);
    result(
        Outcome::CpuConvert,
        primary,
        format!(
            "no plane takes {fmt}: software decode + CPU conversion to XR24 on the primary plane"
        ),
    )
}

/// Software decoding (no VAAPI, or a stream it refuses): NV12 in a linear buffer a plane
/// takes, else converted to XR24 by the CPU.
pub fn judge_software(planes: &[PlaneView], crtc_index: u32) -> PathJudgement {
    let output = DecodeOutput {
        label: "software decode".into(),
        format: NV12,
        modifiers: vec![ModMatch::Exact(MOD_LINEAR)],
    };
    let mut j = judge(planes, crtc_index, &output);
    if j.outcome == Outcome::ZeroCopy {
        j.outcome = Outcome::CpuUpload;
        j.text = format!(
            "software decode → NV12 linear on plane {}: one CPU upload per frame",
            j.plane.unwrap_or(0)
        );
    } else if j.outcome == Outcome::Convert {
        j.outcome = Outcome::CpuConvert;
        j.text = format!(
            "software decode → no plane takes NV12 linear: CPU conversion to {} on the primary plane",
            fourcc_name(XR24)
        );
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    const Y_TILED: u64 = 0x0100_0000_0000_0002;

    fn plane(id: u32, primary: bool, pairs: &[(u32, u64)]) -> PlaneView {
        PlaneView {
            id,
            primary,
            possible_crtcs: 0b1,
            formats: pairs.iter().map(|p| p.0).collect(),
            modifiers: pairs.to_vec(),
        }
    }

    fn h264(driver: &str) -> DecodeOutput {
        vaapi_outputs(&[("H264High".into(), true)], driver).remove(0)
    }

    #[test]
    fn intel_nv12_on_a_y_tiled_plane_is_zero_copy() {
        let planes = [
            plane(31, true, &[(XR24, 0)]),
            plane(40, false, &[(NV12, 0), (NV12, Y_TILED)]),
        ];
        let j = judge(&planes, 0, &h264("i915"));
        assert_eq!(j.outcome, Outcome::ZeroCopy);
        assert_eq!(j.plane, Some(40));
        assert_eq!(
            j.text,
            "H.264 VAAPI → NV12 Intel Y-tiled on plane 40: zero-copy"
        );
    }

    #[test]
    fn gen9_without_y_tiled_nv12_planes_needs_conversion() {
        let planes = [plane(31, true, &[(XR24, 0), (NV12, 0)])];
        let j = judge(&planes, 0, &h264("i915"));
        assert_eq!(j.outcome, Outcome::Convert);
        assert!(j.text.contains("only as linear"), "{}", j.text);
        let sw = judge_software(&planes, 0);
        assert_eq!(sw.outcome, Outcome::CpuUpload);
    }

    #[test]
    fn no_nv12_plane_at_all_is_cpu_conversion() {
        let planes = [plane(31, true, &[(XR24, 0)])];
        assert_eq!(
            judge(&planes, 0, &h264("amdgpu")).outcome,
            Outcome::CpuConvert
        );
        assert_eq!(judge_software(&planes, 0).outcome, Outcome::CpuConvert);
        assert_eq!(
            judge(&planes, 1, &h264("amdgpu")).plane,
            None,
            "not on CRTC 1"
        );
    }

    #[test]
    fn amd_modifiers_match_by_vendor_and_planes_without_in_formats_mean_linear() {
        let dcc = 0x0200_0000_0000_1234;
        let planes = [plane(50, false, &[(NV12, dcc)])];
        assert_eq!(
            judge(&planes, 0, &h264("amdgpu")).outcome,
            Outcome::ZeroCopy
        );
        let implicit = [PlaneView {
            id: 7,
            primary: true,
            possible_crtcs: 1,
            formats: vec![NV12],
            modifiers: vec![],
        }];
        assert_eq!(
            judge(&implicit, 0, &h264("virtio_gpu")).outcome,
            Outcome::ZeroCopy
        );
    }

    #[test]
    fn profiles_map_to_codecs_and_bit_depths() {
        let profiles = [
            ("HEVCMain10".to_owned(), true),
            ("VP9Profile0".to_owned(), false),
            ("H264Main".to_owned(), true),
            ("H264High".to_owned(), true),
        ];
        let labels: Vec<_> = vaapi_outputs(&profiles, "i915")
            .into_iter()
            .map(|o| (o.label, fourcc_name(o.format)))
            .collect();
        assert_eq!(
            labels,
            [
                ("H.264 VAAPI".to_owned(), "NV12".to_owned()),
                ("HEVC 10-bit VAAPI".to_owned(), "P010".to_owned())
            ]
        );
        assert_eq!(modifier_name(MOD_INVALID), "implicit");
        assert_eq!(modifier_name(0x0100_0000_0000_0006), "Intel gen12 RC CCS");
    }
}
