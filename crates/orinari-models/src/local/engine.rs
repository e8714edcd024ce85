//! The inference thread: one scheduler that owns the model and interleaves
//! sequences fairly.
//!
//! Up to `max_active` sequences are in flight; each turn advances the next one
//! by one step (a prompt chunk of at most [`PREFILL_CHUNK`] tokens, or one new
//! token), round-robin, so a long prompt or a long answer never starves the
//! others. Requests beyond that wait in FIFO order. Events go out through each
//! sequence's bounded channel without ever blocking the thread: a sequence
//! whose client is slow simply waits its turn until the channel has room. A
//! sequence whose receiver was dropped (client gone) is discarded at its next
//! turn, so generation stops within one token.
//!
//! A sequence starts from the longest prefix of its prompt found in the
//! [`PrefixCache`] (whole prefill chunks, so the result is exactly what an
//! empty cache gives) and, when it ends without error, leaves its prompt's
//! keys and values there for the next turn of the same conversation.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

pub use orinari_telemetry::models::PrefixCacheMeter as PrefixMetrics;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::llama::{KvCache, Llama};
use super::prefix::PrefixCache;
use super::sampler::Sampler;
use super::text::{Piece, TextAssembler};
use super::tokenizer::Tokenizer;
use crate::{Event, FinishReason, ModelError, Sampling, Usage};

/// Prompt tokens fed per turn; bounds how long one turn keeps others waiting.
pub const PREFILL_CHUNK: usize = 128;

/// One admitted request.
pub struct Job {
    pub prompt: Vec<u32>,
    pub sampling: Sampling,
    pub events: mpsc::Sender<Result<Event, ModelError>>,
}

/// Counters shared between the engine and the admitting side.
#[derive(Default)]
pub struct Shared {
    /// Requests admitted and not finished (active + waiting).
    pub in_flight: AtomicUsize,
    /// False once the thread has stopped.
    pub alive: AtomicBool,
    /// The prefix cache's counters.
    pub prefix: PrefixStats,
}

/// What the prefix cache did, for metrics and tests.
#[derive(Default)]
pub struct PrefixStats {
    /// Sequences that started from a cached prefix.
    pub hits: AtomicU64,
    /// Sequences that found none.
    pub misses: AtomicU64,
    /// Prompt tokens not fed again thanks to it.
    pub reused_tokens: AtomicU64,
    /// Bytes it holds now.
    pub bytes: AtomicU64,
    /// Exported metrics, once attached.
    pub metrics: OnceLock<PrefixMetrics>,
}

impl PrefixStats {
    fn record_start(&self, reused: usize) {
        let m = self.metrics.get();
        if reused > 0 {
            self.hits.fetch_add(1, Ordering::Relaxed);
            self.reused_tokens
                .fetch_add(reused as u64, Ordering::Relaxed);
            if let Some(m) = m {
                m.hits.inc();
                m.reused_tokens.inc_by(reused as u64);
            }
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = m {
                m.misses.inc();
            }
        }
    }

