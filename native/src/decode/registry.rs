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
    /// "vaapi", "dmabuf" or "software".
    pub path: &'static str,
    /// Why frames do not take the hardware path (no device, driver refused, failed mid-stream).
    pub hw_fallback: Option<String>,
    pub exported: u64,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub frame_rate: f64,
    pub fps: f64,
    pub frames: u64,
    pub late: u64,
    pub delayed: u64,
    pub loops: u64,
    pub queue_depth: u32,
    pub bytes_copied_per_frame: u64,
    pub failure: Option<String>,
    pub index: &'static str,
    pub index_keyframes: u64,
    pub prerolled: bool,
}

/// What `acquire_plan` found: done already, or a decoder to open first.
pub enum Plan {
    Done(Acquired),
    Start { key: SourceKey, id: u32 },
}

#[derive(Clone, Copy, Debug)]
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
        match self.acquire_plan(consumer, &request)? {
            Plan::Done(acquired) => Ok(acquired),
            Plan::Start { key, id } => {
                let decoder = Decoder::start(id, key.clone(), request.preroll)?;
                self.acquire_finish(consumer, request, key, decoder)
            }
        }
    }

    /// The part of `acquire` that needs no I/O: validation, joining a running decoder, the
    /// limit. When a decoder must be opened, the caller opens it (outside any lock: opening a
    /// URL can take seconds) and hands it to `acquire_finish`.
    pub fn acquire_plan(&mut self, consumer: &str, request: &Request) -> Result<Plan, DecodeError> {
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
                return Ok(Plan::Done(Acquired {
                    decoder: self.entries[&key].decoder.id,
                    created: false,
                }));
            }
        }
        if self.entries.contains_key(&key) {
            return Ok(Plan::Done(self.join(consumer, request.clone(), key, false)));
        }
        self.limit_check(consumer)?;
        self.next_id += 1;
        Ok(Plan::Start {
            key,
            id: self.next_id,
        })
    }

    /// Takes in a decoder opened for `acquire_plan`'s answer. If another request started the
    /// same key meanwhile, the consumer joins that one and this decoder is dropped.
    pub fn acquire_finish(
        &mut self,
        consumer: &str,
        request: Request,
        key: SourceKey,
        decoder: Decoder,
    ) -> Result<Acquired, DecodeError> {
        if self.entries.contains_key(&key) {
            return Ok(self.join(consumer, request, key, false));
        }
        // Checked again: other acquisitions may have filled the slots while this one opened.
        self.limit_check(consumer)?;
        self.entries.insert(
            key.clone(),
            Entry {
                decoder,
                consumers: Vec::new(),
            },
        );
        Ok(self.join(consumer, request, key, true))
    }

    fn limit_check(&self, consumer: &str) -> Result<(), DecodeError> {
        // The consumer's old decoder goes away with it if nobody else uses it: that slot
        // counts as free.
        let freed = self
            .holders
            .iter()
            .find(|(c, _, _)| c == consumer)
            .is_some_and(|(_, _, old)| {
                self.entries
                    .get(old)
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
        Ok(())
    }

    /// Adds `consumer` to the running decoder of `key` and leaves its previous one.
    fn join(
        &mut self,
        consumer: &str,
        request: Request,
        key: SourceKey,
        created: bool,
    ) -> Acquired {
        let entry = self
            .entries
            .get_mut(&key)
            .expect("callers checked the key runs");
        entry.consumers.push(consumer.to_owned());
        let decoder = entry.decoder.id;
        if let Some(i) = self.holders.iter().position(|(c, _, _)| c == consumer) {
            let old = std::mem::replace(&mut self.holders[i], (consumer.to_owned(), request, key));
            self.leave(consumer, &old.2);
        } else {
            self.holders.push((consumer.to_owned(), request, key));
        }
        Acquired { decoder, created }
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
                let (path, hw_fallback) = d.path();
                DecoderStatus {
                    id: d.id,
                    key: d.key.clone(),
                    consumers: e.consumers.clone(),
                    hw: path == super::decoder::HwPathKind::Vaapi,
                    path: path.as_str(),
                    hw_fallback,
                    exported: c.exported.load(Ordering::Relaxed),
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
                    delayed: c.delayed.load(Ordering::Relaxed),
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
