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
    /// A decoder of its own from the start (a playlist item), never a running one.
    pub fresh: bool,
    /// Keep the last frame at the end of the file instead of looping (with fresh and preroll).
    pub hold_at_end: bool,
}

impl Request {
    pub fn key(&self, exclusive_to: Option<&str>) -> SourceKey {
        SourceKey {
            source: self.source.clone(),
            hw: self.hw,
            start_ms: self.start_ms,
            stream: self.stream,
            exclusive_to: exclusive_to.map(str::to_owned),
            instance: 0,
        }
    }
}

struct Entry {
    decoder: Decoder,
    /// In the order they joined.
    consumers: Vec<String>,
    /// Consumers that joined although sharing is off, because `max_decoders` was reached
    /// (the seed's "maximum decoders before forcing shared mode").
    forced: Vec<String>,
}

pub struct Registry {
    shared: bool,
    max_decoders: u32,
    entries: HashMap<SourceKey, Entry>,
    /// Consumer -> (its request, the key it holds), in the order consumers first came.
    holders: Vec<(String, Request, SourceKey)>,
    next_id: u32,
    /// Decoders that lost their last consumer, told to stop but not yet joined: the caller
    /// takes them (`retired_take`) and joins them outside the lock, off the JavaScript thread.
    retired: Vec<Decoder>,
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
    pub sar: (u32, u32),
    pub rotation: u32,
    pub frame_rate: f64,
    pub fps: f64,
    pub frames: u64,
    pub late: u64,
    pub delayed: u64,
    pub loops: u64,
    pub queue_depth: u32,
    pub bytes_copied_per_frame: u64,
    pub failure: Option<String>,
    /// The ERR_ code of `failure`.
    pub failure_code: Option<&'static str>,
    /// A consumer shares this decoder only because `max_decoders` was reached.
    pub forced_shared: bool,
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
    /// Joined a running decoder of the same source because `max_decoders` was reached while
    /// sharing is off.
    pub forced_shared: bool,
}

