//! Kernel mode setting, one file per concept: the card, its property table, what it
//! offers, outputs, buffers, the atomic commit and the presentation thread.

pub mod buffer;
pub mod commit;
pub mod convert;
pub mod device;
pub mod edid;
pub mod engine;
pub mod error;
pub mod formats;
pub mod ids;
pub mod output;
pub mod pacing;
pub mod present;
pub mod probe;
pub mod props;
pub mod resources;
pub mod video;
pub mod video_health;
pub mod writeback;
