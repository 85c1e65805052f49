//! The decoders by key, with the consumers (outputs) of each: get-or-create with reference
//! counting, as the shared-decode RFC designs it. A consumer asking again for what it already
//! has changes nothing, so a config reload that keeps a source keeps its decoder running.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::decoder::Decoder;
use super::error::DecodeError;
use super::key::{HwMode, SourceKey};

/// What a consumer asks to play.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub source: String,
    pub hw: HwMode,
    pub start_ms: u64,
    pub stream: Option<u32>,
    /// Decode the first frame and wait for an output to take it (the next playlist item).
    pub preroll: bool,
}

impl Request {
    fn key(&self, exclusive_to: Option<&str>) -> SourceKey {
        SourceKey {
            source: self.source.clone(),
            hw: self.hw,
            start_ms: self.start_ms,
            stream: self.stream,
            exclusive_to: exclusive_to.map(str::to_owned),
        }
    }
}

struct Entry {
    decoder: Decoder,
    /// In the order they joined.
    consumers: Vec<String>,
}

pub struct Registry {
    shared: bool,
    max_decoders: u32,
    entries: HashMap<SourceKey, Entry>,
    /// Consumer -> (its request, the key it holds), in the order consumers first came.
    holders: Vec<(String, Request, SourceKey)>,
    next_id: u32,
}

/// One decoder as status calls show it.
pub struct DecoderStatus {
    pub id: u32,
    pub key: SourceKey,
    pub consumers: Vec<String>,
    pub hw: bool,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub frame_rate: f64,
    pub fps: f64,
    pub frames: u64,
    pub late: u64,
    pub loops: u64,
    pub queue_depth: u32,
    pub bytes_copied_per_frame: u64,
    pub failure: Option<String>,
    pub index: &'static str,
    pub index_keyframes: u64,
    pub prerolled: bool,
}

pub struct Acquired {
    pub decoder: u32,
    /// A decoder was started for this request (false: joined or kept one).
    pub created: bool,
}

impl Registry {
    pub fn new(shared: bool, max_decoders: u32) -> Registry {
        Registry {
            shared,
            max_decoders: max_decoders.max(1),
            entries: HashMap::new(),
            holders: Vec::new(),
            next_id: 0,
        }
    }

    pub fn shared(&self) -> bool {
        self.shared
    }

    pub fn max_decoders(&self) -> u32 {
        self.max_decoders
    }

    /// Gives `consumer` the decoder for `request`, starting one only when no decoder with
    /// the same key runs. A consumer switching sources leaves its old decoder, which stops
    /// when nobody else uses it.
    pub fn acquire(&mut self, consumer: &str, request: Request) -> Result<Acquired, DecodeError> {
        if consumer.is_empty() {
            return Err(DecodeError::BadRequest("consumer name is empty".into()));
        }
        if request.source.is_empty() {
            return Err(DecodeError::BadRequest(format!(
                "consumer {consumer}: source is empty"
            )));
        }
        let key = request.key((!self.shared).then_some(consumer));
        let held = self.holders.iter().position(|(c, _, _)| c == consumer);
        if let Some(i) = held {
            if self.holders[i].2 == key {
                let id = self.entries[&key].decoder.id;
                return Ok(Acquired {
                    decoder: id,
                    created: false,
                });
            }
        }
        let created = if let Some(entry) = self.entries.get_mut(&key) {
            entry.consumers.push(consumer.to_owned());
            false
        } else {
            // The consumer's old decoder goes away with it if nobody else uses it: that slot
            // counts as free.
            let freed = held.is_some_and(|i| {
                self.entries
                    .get(&self.holders[i].2)
                    .is_some_and(|e| e.consumers.len() == 1)
            });
            let running = self.entries.len() as u32 - u32::from(freed);
            if running >= self.max_decoders {
                return Err(DecodeError::Limit {
                    max: self.max_decoders,
                    running: self
                        .entries
                        .values()
                        .map(|e| format!("{} ({})", e.decoder.key.source, e.consumers.join(", ")))
                        .collect(),
                });
            }
            self.next_id += 1;
            let decoder = Decoder::start(self.next_id, key.clone(), request.preroll)?;
            self.entries.insert(
                key.clone(),
                Entry {
                    decoder,
                    consumers: vec![consumer.to_owned()],
                },
            );
            true
        };
        if let Some(i) = held {
            let old = std::mem::replace(
                &mut self.holders[i],
                (consumer.to_owned(), request, key.clone()),
            );
            self.leave(consumer, &old.2);
        } else {
            self.holders
                .push((consumer.to_owned(), request, key.clone()));
        }
        Ok(Acquired {
            decoder: self.entries[&key].decoder.id,
            created,
        })
    }