    fn record_bytes(&self, bytes: usize) {
        self.bytes.store(bytes as u64, Ordering::Relaxed);
        if let Some(m) = self.metrics.get() {
            m.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }
}

struct Sequence {
    job: Job,
    cache: KvCache,
    fed: usize,
    sampler: Sampler,
    text: TextAssembler,
    completion_tokens: u32,
    outbox: VecDeque<Result<Event, ModelError>>,
    finished: bool,
    /// A step failed: the cache may be inconsistent and is not kept.
    failed: bool,
    prompt_tokens: u32,
}

enum Progress {
    /// Did work (or is finished and flushed).
    Stepped,
    /// Waiting for the client to read.
    Blocked,
}

/// Run the scheduler until every sender is dropped and all work is done.
pub fn run(
    model: Arc<Llama>,
    tokenizer: Arc<Tokenizer>,
    jobs: std_mpsc::Receiver<Job>,
    shared: Arc<Shared>,
    max_active: usize,
    prefix_budget: usize,
) {
    shared.alive.store(true, Ordering::Release);
    let mut prefix = PrefixCache::new(prefix_budget);
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut active: VecDeque<Sequence> = VecDeque::new();
    let mut open = true;
    loop {
        if active.is_empty() && waiting.is_empty() {
            if !open {
                break;
            }
            match jobs.recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => break,
            }
        }
        while open {
            match jobs.try_recv() {
                Ok(job) => waiting.push_back(job),
                Err(std_mpsc::TryRecvError::Empty) => break,
                Err(std_mpsc::TryRecvError::Disconnected) => open = false,
            }
        }
        while active.len() < max_active {
            let Some(job) = waiting.pop_front() else {
                break;
            };
            if job.events.is_closed() {
                shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            let seq = Sequence::new(job, &model, &mut prefix);
            shared.prefix.record_start(seq.fed);
            shared.prefix.record_bytes(prefix.bytes());
            active.push_back(seq);
        }
        // One round: every active sequence gets at most one step.
        let mut progressed = false;
        for _ in 0..active.len() {
            let Some(mut seq) = active.pop_front() else {
                break;
            };
            if seq.job.events.is_closed() {
                shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                seq.retire(&model, &mut prefix, &shared);
                continue;
            }
            match seq.turn(&model, &tokenizer) {
                Progress::Stepped => progressed = true,
                Progress::Blocked => {}
            }
            if seq.finished && seq.outbox.is_empty() {
                shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                seq.retire(&model, &mut prefix, &shared);
            } else {
                active.push_back(seq);
            }
        }
        if !progressed && !active.is_empty() {
            // Every client is slow to read: wait a little rather than spin.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    shared.alive.store(false, Ordering::Release);
}

impl Sequence {
    fn new(job: Job, model: &Llama, prefix: &mut PrefixCache) -> Self {
        let s = &job.sampling;
        let (cache, fed) = match prefix.lookup(model, &job.prompt, job.prompt.len()) {
            Some(hit) => (hit.cache, hit.reused),
            None => (model.new_cache(), 0),
        };
        Self {
            sampler: Sampler::new(s.temperature, s.top_p, s.seed),
            text: TextAssembler::new(&s.stop),
            cache,
            fed,
            completion_tokens: 0,
            outbox: VecDeque::new(),
            finished: false,
            failed: false,
            prompt_tokens: job.prompt.len() as u32,
            job,
        }
    }

    /// The sequence is over: leave its keys and values to the prefix cache
    /// unless a step failed.
    fn retire(self, model: &Llama, prefix: &mut PrefixCache, shared: &Shared) {
        if self.failed || self.cache.len() != self.fed {
            return;
        }
        let prefilled = self.prompt_tokens as usize;
        prefix.insert(model, self.job.prompt, self.cache, prefilled);
        shared.prefix.record_bytes(prefix.bytes());
    }

    fn flush(&mut self) -> bool {
        while let Some(ev) = self.outbox.pop_front() {
            match self.job.events.try_send(ev) {
                Ok(()) => {}
                Err(TrySendError::Full(ev)) => {
                    self.outbox.push_front(ev);
                    return false;
                }
                Err(TrySendError::Closed(_)) => {
                    self.outbox.clear();
                    self.finished = true;
                    return true;
                }
            }
        }
        true
    }

    fn turn(&mut self, model: &Llama, tokenizer: &Tokenizer) -> Progress {
        if !self.flush() {
            return Progress::Blocked;
        }
        if self.finished {
            return Progress::Stepped;
        }
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.step(model, tokenizer)));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.fail(e),
            Err(_) => self.fail("the inference step panicked".to_string()),
        }
        self.flush();
        Progress::Stepped
    }

    fn fail(&mut self, reason: String) {
        tracing::error!(error = %reason, "local model step failed");
        self.outbox.push_back(Err(ModelError::Internal(
            "the embedded model failed during generation".into(),
        )));
        self.finished = true;
        self.failed = true;
    }

    fn step(&mut self, model: &Llama, tokenizer: &Tokenizer) -> Result<(), String> {
        // `history` is the prompt followed by every sampled token; `fed` of them
        // are in the cache. A step feeds the next chunk and samples only once
        // the whole history is in.
        let len = self.job.prompt.len();
        let end = (self.fed + PREFILL_CHUNK).min(len);
        let logits = model
            .forward(&self.job.prompt[self.fed..end], &mut self.cache)
            .map_err(|e| e.to_string())?;
        self.fed = end;
        if end < len {
            return Ok(());
        }
        let token = self.sampler.sample(&logits);
        self.completion_tokens += 1;
        if tokenizer.end_of_turn.contains(&token) {
            let rest = self.text.finish();
            self.emit(rest);
            self.done(FinishReason::Stop);
            return Ok(());
        }
        match self.text.push(tokenizer.token_bytes(token)) {
            Piece::Text(t) => self.emit(t),
            Piece::Stopped(t) => {
                self.emit(t);
                self.done(FinishReason::Stop);
                return Ok(());
            }
        }
        self.job.prompt.push(token);
        let at_limit = self
            .job
            .sampling
            .max_tokens
            .is_some_and(|m| self.completion_tokens >= m);
        if at_limit || self.job.prompt.len() >= model.context_length() {
            let rest = self.text.finish();
            self.emit(rest);
            self.done(FinishReason::Length);
        }
        Ok(())
    }

    fn emit(&mut self, text: String) {
        if !text.is_empty() {
            self.outbox.push_back(Ok(Event::Delta(text)));
        }
    }

    fn done(&mut self, finish_reason: FinishReason) {
        self.outbox.push_back(Ok(Event::Done {
            finish_reason,
            usage: Usage {
                prompt_tokens: self.prompt_tokens,
                completion_tokens: self.completion_tokens,
            },
        }));
        self.finished = true;
    }
}
