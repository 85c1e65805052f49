//! The keyframe index kept beside a media file (`clip.mp4.idx`), the seed's shared-index
//! idea inside one process: built while the first pass reads the file anyway (no extra read),
//! saved atomically, and trusted on later opens only while the file's size and mtime match.
//! A missing, stale or damaged index is rebuilt; an unwritable directory only means none.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"MHKFIDX1";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyframeIndex {
    pub media_size: u64,
    pub media_mtime_ns: i64,
    pub stream: u32,
    pub time_base: (i32, i32),
    /// (pts in stream time base, byte position) of each keyframe, in file order.
    pub keyframes: Vec<(i64, i64)>,
}

/// Where the index of `media` lives, for local files only.
pub fn index_path(media: &str) -> Option<PathBuf> {
    let path = Path::new(media);
    (path.is_absolute() && !media.contains("://")).then(|| PathBuf::from(format!("{media}.idx")))
}

/// (size, mtime ns) that an index must match.
pub fn media_identity(media: &str) -> Option<(u64, i64)> {
    let meta = fs::metadata(media).ok()?;
    Some((meta.len(), meta.mtime() * 1_000_000_000 + meta.mtime_nsec()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl KeyframeIndex {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.keyframes.len() * 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.media_size.to_le_bytes());
        out.extend_from_slice(&self.media_mtime_ns.to_le_bytes());
        out.extend_from_slice(&self.stream.to_le_bytes());
        out.extend_from_slice(&self.time_base.0.to_le_bytes());
        out.extend_from_slice(&self.time_base.1.to_le_bytes());
        out.extend_from_slice(&(self.keyframes.len() as u32).to_le_bytes());
        for &(pts, pos) in &self.keyframes {
            out.extend_from_slice(&pts.to_le_bytes());
            out.extend_from_slice(&pos.to_le_bytes());
        }
        let sum = fnv1a(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<KeyframeIndex> {
        if bytes.len() < 48 || &bytes[..8] != MAGIC {
            return None;
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        if fnv1a(body) != u64::from_le_bytes(sum.try_into().ok()?) {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap());
        let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().unwrap());
        let count = u32_at(36) as usize;
        if body.len() != 40 + count * 16 {
            return None;
        }
        let keyframes = (0..count)
            .map(|i| {
                let at = 40 + i * 16;
                (u64_at(at) as i64, u64_at(at + 8) as i64)
            })
            .collect();
        Some(KeyframeIndex {
            media_size: u64_at(8),
            media_mtime_ns: u64_at(16) as i64,
            stream: u32_at(24),
            time_base: (u32_at(28) as i32, u32_at(32) as i32),
            keyframes,
        })
    }

    /// The index of `media` if one is saved and still describes the file as it is now.
    pub fn load(media: &str, stream: u32) -> Option<KeyframeIndex> {
        let index = KeyframeIndex::decode(&fs::read(index_path(media)?).ok()?)?;
        let (size, mtime) = media_identity(media)?;
        (index.media_size == size && index.media_mtime_ns == mtime && index.stream == stream)
            .then_some(index)
    }

    /// Writes the index beside `media`: temp file, fsync, rename, fsync of the directory, so a
    /// power cut leaves the old index or the new one, never half of one.
    pub fn save(&self, media: &str) -> std::io::Result<()> {
        let path = index_path(media).ok_or_else(|| std::io::Error::other("not a local file"))?;
        let dir = path.parent().unwrap_or(Path::new("/"));
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            std::process::id()
        ));
        let result = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(&self.encode())?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// The last keyframe at or before `pts`.
    pub fn keyframe_before(&self, pts: i64) -> Option<(i64, i64)> {
        self.keyframes
            .iter()
            .rev()
            .find(|(p, _)| *p <= pts)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeyframeIndex {
        KeyframeIndex {
            media_size: 12345,
            media_mtime_ns: 1_700_000_000_123_456_789,
            stream: 0,
            time_base: (1, 15360),
            keyframes: vec![(0, 48), (5120, 90_000), (10240, 180_500)],
        }
    }

    #[test]
    fn round_trips_and_finds_the_keyframe_before_a_time() {
        let index = sample();
        assert_eq!(KeyframeIndex::decode(&index.encode()), Some(index.clone()));
        assert_eq!(index.keyframe_before(7000), Some((5120, 90_000)));
        assert_eq!(index.keyframe_before(-1), None);
    }

    #[test]
    fn damage_anywhere_is_detected() {
        let bytes = sample().encode();
        for at in [0, 9, 30, 44, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert_eq!(KeyframeIndex::decode(&bad), None, "flip at {at}");
        }
        assert_eq!(KeyframeIndex::decode(&bytes[..bytes.len() - 3]), None);
    }

    #[test]
    fn only_local_absolute_paths_get_an_index() {
        assert_eq!(
            index_path("/media/a.mp4"),
            Some(PathBuf::from("/media/a.mp4.idx"))
        );
        assert_eq!(index_path("https://example.com/a.mp4"), None);
        assert_eq!(index_path("relative.mp4"), None);
    }
}
