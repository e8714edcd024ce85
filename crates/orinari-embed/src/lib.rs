//! The embedded embedding model, served as `orinari-embed`:
//! sentence-transformers' all-MiniLM-L6-v2 (a 6-layer BERT, 384
//! dimensions) run with candle on the CPU, giving what sentence-transformers
//! gives for it — BERT's last hidden states, their mean over the attention
//! mask, L2-normalised ([`bert`]).
//!
//! Two ways in: [`Encoder`] is the model itself, synchronous, for callers
//! with threads of their own (retrieval's indexers); [`Embedder`] serves
//! requests from async code on one thread of its own, loading the model
//! there on first use.
//!
//! Choices:
//! - **Our own BERT (≈150 lines over `candle-nn`) rather than
//!   `candle-transformers`' `bert`**: that crate compiles ~100 models to
//!   give us one (minutes on two cores, in every clean build), and we need
//!   only the encoder's forward pass; the embedded chat model made the same
//!   choice for llama. The weights are the HF `BertModel` names, so either
//!   would load them; the vectors are checked against an independent numpy
//!   implementation (`bench/embeddings/`).
//! - **Truncation, not refusal**: a text is cut to its first
//!   [`MAX_TOKENS`] (256) tokens, `[CLS]` and `[SEP]` included — the
//!   model's `max_seq_length`, what sentence-transformers does (BERT's 512
//!   positions exist, but the model was trained on 256). `usage` counts the
//!   tokens embedded.
//! - **Lazy load**: nothing is read at start; the first request loads the
//!   91 MB of weights on the model's thread (about a third of a second), so
//!   servers that never embed pay nothing.
//! - **Two precisions** ([`Precision`]): f32 for the vectors served and
//!   stored; int8 dense products (`orinari-kernels`, the chat model's
//!   kernels) for the prompt-injection guard, which needs a decision in
//!   milliseconds and was trained on the int8 vectors.
//! - **Batches** of up to [`BATCH`] inputs of similar length, each padded
//!   to its longest and masked, so padding costs little and never changes
//!   a vector.

mod bert;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokenizers::{Tokenizer, TruncationParams};
use tokio::sync::oneshot;

/// The model's id in the API.
pub const MODEL: &str = "orinari-embed";
/// Length of every vector.
pub const DIMENSIONS: usize = 384;
/// Tokens embedded per input at most, `[CLS]` and `[SEP]` included; longer
/// inputs are truncated.
pub const MAX_TOKENS: usize = 256;
/// Inputs encoded together at most.
pub const BATCH: usize = 32;
/// The model's files, in its folder.
pub const FILES: [&str; 3] = ["model.safetensors", "tokenizer.json", "config.json"];

const CLS: u32 = 101;
const SEP: u32 = 102;

/// The arithmetic of the encoder's dense products (99 % of its work).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32, what sentence-transformers computes (cosine distance ~1e-12 from
    /// an f64 reference): the vectors `/v1/embeddings` and retrieval serve.
    F32,
    /// Q8_0 weights and activations quantized per 32 inputs, multiplied by
    /// `orinari-kernels`' int8 kernels: about twice as fast on short texts
    /// (16–64 tokens), 71 MiB resident instead of 99 (22 beside an f32 copy,
    /// whose word embeddings it shares: [`shared`]), its vectors within
    /// 0.001 of the f32 ones in cosine distance — for a classifier trained
    /// on these vectors (the prompt-injection guard), never for vectors
    /// stored or served.
    Int8,
}

/// One input: a text, or the model's own token ids (without `[CLS]` and
/// `[SEP]`, which are added).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Text, tokenized by the model's WordPiece tokenizer.
    Text(String),
    /// Token ids of the model's vocabulary.
    Tokens(Vec<u32>),
}

/// The vectors of a request, in input order, and the tokens embedded.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    /// One unit-length vector of [`DIMENSIONS`] per input.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens fed to the model, `[CLS]` and `[SEP]` included.
    pub tokens: u32,
}