    /// The consumer stops using its decoder; the last one out stops it.
    pub fn release(&mut self, consumer: &str) -> Result<(), DecodeError> {
        let i = self
            .holders
            .iter()
            .position(|(c, _, _)| c == consumer)
            .ok_or_else(|| DecodeError::UnknownConsumer(consumer.to_owned()))?;
        let (_, _, key) = self.holders.remove(i);
        self.leave(consumer, &key);
        Ok(())
    }

    fn leave(&mut self, consumer: &str, key: &SourceKey) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        entry.consumers.retain(|c| c != consumer);
        if entry.consumers.is_empty() {
            // Dropping the decoder stops and joins its thread, freeing everything it held.
            self.entries.remove(key);
        }
    }

    /// Turns sharing on or off at run time: every consumer moves to the decoder its request
    /// maps to now. Decoders whose key survives keep running.
    pub fn set_shared(&mut self, shared: bool) -> Result<(), DecodeError> {
        if shared == self.shared {
            return Ok(());
        }
        self.shared = shared;
        let holders: Vec<(String, Request)> = self
            .holders
            .iter()
            .map(|(c, r, _)| (c.clone(), r.clone()))
            .collect();
        let mut first_error = None;
        for (consumer, request) in holders {
            if let Err(e) = self.acquire(&consumer, request) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    pub fn set_max_decoders(&mut self, max: u32) {
        self.max_decoders = max.max(1);
    }

    pub fn decoder_of(&self, consumer: &str) -> Option<&Decoder> {
        let (_, _, key) = self.holders.iter().find(|(c, _, _)| c == consumer)?;
        self.entries.get(key).map(|e| &e.decoder)
    }

    pub fn source_of(&self, consumer: &str) -> Option<super::decoder::FrameSource> {
        self.decoder_of(consumer).map(Decoder::source)
    }

    pub fn status(&self) -> Vec<DecoderStatus> {
        let mut out: Vec<DecoderStatus> = self
            .entries
            .values()
            .map(|e| {
                let d = &e.decoder;
                let c = d.counters();
                let interval = c.interval_us.load(Ordering::Relaxed);
                DecoderStatus {
                    id: d.id,
                    key: d.key.clone(),
                    consumers: e.consumers.clone(),
                    hw: false,
                    codec: d.info.codec.clone(),
                    width: d.info.width,
                    height: d.info.height,
                    frame_rate: d.info.frame_rate,
                    fps: if interval > 0 {
                        1_000_000.0 / interval as f64
                    } else {
                        0.0
                    },
                    frames: c.frames.load(Ordering::Relaxed),
                    late: c.late.load(Ordering::Relaxed),
                    loops: c.loops.load(Ordering::Relaxed),
                    queue_depth: d.queue_depth(),
                    bytes_copied_per_frame: c.bytes_copied_last.load(Ordering::Relaxed),
                    failure: d.failure(),
                    index: match c.index_state.load(Ordering::Relaxed) {
                        1 => "loaded",
                        2 => "built",
                        _ => "none",
                    },
                    index_keyframes: c.index_keyframes.load(Ordering::Relaxed),
                    prerolled: d.held(),
                }
            })
            .collect();
        out.sort_by_key(|s| s.id);
        out
    }

    /// Stops every decoder.
    pub fn clear(&mut self) {
        self.holders.clear();
        self.entries.clear();
    }
}
