//! Decoding, one decoder per source however many outputs show it: the key that decides
//! sharing, the registry that counts consumers, and the decoder thread itself.

pub mod color;
pub mod decoder;
pub mod error;
mod frame_convert;
mod frame_pace;
mod frame_publish;
mod frame_ring;
pub use frame_ring::buffer_writable;
pub mod index;
pub mod io;
pub mod key;
pub mod layout;
pub mod nv12;
pub mod pattern;
pub mod policy;
pub mod prime;
pub mod registry;
mod session_fall_back;
mod session_open;
mod session_reopen;
mod session_run;
pub mod vaapi;