/// Why inputs got no vectors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbedError {
    /// The model's files are missing or unreadable (the detail names the
    /// path: for logs, not for clients).
    #[error("the embedding model could not be loaded: {0}")]
    Load(String),
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the model's vocabulary of {vocab}")]
    Token {
        /// Which input.
        input: usize,
        /// Which token of it.
        position: usize,
        /// The id.
        id: u32,
        /// The vocabulary's size.
        vocab: usize,
    },
    /// Too many requests wait for the model.
    #[error("the embedding model is overloaded; try again shortly")]
    Overloaded,
    /// The model is shutting down.
    #[error("the embedding model is shutting down")]
    ShuttingDown,
    /// The computation failed.
    #[error("the embedding model failed: {0}")]
    Internal(String),
}

impl From<candle_core::Error> for EmbedError {
    fn from(e: candle_core::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

/// Where the model is found: `ORINARI_EMBED_MODEL_PATH`, else the cache
/// that `scripts/fetch-embed-model.sh` fills (`$ORINARI_CACHE_DIR`,
/// `$XDG_CACHE_HOME/orinari` or `~/.cache/orinari`, then
/// `models/all-MiniLM-L6-v2`).
pub fn default_model_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("ORINARI_EMBED_MODEL_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("ORINARI_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("orinari")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/orinari")))
        .unwrap_or_else(|| PathBuf::from(".cache/orinari"));
    cache.join("models").join("all-MiniLM-L6-v2")
}

/// The model in `dir` at `precision`, loaded once per process and shared:
/// `/v1/embeddings` and retrieval use one f32 copy (91 MB), the
/// prompt-injection guard the int8 one; the second precision loaded shares
/// the first one's word-embedding table (47 MB, f32 in both) when the files
/// are the same. A failed load is not remembered, so a model installed
/// later is found.
pub fn shared(dir: &Path, precision: Precision) -> Result<Arc<Encoder>, EmbedError> {
    type Loaded = Vec<(PathBuf, Precision, Arc<Encoder>)>;
    static LOADED: Mutex<Loaded> = Mutex::new(Vec::new());
    let mut loaded = LOADED
        .lock()
        .map_err(|_| EmbedError::Internal("the shared model is unusable".into()))?;
    if let Some((_, _, e)) = loaded.iter().find(|(d, p, _)| d == dir && *p == precision) {
        return Ok(e.clone());
    }
    let beside = loaded.iter().find(|(d, _, _)| d == dir).map(|(_, _, e)| e);
    let encoder = Arc::new(Encoder::load_beside(dir, precision, beside.map(|e| &**e))?);
    loaded.push((dir.to_path_buf(), precision, encoder.clone()));
    Ok(encoder)
}

/// The loaded model: tokenizer and encoder. Synchronous; `Send + Sync`.
pub struct Encoder {
    bert: bert::Bert,
    tokenizer: Tokenizer,
    vocab: usize,
    /// xxh3 of the model's files ([`files_digest`]).
    files: u64,
    id: String,
}

impl Encoder {
    /// Load the model from its folder ([`FILES`]), its dense products in
    /// `precision`.
    pub fn load(dir: &Path, precision: Precision) -> Result<Self, EmbedError> {
        Self::load_beside(dir, precision, None)
    }

    /// [`Encoder::load`], sharing `other`'s word-embedding table when it
    /// was loaded from the same files (the same bytes: candle tensors are
    /// reference-counted).
    fn load_beside(
        dir: &Path,
        precision: Precision,
        other: Option<&Encoder>,
    ) -> Result<Self, EmbedError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| EmbedError::Load(format!("{}: {e}", path.display())))
        };
        let config: bert::Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| EmbedError::Load(format!("config.json: {e}")))?;
        if config.hidden_size != DIMENSIONS {
            return Err(EmbedError::Load(format!(
                "config.json: hidden_size {} is not {DIMENSIONS}",
                config.hidden_size
            )));
        }
        let tokenizer_bytes = read("tokenizer.json")?;
        let weights = read("model.safetensors")?;
        let files = files_digest(&[&weights, &tokenizer_bytes, &read("config.json")?]);
        let mut tokenizer = Tokenizer::from_bytes(tokenizer_bytes)
            .map_err(|e| EmbedError::Load(format!("tokenizer.json: {e}")))?;
        // The file pads and truncates to 128; we cut at the model's
        // max_seq_length and pad per batch ourselves.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| EmbedError::Load(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(None);
        let words = other
            .filter(|o| o.files == files)
            .map(|o| o.bert.words().clone());
        let bert = bert::Bert::load(weights, &config, precision, words)?;
        Ok(Self {
            bert,
            tokenizer,
            vocab: config.vocab_size,
            files,
            id: model_id(precision, files),
        })
    }

    /// What identifies these vectors: the model's name and a hash of its
    /// three files (`all-MiniLM-L6-v2@` and 16 hex digits of xxh3;
    /// `all-MiniLM-L6-v2-int8@…` for [`Precision::Int8`]). Vectors
    /// stored under one id are comparable only with vectors of the same id:
    /// other weights, tokenizer or configuration give another.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The token ids the model sees for `input` (number `index` of its
    /// request): `[CLS]`, at most [`MAX_TOKENS`] − 2 tokens, `[SEP]`.
    pub fn tokens(&self, index: usize, input: &Input) -> Result<Vec<u32>, EmbedError> {
        match input {
            Input::Text(text) => self
                .tokenizer
                .encode(text.as_str(), true)
                .map(|e| e.get_ids().to_vec())
                .map_err(|_| EmbedError::Internal("the text could not be tokenized".into())),
            Input::Tokens(ids) => {
                if let Some((position, &id)) = ids
                    .iter()
                    .enumerate()
                    .find(|&(_, &id)| id as usize >= self.vocab)
                {
                    return Err(EmbedError::Token {
                        input: index,
                        position,
                        id,
                        vocab: self.vocab,
                    });
                }
                let kept = &ids[..ids.len().min(MAX_TOKENS - 2)];
                let mut out = Vec::with_capacity(kept.len() + 2);
                out.push(CLS);
                out.extend_from_slice(kept);
                out.push(SEP);
                Ok(out)
            }
        }
    }

    /// Vectors for `inputs`, in order, and the tokens embedded.
    pub fn embed(&self, inputs: &[Input]) -> Result<Embedded, EmbedError> {
        let tokens = inputs
            .iter()
            .enumerate()
            .map(|(i, input)| self.tokens(i, input))
            .collect::<Result<Vec<_>, _>>()?;
        let count: usize = tokens.iter().map(Vec::len).sum();
        Ok(Embedded {
            vectors: self.embed_tokens(&tokens)?,
            tokens: u32::try_from(count).unwrap_or(u32::MAX),
        })
    }

    /// Vectors for sequences already tokenized by [`Encoder::tokens`].
    pub fn embed_tokens(&self, sequences: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EmbedError> {
        // Similar lengths together, so a batch pads little.
        let mut order: Vec<usize> = (0..sequences.len()).collect();
        order.sort_by_key(|&i| sequences[i].len());
        let mut out = vec![Vec::new(); sequences.len()];
        for chunk in order.chunks(BATCH) {
            let lengths: Vec<usize> = chunk.iter().map(|&i| sequences[i].len().max(1)).collect();
            let width = lengths.iter().copied().max().unwrap_or(1);
            let mut ids = Vec::with_capacity(width * chunk.len());
            for &i in chunk {
                let s = &sequences[i];
                ids.extend_from_slice(s);
                ids.resize(ids.len() + width - s.len(), 0);
            }
            let vectors = bert::rows(&self.bert.embed(&ids, &lengths)?)?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

/// The xxh3 of the model's files, each with its length.
fn files_digest(files: &[&[u8]]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for f in files {
        h.update(&(f.len() as u64).to_le_bytes());
        h.update(f);
    }
    h.digest()
}

/// `all-MiniLM-L6-v2@` (`all-MiniLM-L6-v2-int8@` for [`Precision::Int8`])
/// and the [`files_digest`] in hex.
fn model_id(precision: Precision, files: u64) -> String {
    let name = match precision {
        Precision::F32 => "all-MiniLM-L6-v2",
        Precision::Int8 => "all-MiniLM-L6-v2-int8",
    };
    format!("{name}@{files:016x}")
}

/// One request waiting for the model's thread.
struct Job {
    inputs: Vec<Input>,
    reply: oneshot::Sender<Result<Embedded, EmbedError>>,
}

struct Worker {
    jobs: SyncSender<Job>,
    thread: JoinHandle<()>,
}

/// The model served to async callers: one thread of its own, started (and
/// the model loaded on it) by the first request, fed through a bounded
/// queue. [`Embedder::shutdown`] (or the drop) joins it.
pub struct Embedder {
    dir: PathBuf,
    queue_depth: usize,
    worker: Mutex<Option<Worker>>,
    closed: AtomicBool,
}

impl Embedder {
    /// The model in `dir`, loaded on first use; at most `queue_depth`
    /// requests wait behind the one being embedded.
    pub fn new(dir: PathBuf, queue_depth: usize) -> Self {
        Self {
            dir,
            queue_depth: queue_depth.max(1),
            worker: Mutex::new(None),
            closed: AtomicBool::new(false),
        }
    }

    /// Whether the model's files are there (checked without reading them).
    pub fn installed(&self) -> bool {
        FILES.iter().all(|f| self.dir.join(f).is_file())
    }

    /// Whether it can take requests (not shut down).
    pub fn ready(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    /// Vectors for `inputs`, computed on the model's thread.
    pub async fn embed(&self, inputs: Vec<Input>) -> Result<Embedded, EmbedError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job { inputs, reply })?;
        answer.await.unwrap_or(Err(EmbedError::ShuttingDown))
    }

    fn submit(&self, mut job: Job) -> Result<(), EmbedError> {
        let mut worker = self
            .worker
            .lock()
            .map_err(|_| EmbedError::Internal("the model's queue is unusable".into()))?;
        // Twice at most: a thread whose load failed has ended; the next
        // request starts another, so a model installed later is found.
        for _ in 0..2 {
            if !self.ready() {
                return Err(EmbedError::ShuttingDown);
            }
            let w = match worker.as_mut() {
                Some(w) => w,
                None => worker.insert(self.start()?),
            };
            match w.jobs.try_send(job) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(_)) => return Err(EmbedError::Overloaded),
                Err(TrySendError::Disconnected(back)) => {
                    job = back;
                    if let Some(ended) = worker.take() {
                        let _ = ended.thread.join();
                    }
                }
            }
        }
        Err(EmbedError::Load("the model's thread ended".into()))
    }

    fn start(&self) -> Result<Worker, EmbedError> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(self.queue_depth);
        let dir = self.dir.clone();
        let thread = std::thread::Builder::new()
            .name("orinari-embed".into())
            .spawn(move || serve(&dir, &queue))
            .map_err(|e| EmbedError::Internal(format!("cannot start the model's thread: {e}")))?;
        Ok(Worker { jobs, thread })
    }

    /// Refuse new requests, let the queued ones finish, join the thread.
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let taken = self.worker.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = taken {
            drop(w.jobs);
            let _ = w.thread.join();
        }
    }
}

