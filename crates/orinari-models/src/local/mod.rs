//! The embedded model: a GGUF llama (SmolLM2-135M-Instruct by default) run
//! in-process with candle.
//!
//! Loading reads the weights, tokenizer and chat template from the GGUF
//! itself. Requests are tokenized on tokio's blocking pool, checked against
//! the context window, and handed to the single inference thread
//! ([`engine`]), which interleaves all active sequences fairly.

mod engine;
mod gguf;
mod llama;
mod sampler;
mod template;
mod text;
mod tokenizer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;

use tokio::sync::mpsc;

use crate::{BoxFuture, GenerateRequest, Generation, ModelBackend, ModelError, ModelInfo};
pub use tokenizer::Tokenizer;

/// Events buffered per request before the engine waits for the client.
const EVENT_BUFFER: usize = 64;

/// Settings for the embedded model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    /// The GGUF file.
    pub path: PathBuf,
    /// Context window; `None` uses the model's own (8192 for SmolLM2).
    pub context_size: Option<usize>,
    /// Sequences generated concurrently (interleaved token by token).
    pub max_active: usize,
    /// Requests that may wait beyond `max_active` before new ones are refused.
    pub queue_depth: usize,
    /// Re-quantize 4-bit weights to Q8_0 at load for candle's SIMD kernels.
    pub requantize: bool,
}

/// The loaded embedded model with its inference thread.
pub struct LocalModel {
    info: ModelInfo,
    tokenizer: Arc<Tokenizer>,
    template: Arc<template::ChatTemplate>,
    jobs: Mutex<Option<std_mpsc::Sender<engine::Job>>>,
    shared: Arc<engine::Shared>,
    capacity: usize,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Everything needed to tokenize prompts, without the weights: used by tests
/// and tools that compare tokenization.
pub struct Vocab {
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    template: template::ChatTemplate,
}

impl Vocab {
    /// Render and tokenize a conversation as the model would see it.
    pub fn encode_chat(&self, messages: &[crate::Message]) -> Result<Vec<u32>, String> {
        self.template.encode(&self.tokenizer, messages)
    }
}

/// Read only the tokenizer and chat template from a GGUF file.
pub fn load_vocab(path: &std::path::Path) -> Result<Vocab, String> {
    let g = gguf::load_metadata(path)?;
    Ok(Vocab {
        tokenizer: Tokenizer::new(&g.vocab)?,
        template: template::ChatTemplate::new(&g.chat_template)?,
    })
}

impl LocalModel {
    /// Load the model (blocking: call from a blocking thread) and start its
    /// inference thread.
    pub fn load(cfg: &LocalConfig) -> Result<Self, ModelError> {
        let fail = |e: String| ModelError::Internal(format!("cannot load the embedded model: {e}"));
        let mut g = gguf::load(&cfg.path, cfg.requantize).map_err(fail)?;
        if let Some(n) = cfg.context_size {
            g.hyper.context_length = n.min(g.hyper.context_length);
        }
        let context_window = g.hyper.context_length as u32;
        let tokenizer = Arc::new(Tokenizer::new(&g.vocab).map_err(fail)?);
        let template = Arc::new(template::ChatTemplate::new(&g.chat_template).map_err(fail)?);
        let model =
            Arc::new(llama::Llama::new(g.hyper, g.tensors).map_err(|e| fail(e.to_string()))?);
        let (tx, rx) = std_mpsc::channel();
        let shared = Arc::new(engine::Shared::default());
        shared.alive.store(true, Ordering::Release);
        let thread = {
            let (tokenizer, shared) = (tokenizer.clone(), shared.clone());
            let max_active = cfg.max_active.max(1);
            std::thread::Builder::new()
                .name("orinari-infer".into())
                .spawn(move || engine::run(model, tokenizer, rx, shared, max_active))
                .map_err(|e| fail(e.to_string()))?
        };
        Ok(Self {
            info: ModelInfo {
                context_window,
                owned_by: "orinari".into(),
            },
            tokenizer,
            template,
            jobs: Mutex::new(Some(tx)),
            shared,
            capacity: cfg.max_active.max(1) + cfg.queue_depth,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stop taking requests, let the active ones finish, and join the thread.
    pub fn shutdown(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    async fn admit(&self, request: GenerateRequest) -> Result<Generation, ModelError> {
        let (tokenizer, template) = (self.tokenizer.clone(), self.template.clone());
        let messages = request.messages;
        let prompt = tokio::task::spawn_blocking(move || template.encode(&tokenizer, &messages))
            .await
            .map_err(|_| ModelError::Internal("tokenization was interrupted".into()))?
            .map_err(ModelError::Internal)?;
        let prompt_tokens = prompt.len() as u32;
        let window = self.info.context_window;
        let requested = request.sampling.max_tokens;
        // At least one token must fit after the prompt.
        if prompt_tokens.saturating_add(requested.unwrap_or(1).max(1)) > window {
            return Err(ModelError::ContextOverflow {
                context_window: window,
                prompt_tokens,
                requested,
            });
        }
        let in_flight = self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        if in_flight >= self.capacity {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(ModelError::Overloaded);
        }
        let (events_tx, events) = mpsc::channel(EVENT_BUFFER);
        let job = engine::Job {
            prompt,
            sampling: request.sampling,
            events: events_tx,
        };
        let sent = self
            .jobs
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|tx| tx.send(job).is_ok()))
            .unwrap_or(false);
        if !sent {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(ModelError::ShuttingDown);
        }
        Ok(Generation {
            prompt_tokens,
            events: events.into(),
        })
    }
}

impl ModelBackend for LocalModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn start(&self, request: GenerateRequest) -> BoxFuture<'_, Result<Generation, ModelError>> {
        // Text in, text out: anything more is refused, naming the field,
        // rather than silently ignored.
        if let Some(param) = request.beyond_text() {
            return Box::pin(std::future::ready(Err(ModelError::Unsupported {
                param,
                backend: "the embedded model".into(),
            })));
        }
        Box::pin(self.admit(request))
    }

    fn ready(&self) -> bool {
        self.shared.alive.load(Ordering::Acquire)
            && self.jobs.lock().map(|j| j.is_some()).unwrap_or(false)
    }
}

impl Drop for LocalModel {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Where the embedded model is found: `ORINARI_MODEL_PATH`, else the cache
/// that `scripts/fetch-model.sh` fills (`$ORINARI_CACHE_DIR`,
/// `$XDG_CACHE_HOME/orinari` or `~/.cache/orinari`, then `models/`).
pub fn default_model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("ORINARI_MODEL_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("ORINARI_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("orinari")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/orinari")))
        .unwrap_or_else(|| PathBuf::from(".cache/orinari"));
    cache.join("models").join(MODEL_FILE)
}

/// The embedded model's file name.
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
