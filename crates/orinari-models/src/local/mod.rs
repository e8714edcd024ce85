//! The embedded model: a GGUF llama (SmolLM2-135M-Instruct by default) run
//! in-process with candle.
//!
//! Loading reads the weights, tokenizer and chat template from the GGUF
//! itself. Requests are tokenized on tokio's blocking pool, checked against
//! the context window, and handed to the single inference thread
//! ([`engine`]), which advances all active sequences together (one batched
//! decode step per round, prompts fed in chunks between them) and reuses
//! the keys and values of earlier turns ([`prefix`]).

mod constrain;
mod engine;
mod gguf;
mod llama;
mod prefix;
mod sampler;
mod template;
mod text;
mod tokenizer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;

use candle_core::quantized::GgmlDType;
use tokio::sync::mpsc;

use crate::{BoxFuture, GenerateRequest, Generation, ModelBackend, ModelError, ModelInfo};
pub use engine::PrefixMetrics;
pub use tokenizer::Tokenizer;

/// Default bound of the prefix KV cache, in MiB: about 2,900 positions of
/// SmolLM2-135M (45 KiB each), e.g. two conversations of 1,400 tokens.
pub const DEFAULT_PREFIX_CACHE_MIB: usize = 128;

/// Events buffered per request before the engine waits for the client.
const EVENT_BUFFER: usize = 64;

/// Settings for the embedded model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    /// The GGUF file.
    pub path: PathBuf,
    /// Context window; `None` uses the model's own (8192 for SmolLM2).
    pub context_size: Option<usize>,
    /// Sequences generated concurrently (decoded together, one batched
    /// step per token).
    pub max_active: usize,
    /// Requests that may wait beyond `max_active` before new ones are refused.
    pub queue_depth: usize,
    /// Re-quantize 4-bit weights to Q8_0 at load for candle's SIMD kernels,
    /// where the packed kernel ([`EngineOptions::packed`]) does not run.
    pub requantize: bool,
}

/// What `requantize = true` turns 4-bit weights into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requantized {
    /// Q8_0, same layout: candle's AVX2 / AVX-512 vector dot products.
    Q8_0,
    /// Q4K with input widths zero-padded to a multiple of 256: candle's
    /// repacked tile kernels for every matmul.
    TiledQ4K,
    /// Q6K, padded the same way: tile kernels for prompts (several rows),
    /// candle's Q6K vector dot products when generating.
    TiledQ6K,
}

/// Engine settings beyond [`LocalConfig`], each with a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// Bound of the in-memory prefix KV cache in MiB; 0 turns it off.
    pub prefix_cache_mib: usize,
    /// The weight format when [`LocalConfig::requantize`] is set.
    pub requantized: Requantized,
    /// Multiply by the GGUF's own Q4_1 / Q8_0 blocks with `orinari-kernels`'
    /// AVX-512 VNNI or AVX2 kernel where the CPU has one
    /// ([`packed_kernel_available`]); `requantize` and `requantized` then do
    /// not apply. `false`, or a CPU without either, keeps candle's kernels.
    pub packed: bool,
    /// Advance all generating sequences in one batched forward pass per
    /// step (continuous batching). `false` runs one forward pass per
    /// sequence, the path before batching, kept for benchmarks and tests.
    pub batch: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            prefix_cache_mib: DEFAULT_PREFIX_CACHE_MIB,
            requantized: Requantized::Q8_0,
            packed: true,
            batch: true,
        }
    }
}

/// What the prefix cache has done since load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrefixCacheStats {
    /// Requests that started from a cached prefix.
    pub hits: u64,
    /// Requests that found none.
    pub misses: u64,
    /// Prompt tokens not computed again.
    pub reused_tokens: u64,
    /// Bytes held now.
    pub bytes: u64,
}

/// The loaded embedded model with its inference thread.
pub struct LocalModel {
    info: ModelInfo,
    tokenizer: Arc<Tokenizer>,
    template: Arc<template::ChatTemplate>,
    /// The grammar compiler, built at the first structured request.
    grammars: Arc<OnceLock<Result<constrain::Grammars, String>>>,
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
    /// inference thread, with default [`EngineOptions`].
    pub fn load(cfg: &LocalConfig) -> Result<Self, ModelError> {
        Self::load_with(cfg, &EngineOptions::default())
    }