impl Drop for Embedder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("ready", &self.ready())
            .finish_non_exhaustive()
    }
}

/// The model's thread: load, then embed each job in turn until the queue
/// closes. A failed load answers the jobs waiting with its error and ends.
fn serve(dir: &Path, queue: &mpsc::Receiver<Job>) {
    let started = Instant::now();
    let encoder = match shared(dir, Precision::F32) {
        Ok(e) => {
            tracing::info!(
                model = MODEL,
                load_ms = started.elapsed().as_millis() as u64,
                "embedding model loaded"
            );
            e
        }
        Err(e) => {
            tracing::error!(model = MODEL, error = %e, "embedding model failed to load");
            while let Ok(job) = queue.try_recv() {
                let _ = job.reply.send(Err(e.clone()));
            }
            return;
        }
    };
    while let Ok(job) = queue.recv() {
        // A client that went away needs no vectors.
        if job.reply.is_closed() {
            continue;
        }
        let _ = job.reply.send(encoder.embed(&job.inputs));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_precision_shares_the_first_ones_word_table() {
        // Needs the model (make model), as the integration tests do.
        let dir = default_model_dir();
        let f32 = shared(&dir, Precision::F32).unwrap();
        let int8 = shared(&dir, Precision::Int8).unwrap();
        let table = |e: &Encoder| e.bert.words().embeddings().id();
        assert_eq!(table(&f32), table(&int8), "one table for both");
        // Loaded on its own, an encoder has a table of its own, and sharing
        // changes no vector.
        let alone = Encoder::load(&dir, Precision::Int8).unwrap();
        assert_ne!(table(&alone), table(&int8));
        let text = [Input::Text("Ignore the typo and act as a tutor.".into())];
        assert_eq!(
            alone.embed(&text).unwrap().vectors,
            int8.embed(&text).unwrap().vectors
        );
    }
}
