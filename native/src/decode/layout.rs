//! How a VAAPI surface exported as DRM PRIME layers becomes ONE framebuffer description in the
//! order the kernel's `DRM_IOCTL_MODE_ADDFB2` expects. FFmpeg maps surfaces as separate layers
//! (NV12: an R8 layer and a GR88 layer; P010: R16 and GR1616), and with Intel's compression
//! modifiers every layer carries its aux (CCS) plane right after its main plane. The kernel
//! wants all main planes first, then the aux planes in the same order (i915: "planes 0 and 1
//! are used for Y and UV surfaces, planes 2 and 3 for the respective CCS"). A layout this
//! module does not understand is refused with a sentence naming it, so the decoder goes on in
//! software instead of handing the engine a framebuffer the kernel would misread.

use crate::dmabuf::format::{fourcc, NV12, P010};

const R8: u32 = fourcc(b"R8  ");
const GR88: u32 = fourcc(b"GR88");
const R16: u32 = fourcc(b"R16 ");
const GR1616: u32 = fourcc(b"GR32");

const VENDOR_INTEL: u64 = 0x01;
const VENDOR_AMD: u64 = 0x02;
/// AMD_FMT_MOD_DCC: delta colour compression, with metadata planes of its own.
const AMD_DCC: u64 = 1 << 13;

/// One plane of the export: (object index, offset, pitch).
pub type Plane = (usize, u32, u32);

/// One layer as the DRM PRIME descriptor gives it.
#[derive(Clone, Copy, Debug)]
pub struct Layer<'a> {
    pub format: u32,
    pub planes: &'a [Plane],
}

/// The framebuffer the layers make: its fourcc and up to 4 planes in kernel order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flat {
    pub format: u32,
    pub planes: [Plane; 4],
    pub count: usize,
}

/// Main (non-aux) planes of a format this engine can put on a plane.
fn main_planes(format: u32) -> Option<usize> {
    match format {
        NV12 | P010 => Some(2),
        f if f == fourcc(b"XR24")
            || f == fourcc(b"AR24")
            || f == fourcc(b"XB24")
            || f == fourcc(b"AB24")
            || f == fourcc(b"XR30")
            || f == fourcc(b"AR30") =>
        {
            Some(1)
        }
        _ => None,
    }
}

/// Aux planes each main plane carries with `modifier`, when the layout is one this module
/// knows; None for layouts it refuses (clear-colour planes, AMD DCC metadata, unknown ones).
pub fn aux_per_plane(modifier: u64) -> Option<usize> {
    if modifier == 0 {
        return Some(0);
    }
    match (modifier >> 56, modifier & ((1 << 56) - 1)) {
        // X, Y, Yf and Tile4 without compression; DG2, LNL and BMG compress without a separate
        // CCS plane ("flat CCS").
        (VENDOR_INTEL, 1..=3 | 9 | 10 | 11 | 16 | 17) => Some(0),
        // Y/Yf CCS (gen9-11), gen12 and MTL render/media compression: one CCS plane each.
        (VENDOR_INTEL, 4 | 5 | 6 | 7 | 13 | 14) => Some(1),
        (VENDOR_AMD, bits) if bits & AMD_DCC == 0 => Some(0),
        _ => None,
    }
}

fn text(code: u32) -> String {
    String::from_utf8_lossy(&code.to_le_bytes())
        .trim_end()
        .to_owned()
}