impl Registry {
    pub fn new(shared: bool, max_decoders: u32) -> Registry {
        Registry {
            shared,
            max_decoders: max_decoders.max(1),
            entries: HashMap::new(),
            holders: Vec::new(),
            next_id: 0,
            retired: Vec::new(),
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
                decoder.hold_at_end_set(request.hold_at_end);
                self.acquire_finish(consumer, request, key, decoder)
            }
        }
    }

    /// A prerolled request switches only to a picture: joining a decoder that already stopped
    /// on an error would not give one.
    fn picture_check(&self, key: &SourceKey, request: &Request) -> Result<(), DecodeError> {
        let failure = self.entries.get(key).and_then(|e| e.decoder.failure());
        match failure {
            Some(f) if request.preroll => Err(DecodeError::NoPicture {
                source: request.source.clone(),
                reason: format!("its running decoder stopped: {}", f.reason),
            }),
            _ => Ok(()),
        }
    }

    /// Decoders stopped since the last call: the caller drops them (joins their threads)
    /// after releasing the registry's lock.
    pub fn retired_take(&mut self) -> Vec<Decoder> {
        std::mem::take(&mut self.retired)
    }

    /// Sharing is off and the limit is reached: the running decoder `consumer` can join
    /// instead, one for the same source and decode parameters (its key without the owner).
    fn forced_candidate(&self, request: &Request) -> Option<SourceKey> {
        if self.shared {
            return None;
        }
        let wanted = request.key(None);
        let mut keys: Vec<&SourceKey> = self
            .entries
            .keys()
            .filter(|k| {
                SourceKey {
                    exclusive_to: None,
                    ..(*k).clone()
                } == wanted
            })
            .collect();
        // The oldest decoder, so every forced consumer lands on the same one.
        keys.sort_by_key(|k| self.entries[*k].decoder.id);
        keys.first().map(|k| (*k).clone())
    }

    /// Joins the candidate of `forced_candidate`, or answers the limit error.
    fn forced_join(
        &mut self,
        consumer: &str,
        request: &Request,
        limit: DecodeError,
    ) -> Result<Acquired, DecodeError> {
        let Some(key) = self.forced_candidate(request) else {
            return Err(limit);
        };
        self.picture_check(&key, request)?;
        if self
            .holders
            .iter()
            .any(|(c, r, k)| c == consumer && *k == key && r == request)
        {
            // Asked again for what it has (a config reload): nothing changes.
            return Ok(Acquired {
                decoder: self.entries[&key].decoder.id,
                created: false,
                forced_shared: true,
            });
        }
        let mut acquired = self.join(consumer, request.clone(), key.clone(), false);
        if let Some(entry) = self.entries.get_mut(&key) {
            if !entry.forced.iter().any(|c| c == consumer) {
                entry.forced.push(consumer.to_owned());
            }
        }
        acquired.forced_shared = true;
        Ok(acquired)
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
            // Asked again for what it holds (a reload), whichever instance that is: it stays.
            let holds = &self.holders[i].2;
            if *holds
                == (SourceKey {
                    instance: holds.instance,
                    ..key.clone()
                })
            {
                return Ok(Plan::Done(Acquired {
                    decoder: self.entries[holds].decoder.id,
                    created: false,
                    forced_shared: false,
                }));
            }
        }
        if let Some(i) = held {
            let (_, held_request, held_key) = &self.holders[i];
            let forced_here = self
                .entries
                .get(held_key)
                .is_some_and(|e| e.forced.iter().any(|c| c == consumer));
            if forced_here && held_request == request && !self.entries.contains_key(&key) {
                // A forced consumer asked again for the same (a config reload): it stays where
                // it is, even when its slot would now be free.
                return Ok(Plan::Done(Acquired {
                    decoder: self.entries[held_key].decoder.id,
                    created: false,
                    forced_shared: true,
                }));
            }
        }
        let key = self.preroll_key(request, key);
        if self.entries.contains_key(&key) {
            self.picture_check(&key, request)?;
            return Ok(Plan::Done(self.join(consumer, request.clone(), key, false)));
        }
        if let Err(limit) = self.limit_check(consumer) {
            return self.forced_join(consumer, request, limit).map(Plan::Done);
        }
        self.next_id += 1;
        Ok(Plan::Start {
            key,
            id: self.next_id,
        })
    }

    /// A fresh request (a playlist item) is the source from its start, timed from the moment
    /// its own outputs take it: it never joins a running decoder of the source (that one is
    /// somewhere in the middle of the file: another playlist further along it), nor another
    /// fresh one (whose outputs may take it earlier or later), so it gets the next free
    /// instance. Outputs that show one picture (a video wall, a mirrored pair) are one
    /// consumer and share one decoder still; the demo and `play` join as before.
    fn preroll_key(&self, request: &Request, mut key: SourceKey) -> SourceKey {
        if !request.fresh {
            return key;
        }
        while self.entries.contains_key(&key) {
            key.instance += 1;
        }
        key
    }

    /// Takes in a decoder opened for `acquire_plan`'s answer. If another request started the
    /// same key meanwhile, the consumer joins that one and this decoder is dropped; a fresh
    /// request keeps its own decoder under the next free instance instead: two playlists that
    /// preroll the same clip at once (opening takes longer on a busy machine) must not end up
    /// on one decoder, timed from whichever output took it first.
    pub fn acquire_finish(
        &mut self,
        consumer: &str,
        request: Request,
        key: SourceKey,
        mut decoder: Decoder,
    ) -> Result<Acquired, DecodeError> {
        let key = if request.fresh && self.entries.contains_key(&key) {
            let free = self.preroll_key(&request, key);
            decoder.key = free.clone();
            free
        } else {
            key
        };
        if self.entries.contains_key(&key) {
            decoder.stop();
            self.retired.push(decoder);
            return Ok(self.join(consumer, request, key, false));
        }
        // Checked again: other acquisitions may have filled the slots while this one opened.
        if let Err(limit) = self.limit_check(consumer) {
            decoder.stop();
            self.retired.push(decoder);
            return self.forced_join(consumer, &request, limit);
        }
        self.entries.insert(
            key.clone(),
            Entry {
                decoder,
                consumers: Vec::new(),
                forced: Vec::new(),
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
        let decoder = self
            .entries
            .get(&key)
            .expect("callers checked the key runs")
            .decoder
            .id;
        let entry = (consumer.to_owned(), request, key.clone());
        if let Some(i) = self.holders.iter().position(|(c, _, _)| c == consumer) {
            let old = std::mem::replace(&mut self.holders[i], entry);
            if old.2 != key {
                self.leave(consumer, &old.2);
            }
        } else {
            self.holders.push(entry);
        }
        if let Some(entry) = self.entries.get_mut(&key) {
            // A forced consumer that now joins by its own key is no longer forced.
            entry.forced.retain(|c| c != consumer);
            if !entry.consumers.iter().any(|c| c == consumer) {
                entry.consumers.push(consumer.to_owned());
            }
        }
        Acquired {
            decoder,
            created,
            forced_shared: false,
        }
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
        entry.forced.retain(|c| c != consumer);
        if entry.consumers.is_empty() {
            // Told to stop now; joined (which frees everything it held) outside the lock.
            if let Some(entry) = self.entries.remove(key) {
                entry.decoder.stop();
                self.retired.push(entry.decoder);
            }
        }
    }

    /// Turns sharing on or off at run time: every consumer moves to the decoder its request
    /// maps to now. Decoders whose key survives keep running.
    pub fn set_shared(&mut self, shared: bool) -> Result<(), DecodeError> {
        if shared == self.shared {
            return Ok(());
        }
        self.shared = shared;
        if shared {
            self.exclusive_merge();
            return Ok(());
        }
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

    /// Sharing turned on: each decoder now serves its key without an owner. The oldest decoder
    /// of each such key keeps running (re-keyed, no restart, no gap) and takes the consumers
    /// of the others, which stop. Never starts a decoder, so never trips the limit.
    fn exclusive_merge(&mut self) {
        let mut keys: Vec<SourceKey> = self.entries.keys().cloned().collect();
        keys.sort_by_key(|k| self.entries[k].decoder.id);
        for old in keys {
            let mut entry = self.entries.remove(&old).expect("listed above");
            let new = SourceKey {
                exclusive_to: None,
                ..old.clone()
            };
            entry.forced.clear();
            match self.entries.get_mut(&new) {
                Some(kept) => {
                    for c in entry.consumers.drain(..) {
                        if !kept.consumers.contains(&c) {
                            kept.consumers.push(c);
                        }
                    }
                    entry.decoder.stop();
                    self.retired.push(entry.decoder);
                }
                None => {
                    entry.decoder.key = new.clone();
                    self.entries.insert(new.clone(), entry);
                }
            }
            for holder in self.holders.iter_mut().filter(|h| h.2 == old) {
                holder.2 = new.clone();
            }
        }
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
                    sar: d.info.sar,
                    rotation: d.info.rotation,
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
                    failure: d.failure().map(|f| f.reason),
                    failure_code: d.failure().map(|f| f.code.as_str()),
                    forced_shared: !e.forced.is_empty(),
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
        for (_, entry) in self.entries.drain() {
            entry.decoder.stop();
            self.retired.push(entry.decoder);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(source: &str) -> Request {
        Request {
            source: source.into(),
            hw: HwMode::Software,
            start_ms: 0,
            stream: None,
            preroll: false,
            fresh: false,
            hold_at_end: false,
        }
    }

    const A: &str = "lavfi:color=c=red:size=16x16:rate=10";
    const B: &str = "lavfi:color=c=blue:size=16x16:rate=10";

    #[test]
    fn at_the_limit_with_sharing_off_an_output_joins_the_running_decoder_of_its_source() {
        let mut r = Registry::new(false, 1);
        let first = r.acquire("HDMI-A-1", request(A)).unwrap();
        assert!(first.created && !first.forced_shared);
        let second = r.acquire("HDMI-A-2", request(A)).unwrap();
        assert_eq!(second.decoder, first.decoder);
        assert!(second.forced_shared && !second.created);
        let status = r.status();
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].consumers, ["HDMI-A-1", "HDMI-A-2"]);
        assert!(status[0].forced_shared);
        // A reload asks again: nothing moves, nothing restarts.
        let again = r.acquire("HDMI-A-2", request(A)).unwrap();
        assert_eq!((again.decoder, again.forced_shared), (first.decoder, true));
        // A source no decoder runs is still refused.
        let e = r.acquire("HDMI-A-3", request(B)).unwrap_err();
        assert_eq!(e.code(), "ERR_DECODE_LIMIT");
        // The owner leaves: the forced consumer keeps the decoder, still forced, even on reload.
        r.release("HDMI-A-1").unwrap();
        assert!(
            r.retired_take().is_empty(),
            "the decoder still has a consumer"
        );
        let kept = r.acquire("HDMI-A-2", request(A)).unwrap();
        assert_eq!(kept.decoder, first.decoder);
        r.release("HDMI-A-2").unwrap();
        assert_eq!(r.retired_take().len(), 1, "the last one out retires it");
        assert!(r.status().is_empty());
    }

    #[test]
    fn forced_sharing_ends_when_sharing_is_turned_on_and_never_happens_below_the_limit() {
        let mut r = Registry::new(false, 2);
        r.acquire("A", request(A)).unwrap();
        let own = r.acquire("B", request(A)).unwrap();
        assert!(
            own.created && !own.forced_shared,
            "below the limit: its own decoder"
        );
        let forced = r.acquire("C", request(A)).unwrap();
        assert!(forced.forced_shared);
        r.set_shared(true).unwrap();
        let status = r.status();
        assert_eq!(status.len(), 1);
        assert!(!status[0].forced_shared);
        assert_eq!(status[0].consumers.len(), 3);
        // The oldest decoder runs on under the shared key (no restart); the other one stops.
        assert_eq!(r.retired_take().len(), 1);
        assert_eq!(status[0].consumers, ["A", "C", "B"]);
    }

    #[test]
    fn releasing_hands_the_decoder_over_stopped_instead_of_joining_under_the_lock() {
        let mut r = Registry::new(true, 4);
        r.acquire("A", request(A)).unwrap();
        r.release("A").unwrap();
        let retired = r.retired_take();
        assert_eq!(retired.len(), 1);
        assert!(retired[0].stopping(), "told to stop at once");
    }

    #[test]
    fn a_preroll_starts_from_the_beginning_never_in_the_middle_of_a_playing_decoder() {
        let mut r = Registry::new(true, 8);
        let pre = || Request {
            preroll: true,
            fresh: true,
            hold_at_end: false,
            ..request(A)
        };
        // Not fresh: the demo, a play command (prerolled or not, they join what runs).
        let playing = r.acquire("demo", request(A)).unwrap();
        let demo2 = Request {
            preroll: true,
            ..request(A)
        };
        assert_eq!(r.acquire("demo-2", demo2).unwrap().decoder, playing.decoder);
        let first = r.acquire("content#1", pre()).unwrap();
        assert!(first.created, "a decoder of its own, from the file's start");
        assert_ne!(first.decoder, playing.decoder);
        // Nor another preroll: its outputs may take it at another moment than these.
        let second = r.acquire("content#2", pre()).unwrap();
        assert!(second.created);
        assert!(second.decoder != first.decoder && second.decoder != playing.decoder);
        // Asked again (a reload), each consumer stays where it is.
        assert_eq!(
            r.acquire("content#2", pre()).unwrap().decoder,
            second.decoder
        );
        assert_eq!(
            r.acquire("content#1", pre()).unwrap().decoder,
            first.decoder
        );
        // A plain acquire still shares the running decoder of its source.
        assert_eq!(
            r.acquire("mirror", request(A)).unwrap().decoder,
            playing.decoder
        );
        // Released, its instance is free for the next preroll again.
        r.release("content#1").unwrap();
        assert!(r.acquire("content#3", pre()).unwrap().created);
        assert_eq!(r.status().len(), 3);
    }

    #[test]
    fn two_prerolls_of_one_source_opened_at_once_keep_a_decoder_each() {
        let mut r = Registry::new(true, 8);
        let pre = Request {
            preroll: true,
            fresh: true,
            hold_at_end: false,
            ..request(A)
        };
        // Both planned before either is open: the same key for both.
        let plan = |r: &mut Registry, consumer: &str| match r.acquire_plan(consumer, &pre).unwrap()
        {
            Plan::Start { key, id } => (key, id),
            Plan::Done(_) => panic!("{consumer}: expected a decoder to open"),
        };
        let (key1, id1) = plan(&mut r, "content#1");
        let (key2, id2) = plan(&mut r, "content#2");
        assert_eq!(key1, key2);
        let first = r
            .acquire_finish(
                "content#1",
                pre.clone(),
                key1.clone(),
                Decoder::start(id1, key1, true).unwrap(),
            )
            .unwrap();
        let second = r
            .acquire_finish(
                "content#2",
                pre.clone(),
                key2.clone(),
                Decoder::start(id2, key2, true).unwrap(),
            )
            .unwrap();
        assert!(second.created, "its own decoder, not the first one's");
        assert_ne!(first.decoder, second.decoder);
        assert!(r.retired_take().is_empty(), "no decoder thrown away");
        let status = r.status();
        assert_eq!(status.len(), 2);
        assert!(
            status.iter().all(|d| d.consumers.len() == 1),
            "one consumer each"
        );
    }
}