    /// [`LocalModel::load`] with explicit engine options.
    pub fn load_with(cfg: &LocalConfig, opts: &EngineOptions) -> Result<Self, ModelError> {
        let fail = |e: String| ModelError::Internal(format!("cannot load the embedded model: {e}"));
        let (model, g) = build(cfg, opts).map_err(fail)?;
        let context_window = model.context_length() as u32;
        let tokenizer = Arc::new(Tokenizer::new(&g.vocab).map_err(fail)?);
        let template = Arc::new(template::ChatTemplate::new(&g.chat_template).map_err(fail)?);
        let model = Arc::new(model);
        log_threads();
        let (tx, rx) = std_mpsc::channel();
        let shared = Arc::new(engine::Shared::default());
        shared.alive.store(true, Ordering::Release);
        let thread = {
            let (tokenizer, shared) = (tokenizer.clone(), shared.clone());
            let max_active = cfg.max_active.max(1);
            let prefix_budget = opts.prefix_cache_mib.saturating_mul(1 << 20);
            let batch = opts.batch;
            std::thread::Builder::new()
                .name("orinari-infer".into())
                .spawn(move || {
                    engine::run(
                        model,
                        tokenizer,
                        rx,
                        shared,
                        max_active,
                        prefix_budget,
                        batch,
                    )
                })
                .map_err(|e| fail(e.to_string()))?
        };
        Ok(Self {
            info: ModelInfo {
                context_window,
                owned_by: "orinari".into(),
            },
            tokenizer,
            template,
            grammars: Arc::new(OnceLock::new()),
            jobs: Mutex::new(Some(tx)),
            shared,
            capacity: cfg.max_active.max(1) + cfg.queue_depth,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Export the prefix cache's counters through these metric handles (the
    /// first call wins).
    pub fn attach_prefix_metrics(&self, metrics: PrefixMetrics) {
        let _ = self.shared.prefix.metrics.set(metrics);
    }

    /// The prefix cache's counters.
    pub fn prefix_cache_stats(&self) -> PrefixCacheStats {
        let p = &self.shared.prefix;
        PrefixCacheStats {
            hits: p.hits.load(Ordering::Relaxed),
            misses: p.misses.load(Ordering::Relaxed),
            reused_tokens: p.reused_tokens.load(Ordering::Relaxed),
            bytes: p.bytes.load(Ordering::Relaxed),
        }
    }

    /// The most sequences one batched decode step has advanced since load.
    pub fn largest_batch(&self) -> usize {
        self.shared.largest_batch.load(Ordering::Relaxed)
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
        let grammars = self.grammars.clone();
        let adjust = adjustments(&request.options, tokenizer.vocab_size())?;
        let (logprobs, top_logprobs) = (request.options.logprobs, request.options.top_logprobs);
        let shape = constrain::Shape::of(&request.options);
        let messages = request.messages;
        // Tokenizing and compiling a grammar take milliseconds: not on the
        // async workers.
        let (prompt, constraint) = tokio::task::spawn_blocking(move || {
            let messages = constrain::prompt(shape.as_ref(), messages);
            let prompt = template
                .encode(&tokenizer, &messages)
                .map_err(ModelError::Internal)?;
            let constraint = match &shape {
                Some(shape) => Some(
                    grammars
                        .get_or_init(|| constrain::Grammars::new(tokenizer.clone()))
                        .as_ref()
                        .map_err(|e| ModelError::Internal(e.clone()))?
                        .compile(shape)?,
                ),
                None => None,
            };
            Ok::<_, ModelError>((prompt, constraint))
        })
        .await
        .map_err(|_| ModelError::Internal("tokenization was interrupted".into()))??;
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
            adjust,
            constraint,
            logprobs: logprobs.then(|| top_logprobs.unwrap_or(0) as usize),
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
        // What the embedded model cannot honour is refused, naming the
        // field, rather than silently ignored.
        if let Some(param) = refused(&request) {
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

/// The first field of a request the embedded model cannot honour: text
/// and tools in, text, JSON, tool calls and log probabilities out; no
/// images, no reasoning, no predicted output.
fn refused(request: &GenerateRequest) -> Option<String> {
    let o = &request.options;
    if o.reasoning_effort.is_some() {
        return Some("reasoning_effort".into());
    }
    if o.prediction.is_some() {
        return Some("prediction".into());
    }
    request
        .messages
        .iter()
        .position(|m| !m.parts.is_empty())
        .map(|i| format!("messages[{i}].content"))
}

/// Penalties and `logit_bias` (keys are token ids of this model's
/// vocabulary, values already checked to lie in -100..=100).
fn adjustments(o: &crate::Options, vocab: usize) -> Result<sampler::Adjustments, ModelError> {
    let mut bias = Vec::new();
    for (key, value) in o.logit_bias.iter().flatten() {
        let id = key.parse::<u32>().ok().filter(|&id| (id as usize) < vocab);
        let (Some(id), Some(b)) = (id, value.as_f64()) else {
            return Err(ModelError::Invalid {
                param: format!("logit_bias.{key}"),
                message: format!(
                    "must be a token id of the embedded model (0 to {}) mapped to a number",
                    vocab.saturating_sub(1)
                ),
            });
        };
        bias.push((id, b as f32));
    }
    Ok(sampler::Adjustments::new(
        o.frequency_penalty.unwrap_or(0.0),
        o.presence_penalty.unwrap_or(0.0),
        bias,
    ))
}

/// Log how many threads candle's matmuls use against the cores this process
/// may run on (affinity and cgroup quota, as the standard library counts
/// them). Candle sizes its pool once, from `CANDLE_NUM_THREADS` or
/// `RAYON_NUM_THREADS` or the physical cores, and offers no other way to
/// set it (`orinari serve` sets the variable from `[server]
/// inference_threads`); more threads than cores makes its workers wait on
/// each other.
fn log_threads() {
    let threads = candle_core::utils::barrier_pool().n_workers() + 1;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads > cores {
        tracing::warn!(
            threads,
            cores,
            "the embedded model uses more threads than this process has cores: set [server] inference_threads (or CANDLE_NUM_THREADS)"
        );
    } else {
        tracing::info!(threads, cores, "embedded model threads");
    }
}

/// Whether this CPU runs one of `orinari-kernels`' vector kernels (AVX-512
/// F, BW and VNNI; else AVX2 with FMA and F16C), which
/// [`EngineOptions::packed`] uses. `ORINARI_KERNEL` may pick a slower one
/// (see [`orinari_kernels::Kernel::best`]).
pub fn packed_kernel_available() -> bool {
    orinari_kernels::Kernel::best() != orinari_kernels::Kernel::Scalar
}

/// Read the GGUF and build the weights as `cfg` and `opts` ask; the
/// returned metadata has no tensors left.
fn build(
    cfg: &LocalConfig,
    opts: &EngineOptions,
) -> Result<(llama::Llama, gguf::GgufModel), String> {
    if let Err(e) = orinari_kernels::Kernel::requested() {
        tracing::warn!("{e}; using the fastest kernel this CPU runs");
    }
    let layout = match (cfg.requantize, opts.requantized) {
        _ if opts.packed && packed_kernel_available() => llama::Layout::Packed,
        (true, Requantized::TiledQ4K) => llama::Layout::Padded(GgmlDType::Q4K),
        (true, Requantized::TiledQ6K) => llama::Layout::Padded(GgmlDType::Q6K),
        _ => llama::Layout::AsLoaded,
    };
    if layout == llama::Layout::Packed {
        let kernel = orinari_kernels::Kernel::best().name();
        tracing::info!(kernel, "embedded model weights packed for orinari-kernels");
    }
    let requantize = cfg.requantize && layout == llama::Layout::AsLoaded;
    let mut g = gguf::load(&cfg.path, requantize)?;
    if let Some(n) = cfg.context_size {
        g.hyper.context_length = n.min(g.hyper.context_length);
    }
    let tensors = std::mem::take(&mut g.tensors);
    let model = llama::Llama::new(g.hyper.clone(), tensors, layout).map_err(|e| e.to_string())?;
    Ok((model, g))
}

/// Perplexity of the model built as `cfg` and `opts` ask on the first
/// `max_tokens` tokens of `text` (plain text, no chat template), fed in
/// prefill chunks as requests are: `exp` of the mean negative log-likelihood
/// of each token after the first. Returns it with the number of tokens
/// scored. A quality check for weight formats, run by
/// `examples/perplexity.rs` (blocking).
pub fn perplexity(
    cfg: &LocalConfig,
    opts: &EngineOptions,
    text: &str,
    max_tokens: usize,
) -> Result<(f64, usize), String> {
    let (model, g) = build(cfg, opts)?;
    let tokenizer = Tokenizer::new(&g.vocab)?;
    let mut tokens = tokenizer.encode_text(text)?;
    tokens.truncate(max_tokens.min(model.context_length()));
    if tokens.len() < 2 {
        return Err("the text has fewer than two tokens".into());
    }
    let mut cache = model.new_cache();
    let (mut nll, mut scored) = (0f64, 0usize);
    for (c, chunk) in tokens.chunks(engine::PREFILL_CHUNK).enumerate() {
        let rows = model
            .forward_all(chunk, &mut cache)
            .map_err(|e| e.to_string())?;
        for (i, row) in rows.iter().enumerate() {
            let Some(&next) = tokens.get(c * engine::PREFILL_CHUNK + i + 1) else {
                break;
            };
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = row.iter().map(|&l| f64::from(l - max).exp()).sum();
            let logit = row.get(next as usize).copied().unwrap_or(f32::NEG_INFINITY);
            nll += sum.ln() - f64::from(logit - max);
            scored += 1;
        }
    }
    Ok(((nll / scored as f64).exp(), scored))
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