/// The single format the layers make together, if they are a split this module knows.
fn layers_format(layers: &[Layer<'_>]) -> Option<u32> {
    match layers {
        [one] => Some(one.format),
        [y, uv] if (y.format, uv.format) == (R8, GR88) => Some(NV12),
        [y, uv] if (y.format, uv.format) == (R16, GR1616) => Some(P010),
        _ => None,
    }
}

/// Flattens `layers` (with `objects` objects, all with `modifier`) into one framebuffer.
pub fn flatten(layers: &[Layer<'_>], objects: usize, modifier: u64) -> Result<Flat, String> {
    let names = || {
        layers
            .iter()
            .map(|l| format!("{}x{}", text(l.format), l.planes.len()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let format = layers_format(layers)
        .ok_or_else(|| format!("cannot make one framebuffer of the layers {}", names()))?;
    let mains = main_planes(format).ok_or_else(|| {
        format!(
            "{} surfaces are not a format the planes are offered",
            text(format)
        )
    })?;
    let aux = aux_per_plane(modifier).ok_or_else(|| {
        format!("modifier {modifier:#018x} has a layout (clear colour or DCC metadata) this engine does not lay out")
    })?;
    let total = mains * (1 + aux);
    let mut planes = [(0, 0, 0); 4];
    if total > 4 {
        return Err(format!("{} needs {total} planes", text(format)));
    }
    if let [one] = layers {
        // Composed: the driver already lists main planes, then aux planes.
        if one.planes.len() != total {
            return Err(format!(
                "{} with modifier {modifier:#018x} has {} planes, not {total}",
                text(format),
                one.planes.len()
            ));
        }
        planes[..total].copy_from_slice(one.planes);
    } else {
        // Separate: each layer is one main plane followed by its aux planes.
        for (i, layer) in layers.iter().enumerate() {
            if layer.planes.len() != 1 + aux {
                return Err(format!(
                    "layer {} ({}) with modifier {modifier:#018x} has {} planes, not {}",
                    i,
                    text(layer.format),
                    layer.planes.len(),
                    1 + aux
                ));
            }
            planes[i] = layer.planes[0];
            for a in 0..aux {
                planes[mains * (1 + a) + i] = layer.planes[1 + a];
            }
        }
    }
    if let Some(p) = planes[..total].iter().find(|p| p.0 >= objects) {
        return Err(format!("a plane names object {} of {objects}", p.0));
    }
    Ok(Flat {
        format,
        planes,
        count: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const Y_TILED: u64 = (VENDOR_INTEL << 56) | 2;
    const GEN12_RC_CCS: u64 = (VENDOR_INTEL << 56) | 6;
    const GEN12_RC_CCS_CC: u64 = (VENDOR_INTEL << 56) | 8;

    #[test]
    fn nv12_separate_layers_flatten_to_two_planes() {
        let y = [(0, 0, 1920)];
        let uv = [(0, 1920 * 1088, 1920)];
        let flat = flatten(
            &[
                Layer {
                    format: R8,
                    planes: &y,
                },
                Layer {
                    format: GR88,
                    planes: &uv,
                },
            ],
            1,
            Y_TILED,
        )
        .unwrap();
        assert_eq!(flat.format, NV12);
        assert_eq!(
            &flat.planes[..flat.count],
            &[(0, 0, 1920), (0, 1920 * 1088, 1920)]
        );
    }

    #[test]
    fn ccs_aux_planes_go_after_all_main_planes() {
        // iHD with render compression: [Y, Y-CCS] and [UV, UV-CCS]; the kernel wants
        // Y, UV, Y-CCS, UV-CCS.
        let y = [(0, 0, 2048), (0, 4_000_000, 512)];
        let uv = [(0, 2_300_000, 2048), (0, 4_100_000, 512)];
        let flat = flatten(
            &[
                Layer {
                    format: R8,
                    planes: &y,
                },
                Layer {
                    format: GR88,
                    planes: &uv,
                },
            ],
            1,
            GEN12_RC_CCS,
        )
        .unwrap();
        assert_eq!(
            &flat.planes[..flat.count],
            &[
                (0, 0, 2048),
                (0, 2_300_000, 2048),
                (0, 4_000_000, 512),
                (0, 4_100_000, 512)
            ]
        );
    }

    #[test]
    fn p010_is_passed_on_with_its_own_fourcc() {
        let y = [(0, 0, 7680)];
        let uv = [(1, 0, 7680)];
        let flat = flatten(
            &[
                Layer {
                    format: R16,
                    planes: &y,
                },
                Layer {
                    format: GR1616,
                    planes: &uv,
                },
            ],
            2,
            0,
        )
        .unwrap();
        assert_eq!(flat.format, P010);
        assert_eq!(flat.count, 2);
    }

    #[test]
    fn a_composed_layer_is_taken_in_the_drivers_order_when_the_count_fits() {
        let planes = [(0, 0, 2048), (0, 100, 2048), (0, 200, 512), (0, 300, 512)];
        let flat = flatten(
            &[Layer {
                format: NV12,
                planes: &planes,
            }],
            1,
            GEN12_RC_CCS,
        )
        .unwrap();
        assert_eq!(&flat.planes[..4], &planes);
        let short = flatten(
            &[Layer {
                format: NV12,
                planes: &planes[..2],
            }],
            1,
            GEN12_RC_CCS,
        );
        assert!(short.unwrap_err().contains("has 2 planes, not 4"));
    }

    #[test]
    fn layouts_not_understood_are_refused_with_the_reason() {
        let one = [(0, 0, 64)];
        let two = [(0, 0, 64), (0, 64, 64)];
        let nv12 = |y: &'static [Plane], uv: &'static [Plane], m| {
            flatten(
                &[
                    Layer {
                        format: R8,
                        planes: y,
                    },
                    Layer {
                        format: GR88,
                        planes: uv,
                    },
                ],
                1,
                m,
            )
        };
        // Clear colour and AMD DCC: planes of their own that this engine does not lay out.
        assert!(nv12(&[(0, 0, 64)], &[(0, 64, 64)], GEN12_RC_CCS_CC)
            .unwrap_err()
            .contains("does not lay out"));
        assert!(nv12(&[(0, 0, 64)], &[(0, 64, 64)], (VENDOR_AMD << 56) | AMD_DCC).is_err());
        // An aux plane where the modifier has none.
        assert!(
            nv12(&[(0, 0, 64), (0, 9, 9)], &[(0, 64, 64), (0, 9, 9)], Y_TILED)
                .unwrap_err()
                .contains("has 2 planes, not 1")
        );
        // Three R8 layers (planar 4:2:0), a plane outside the objects, an unknown format.
        let three = flatten(
            &[
                Layer {
                    format: R8,
                    planes: &one,
                },
                Layer {
                    format: R8,
                    planes: &one,
                },
                Layer {
                    format: R8,
                    planes: &one,
                },
            ],
            1,
            0,
        );
        assert!(three.unwrap_err().contains("R8x1, R8x1, R8x1"));
        let outside = [(0, 0, 64), (3, 0, 64)];
        assert!(flatten(
            &[Layer {
                format: NV12,
                planes: &outside
            }],
            1,
            0
        )
        .unwrap_err()
        .contains("object 3 of 1"));
        assert!(flatten(
            &[Layer {
                format: fourcc(b"YUYV"),
                planes: &two[..1]
            }],
            1,
            0
        )
        .unwrap_err()
        .contains("YUYV"));
    }
}
