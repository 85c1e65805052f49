//! What decides whether two outputs can share one decoder: the source and every decode
//! parameter that changes the decoded pixels. Layout, crop, rotation and volume are the
//! outputs' business and deliberately not here.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HwMode {
    /// VAAPI when the stream and the device allow it, else software.
    Auto,
    Software,
    /// Software decode handed on through dma-bufs (udmabuf) exactly as VAAPI surfaces are:
    /// the zero-copy path of the engine, provable without a GPU.
    Dmabuf,
}

impl HwMode {
    pub fn parse(text: &str) -> Option<HwMode> {
        match text {
            "auto" => Some(HwMode::Auto),
            "software" => Some(HwMode::Software),
            "dmabuf" => Some(HwMode::Dmabuf),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            HwMode::Auto => "auto",
            HwMode::Software => "software",
            HwMode::Dmabuf => "dmabuf",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SourceKey {
    /// A path or URL, as given.
    pub source: String,
    pub hw: HwMode,
    /// Start offset in milliseconds (integer, so the key hashes exactly).
    pub start_ms: u64,
    /// Video stream index; None picks the best one.
    pub stream: Option<u32>,
    /// With sharing off, each consumer gets a decoder of its own: its name goes in the key.
    pub exclusive_to: Option<String>,
    /// 0: the source's shared decoder. A preroll promises the source from its start, so when
    /// the shared one already plays (another playlist further along the same file), the
    /// preroll gets another decoder of the same source: the next free instance.
    pub instance: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn key(source: &str, start_ms: u64) -> SourceKey {
        SourceKey {
            source: source.into(),
            hw: HwMode::Auto,
            start_ms,
            stream: None,
            exclusive_to: None,
            instance: 0,
        }
    }

    #[test]
    fn same_source_and_parameters_are_one_key() {
        let set: HashSet<_> = [key("a.mp4", 0), key("a.mp4", 0)].into_iter().collect();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn start_offset_and_hw_mode_make_different_keys() {
        let mut software = key("a.mp4", 0);
        software.hw = HwMode::Software;
        let set: HashSet<_> = [key("a.mp4", 0), key("a.mp4", 5000), software]
            .into_iter()
            .collect();
        assert_eq!(set.len(), 3);
    }
}
