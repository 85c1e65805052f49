//! Just enough EDID to tell monitors apart on a status page: vendor, product, name, serial.

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdidInfo {
    pub manufacturer: String,
    pub product_code: u16,
    pub monitor_name: Option<String>,
    /// The serial string descriptor if present, else the numeric serial when non-zero.
    pub serial: Option<String>,
}

const HEADER: [u8; 8] = [0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00];

pub fn edid_parse(blob: &[u8]) -> Option<EdidInfo> {
    if blob.len() < 128 || blob[..8] != HEADER {
        return None;
    }
    let id = u16::from_be_bytes([blob[8], blob[9]]);
    let letter = |shift: u16| char::from(b'A' - 1 + ((id >> shift) & 0x1f) as u8);
    let mut info = EdidInfo {
        manufacturer: [letter(10), letter(5), letter(0)].iter().collect(),
        product_code: u16::from_le_bytes([blob[10], blob[11]]),
        ..EdidInfo::default()
    };
    let numeric_serial = u32::from_le_bytes([blob[12], blob[13], blob[14], blob[15]]);
    for start in [54, 72, 90, 108] {
        let d = &blob[start..start + 18];
        // Display descriptors start with a zero pixel clock; timing descriptors do not.
        if d[0] != 0 || d[1] != 0 {
            continue;
        }
        let text = || {
            let raw = &d[5..18];
            let end = raw.iter().position(|&b| b == 0x0a).unwrap_or(raw.len());
            let s: String = raw[..end]
                .iter()
                .map(|&b| {
                    if b.is_ascii_graphic() || b == b' ' {
                        char::from(b)
                    } else {
                        '?'
                    }
                })
                .collect();
            let s = s.trim().to_owned();
            (!s.is_empty()).then_some(s)
        };
        match d[3] {
            0xfc => info.monitor_name = text(),
            0xff => info.serial = text(),
            _ => {}
        }
    }
    if info.serial.is_none() && numeric_serial != 0 {
        info.serial = Some(numeric_serial.to_string());
    }
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edid_with(name: &[u8], serial: &[u8], numeric: u32) -> Vec<u8> {
        let mut e = vec![0u8; 128];
        e[..8].copy_from_slice(&HEADER);
        // "DEL" = 00100 00101 01100
        let id: u16 = (4 << 10) | (5 << 5) | 12;
        e[8..10].copy_from_slice(&id.to_be_bytes());
        e[10..12].copy_from_slice(&0xa0c3u16.to_le_bytes());
        e[12..16].copy_from_slice(&numeric.to_le_bytes());
        e[54] = 1; // a detailed timing, skipped
        for (start, tag, text) in [(72, 0xfc, name), (90, 0xff, serial)] {
            e[start + 3] = tag;
            let field = &mut e[start + 5..start + 18];
            field.fill(0x20);
            field[..text.len()].copy_from_slice(text);
            if text.len() < 13 {
                field[text.len()] = 0x0a;
            }
        }
        e
    }

    #[test]
    fn name_serial_and_vendor() {
        let info = edid_parse(&edid_with(b"DELL U2720Q", b"ABC123", 7)).unwrap();
        assert_eq!(info.manufacturer, "DEL");
        assert_eq!(info.product_code, 0xa0c3);
        assert_eq!(info.monitor_name.as_deref(), Some("DELL U2720Q"));
        assert_eq!(info.serial.as_deref(), Some("ABC123"));
    }

    #[test]
    fn numeric_serial_when_no_descriptor() {
        let info = edid_parse(&edid_with(b"QEMU Monitor", b"", 42)).unwrap();
        assert_eq!(info.serial.as_deref(), Some("42"));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(edid_parse(&[0u8; 128]), None);
        assert_eq!(edid_parse(&HEADER), None);
    }
}
