//! The dense side of a files source (`retrieval = "dense"` or `"hybrid"`):
//! all-MiniLM-L6-v2 vectors of the chunks, searched by exact cosine
//! similarity, kept by a thread of the source's own that follows the
//! full-text index — never on a request.
//!
//! - **One model per process**: [`orinari_embed::shared`] gives the copy
//!   that `/v1/embeddings` and the guard use (loaded on the first need).
//!   Until it is loaded (or when its files are missing) searches answer
//!   with BM25 alone and say so.
//! - **Keyed by (model, chunk)**: a chunk's key is the hash of the text it
//!   embeds (`index::embed_text`), stored in the full-text index beside it;
//!   the vectors are cached in `vectors.bin` in the source's data folder,
//!   under the model's id ([`orinari_embed::Encoder::id`], a hash of its
//!   files). An unchanged chunk is never embedded again, across restarts,
//!   and reindexes; another model's cache is dropped
//!   whole, so a model change re-embeds everything by itself.
//! - **Follows the index**: after each commit the thread compares the
//!   index's chunk keys with its vectors: vectors of chunks gone (deleted or
//!   edited files) leave memory at once and the cache at the next
//!   compaction (when a quarter of it is stale, and at shutdown); new
//!   chunks are embedded in batches, each searchable as soon as it is done.
//! - **Exact search**: the unit vectors sit in one `f32` matrix; a query is
//!   one dot product per chunk and a top-k heap (≈ 38 M multiply-adds at
//!   100k chunks; see BENCHMARKS.md). No approximate index to build, tune
//!   or get wrong at this scale.
//!
//! The cache file: `ORNVEC01`, the dimension (u32 LE), the model id's length
//! (u32 LE) and bytes; then records of a key (u64 LE) and its vector
//! ([`DIMENSIONS`] f32 LE), appended as they are computed. A record cut
//! short by a crash is dropped on load.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use orinari_embed::{BATCH, DIMENSIONS, Encoder, Input};
use tantivy::DocAddress;

use super::index::ChunkIndex;

const MAGIC: &[u8; 8] = b"ORNVEC01";
/// Bytes of one cached record.
const RECORD: usize = 8 + 4 * DIMENSIONS;
/// How often a model that did not load is tried again.
const RETRY: Duration = Duration::from_secs(30);

/// A message to the dense thread.
pub(crate) enum DenseMsg {
    /// The full-text index has a new commit.
    Committed,
    /// End.
    Stop,
}

/// The vectors, shared by the thread (writer) and searches (readers).
#[derive(Default)]
struct Matrix {
    keys: Vec<u64>,
    data: Vec<f32>,
    pos: HashMap<u64, usize>,
}

impl Matrix {
    fn contains(&self, key: u64) -> bool {
        self.pos.contains_key(&key)
    }

    fn insert(&mut self, key: u64, v: &[f32]) {
        if v.len() != DIMENSIONS {
            return;
        }
        match self.pos.get(&key) {
            Some(&i) => self.data[i * DIMENSIONS..(i + 1) * DIMENSIONS].copy_from_slice(v),
            None => {
                self.pos.insert(key, self.keys.len());
                self.keys.push(key);
                self.data.extend_from_slice(v);
            }
        }
    }

    fn remove(&mut self, key: u64) -> bool {
        let Some(i) = self.pos.remove(&key) else {
            return false;
        };
        let last = self.keys.len() - 1;
        if i != last {
            let moved = self.keys[last];
            self.keys[i] = moved;
            self.pos.insert(moved, i);
            self.data
                .copy_within(last * DIMENSIONS..(last + 1) * DIMENSIONS, i * DIMENSIONS);
        }
        self.keys.pop();
        self.data.truncate(last * DIMENSIONS);
        true
    }
}

/// What the thread reports.
#[derive(Debug, Default, Clone)]
struct State {
    model: Option<String>,
    embedded: u64,
    pending: u64,
    error: Option<String>,
    cache_bytes: u64,
}

/// The dense index of one files source.
#[derive(Default)]
pub(crate) struct Dense {
    encoder: OnceLock<Arc<Encoder>>,
    vectors: RwLock<Matrix>,
    state: Mutex<State>,
}

/// A files source's dense side for operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DenseStatus {
    /// `dense` or `hybrid`.
    pub retrieval: &'static str,
    /// The embedding model's id once it is loaded (its vectors' key).
    pub model: Option<String>,
    /// Whether searches use vectors (the model is loaded); until then they
    /// answer with BM25 alone and say so in their outcome.
    pub ready: bool,
    /// Chunks with a vector.
    pub vectors: u64,
    /// Chunks still waiting for one.
    pub pending: u64,
    /// Chunks this process has embedded (cached vectors are not embedded again).
    pub embedded: u64,
    /// Bytes of the vector cache on disk.
    pub cache_bytes: u64,
    /// Why vectors cannot be made (the model missing, the cache unwritable).
    pub error: Option<String>,
}

impl Dense {
    /// The model, once it is loaded and the cached vectors are in place.
    pub fn encoder(&self) -> Option<Arc<Encoder>> {
        self.encoder.get().cloned()
    }

    /// Why searches answer with BM25 alone right now, if they do.
    pub fn not_ready(&self) -> String {
        match self.state.lock().ok().and_then(|s| s.error.clone()) {
            Some(_) => "dense retrieval unavailable (the embedding model could not be loaded; see the source's status): BM25 only".into(),
            None => "dense retrieval not ready yet (the embedding model is loading): BM25 only".into(),
        }
    }

    /// A remark when some chunks have no vector yet.
    pub fn coverage(&self) -> Option<String> {
        let pending = self.state.lock().map(|s| s.pending).unwrap_or(0);
        (pending > 0).then(|| {
            let have = self.vectors.read().map(|m| m.keys.len()).unwrap_or(0);
            format!(
                "dense retrieval covers {have} of {} chunks so far (embedding in progress)",
                have as u64 + pending
            )
        })
    }

    /// The `k` chunk keys nearest to the unit vector `q` (cosine), best first.
    pub fn nearest(&self, q: &[f32], k: usize) -> Vec<(u64, f32)> {
        let Ok(m) = self.vectors.read() else {
            return Vec::new();
        };
        top_k(&m.keys, &m.data, q, k)
    }

    /// For operators.
    pub fn status(&self, retrieval: &'static str) -> DenseStatus {
        let s = self.state.lock().map(|s| s.clone()).unwrap_or_default();
        DenseStatus {
            retrieval,
            model: s.model,
            ready: self.encoder.get().is_some(),
            vectors: self.vectors.read().map_or(0, |m| m.keys.len() as u64),
            pending: s.pending,
            embedded: s.embedded,
            cache_bytes: s.cache_bytes,
            error: s.error,
        }
    }

    fn set_error(&self, e: Option<String>) {
        if let Ok(mut s) = self.state.lock() {
            s.error = e;
        }
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }
}

/// Exact top-k by dot product (cosine, the vectors being unit length) over
/// rows of [`DIMENSIONS`], best first; ties keep row order.
pub fn top_k(keys: &[u64], data: &[f32], q: &[f32], k: usize) -> Vec<(u64, f32)> {
    if k == 0 || q.len() != DIMENSIONS {
        return Vec::new();
    }
    // A min-heap of the best k so far: (score, Reverse(row)).
    let mut heap: BinaryHeap<Reverse<(Score, Reverse<usize>)>> = BinaryHeap::with_capacity(k + 1);
    for (row, v) in data.chunks_exact(DIMENSIONS).enumerate() {
        let s = dot(q, v);
        if heap.len() < k {
            heap.push(Reverse((Score(s), Reverse(row))));
        } else if heap.peek().is_some_and(|Reverse((worst, _))| s > worst.0) {
            heap.pop();
            heap.push(Reverse((Score(s), Reverse(row))));
        }
    }
    let mut best: Vec<(f32, usize)> = heap
        .into_iter()
        .map(|Reverse((s, Reverse(row)))| (s.0, row))
        .collect();
    best.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    best.into_iter()
        .filter_map(|(s, row)| keys.get(row).map(|&key| (key, s)))
        .collect()
}

/// f32 ordered by `total_cmp`, for the heap.
#[derive(Clone, Copy)]
struct Score(f32);
impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Eight independent sums, so the compiler vectorises the loop.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The vector cache of one source, open for appending.
struct Store {
    path: PathBuf,
    model: String,
    file: BufWriter<File>,
    /// Records in the file.
    records: u64,
    /// Of which no longer in the index.
    dead: u64,
}

fn header(model: &str) -> Vec<u8> {
    let mut h = Vec::with_capacity(16 + model.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&(DIMENSIONS as u32).to_le_bytes());
    h.extend_from_slice(&(model.len() as u32).to_le_bytes());
    h.extend_from_slice(model.as_bytes());
    h
}

fn record(key: u64, v: &[f32], out: &mut Vec<u8>) {
    out.extend_from_slice(&key.to_le_bytes());
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

impl Store {
    /// Open the cache at `path` for `model`: its vectors, by key. A cache
    /// of another model (or damaged, or of another format) is replaced by
    /// an empty one.
    fn open(path: &Path, model: &str) -> Result<(Store, HashMap<u64, Vec<f32>>), String> {
        let head = header(model);
        let mut vectors = HashMap::new();
        let mut records = 0u64;
        let mut keep = 0usize;
        if let Ok(bytes) = std::fs::read(path)
            && bytes.starts_with(&head)
        {
            let body = &bytes[head.len()..];
            for r in body.chunks_exact(RECORD) {
                let mut key = [0u8; 8];
                key.copy_from_slice(&r[..8]);
                let v: Vec<f32> = r[8..]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                vectors.insert(u64::from_le_bytes(key), v);
                records += 1;
            }
            keep = head.len() + body.len() / RECORD * RECORD;
        }
        let io =
            |e: std::io::Error| format!("cannot write the vector cache {}: {e}", path.display());
        let file = if keep > 0 {
            let f = std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(io)?;
            // A record cut short by a crash goes.
            f.set_len(keep as u64).map_err(io)?;
            f
        } else {
            write_atomically(path, &head).map_err(io)?;
            std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(io)?
        };
        let dead = records - vectors.len() as u64;
        Ok((
            Store {
                path: path.to_path_buf(),
                model: model.to_string(),
                file: BufWriter::new(file),
                records,
                dead,
            },
            vectors,
        ))
    }

    fn append(&mut self, keys: &[u64], vectors: &[Vec<f32>]) -> Result<(), String> {
        let mut buf = Vec::with_capacity(keys.len() * RECORD);
        for (k, v) in keys.iter().zip(vectors) {
            record(*k, v, &mut buf);
        }
        self.file
            .write_all(&buf)
            .and_then(|()| self.file.flush())
            .map_err(|e| format!("cannot write the vector cache {}: {e}", self.path.display()))?;
        self.records += keys.len() as u64;
        Ok(())
    }

    /// Rewrite the cache with exactly the vectors in `m`.
    fn compact(&mut self, m: &Matrix) -> Result<(), String> {
        let io = |e: std::io::Error| {
            format!("cannot write the vector cache {}: {e}", self.path.display())
        };
        self.file.flush().map_err(io)?;
        let mut buf = header(&self.model);
        buf.reserve(m.keys.len() * RECORD);
        for (k, v) in m.keys.iter().zip(m.data.chunks_exact(DIMENSIONS)) {
            record(*k, v, &mut buf);
        }
        write_atomically(&self.path, &buf).map_err(io)?;
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        self.file = BufWriter::new(f);
        self.records = m.keys.len() as u64;
        self.dead = 0;
        Ok(())
    }

    fn bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }
}

/// Written whole to a temporary file, then renamed over the old one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("bin.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Benchmarks: write the vector cache of the files source whose data
/// folder is `dir` (stopped) with `vector(key)` for each chunk of its
/// index, under `model`. Returns the vectors written.
pub fn seed(
    dir: &Path,
    model: &str,
    vector: &mut dyn FnMut(u64) -> Vec<f32>,
) -> Result<usize, String> {
    let (index, _) = ChunkIndex::open(&dir.join("index"))?;
    let hashes = index.hashes(&index.snapshot())?;
    let _ = std::fs::remove_file(dir.join("vectors.bin"));
    let (mut store, _) = Store::open(&dir.join("vectors.bin"), model)?;
    for part in hashes.chunks(1024) {
        let keys: Vec<u64> = part.iter().map(|(h, _)| *h).collect();
        let vectors: Vec<Vec<f32>> = keys.iter().map(|k| vector(*k)).collect();
        store.append(&keys, &vectors)?;
    }
    Ok(hashes.len())
}

/// Everything the dense thread needs.
pub(crate) struct DenseJob {
    pub name: String,
    pub dense: Arc<Dense>,
    pub index: Arc<ChunkIndex>,
    pub model_dir: PathBuf,
    pub cache: PathBuf,
    pub stop: Arc<AtomicBool>,
    pub rx: Receiver<DenseMsg>,
}

/// How a pass over the index ended.
enum Pass {
    /// Every live chunk has its vector.
    Done,
    /// The index changed meanwhile: look again.
    Again,
    /// Stop.
    Stop,
    /// Vectors cannot be made or kept (the error is in the state).
    Failed,
}

/// The thread's body.
pub(crate) fn run(job: DenseJob) {
    // The model: the process's one copy, tried again until it loads.
    let encoder = loop {
        if job.stop.load(Ordering::Relaxed) {
            return;
        }
        match orinari_embed::shared(&job.model_dir, orinari_embed::Precision::F32) {
            Ok(e) => break e,
            Err(e) => {
                tracing::warn!(source = %job.name, error = %e, "dense retrieval waits for the embedding model (BM25 only meanwhile)");
                job.dense
                    .set_error(Some(format!("the embedding model is not available: {e}")));
                match job.rx.recv_timeout(RETRY) {
                    Ok(DenseMsg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                    Ok(DenseMsg::Committed) | Err(RecvTimeoutError::Timeout) => {}
                }
            }
        }
    };
    let (mut store, mut parked) = match Store::open(&job.cache, encoder.id()) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(source = %job.name, error = %e, "dense retrieval unavailable");
            job.dense.set_error(Some(e));
            return;
        }
    };
    let model = encoder.id().to_string();
    job.dense.update(|s| {
        s.model = Some(model);
        s.error = None;
        s.cache_bytes = store.bytes();
    });
    loop {
        if job.stop.load(Ordering::Relaxed) {
            break;
        }
        match pass(&job, &encoder, &mut store, &mut parked) {
            Pass::Again => continue,
            Pass::Stop => break,
            Pass::Done | Pass::Failed => {}
        }
        job.dense.update(|s| s.cache_bytes = store.bytes());
        // Until the next commit (a failed pass is tried again then too).
        match job.rx.recv() {
            Ok(DenseMsg::Committed) => {}
            Ok(DenseMsg::Stop) | Err(_) => break,
        }
    }
    if store.dead > 0
        && let Ok(m) = job.dense.vectors.read()
        && let Err(e) = store.compact(&m)
    {
        tracing::error!(source = %job.name, error = %e, "vector cache not compacted");
    }
}

/// Bring the vectors level with the index's current commit.
fn pass(
    job: &DenseJob,
    encoder: &Arc<Encoder>,
    store: &mut Store,
    parked: &mut HashMap<u64, Vec<f32>>,
) -> Pass {
    let searcher = job.index.snapshot();
    let live = match job.index.hashes(&searcher) {
        Ok(l) => l,
        Err(e) => {
            job.dense.set_error(Some(e));
            return Pass::Failed;
        }
    };
    let todo: Vec<(u64, DocAddress)> = {
        let Ok(mut m) = job.dense.vectors.write() else {
            return Pass::Failed;
        };
        let set: HashSet<u64> = live.iter().map(|(h, _)| *h).collect();
        let gone: Vec<u64> = m
            .keys
            .iter()
            .copied()
            .filter(|k| !set.contains(k))
            .collect();
        for k in gone {
            if m.remove(k) {
                store.dead += 1;
            }
        }
        // Cached vectors of live chunks: no model work.
        for (h, _) in &live {
            if !m.contains(*h)
                && let Some(v) = parked.remove(h)
            {
                m.insert(*h, &v);
            }
        }
        live.into_iter().filter(|(h, _)| !m.contains(*h)).collect()
    };
    // What is left in the cache after the first pass is stale.
    store.dead += parked.len() as u64;
    parked.clear();
    // Searches may use vectors from here on (those not made yet are
    // reported as pending).
    let _ = job.dense.encoder.set(encoder.clone());
    let mut pending = todo.len() as u64;
    job.dense.update(|s| s.pending = pending);
    for batch in todo.chunks(BATCH) {
        if job.stop.load(Ordering::Relaxed) {
            return Pass::Stop;
        }
        match job.rx.try_recv() {
            Ok(DenseMsg::Stop) => return Pass::Stop,
            Ok(DenseMsg::Committed) => return Pass::Again,
            Err(_) => {}
        }
        let mut keys = Vec::with_capacity(batch.len());
        let mut inputs = Vec::with_capacity(batch.len());
        for (h, address) in batch {
            if let Ok(text) = job.index.embed_text_at(&searcher, *address) {
                keys.push(*h);
                inputs.push(Input::Text(text));
            }
        }
        let vectors = match encoder.embed(&inputs) {
            Ok(e) => e.vectors,
            Err(e) => {
                tracing::error!(source = %job.name, error = %e, "chunks not embedded");
                job.dense
                    .set_error(Some(format!("chunks could not be embedded: {e}")));
                return Pass::Failed;
            }
        };
        if let Err(e) = store.append(&keys, &vectors) {
            tracing::error!(source = %job.name, error = %e, "vectors not cached");
            job.dense.set_error(Some(e));
            return Pass::Failed;
        }
        if let Ok(mut m) = job.dense.vectors.write() {
            for (k, v) in keys.iter().zip(&vectors) {
                m.insert(*k, v);
            }
        }
        pending = pending.saturating_sub(batch.len() as u64);
        let n = keys.len() as u64;
        job.dense.update(|s| {
            s.embedded += n;
            s.pending = pending;
        });
    }
    if store.dead >= 1024 && store.dead * 4 >= store.records {
        let compacted = job
            .dense
            .vectors
            .read()
            .map_err(|_| "the vectors are unusable".to_string())
            .and_then(|m| store.compact(&m));
        if let Err(e) = compacted {
            job.dense.set_error(Some(e));
            return Pass::Failed;
        }
    }
    job.dense.set_error(None);
    Pass::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v: Vec<f32> = (0..DIMENSIONS)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 1000) as f32 / 1000.0 - 0.5
            })
            .collect();
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.iter_mut().for_each(|a| *a /= n);
        v
    }

    #[test]
    fn top_k_is_exact_and_ordered() {
        let mut m = Matrix::default();
        for i in 0..500 {
            m.insert(i, &unit(i));
        }
        let q = unit(42);
        let got = top_k(&m.keys, &m.data, &q, 5);
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].0, 42);
        assert!((got[0].1 - 1.0).abs() < 1e-5);
        let mut all: Vec<(u64, f32)> = (0..500).map(|i| (i, dot(&q, &unit(i)))).collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        let want: Vec<u64> = all.iter().take(5).map(|x| x.0).collect();
        assert_eq!(got.iter().map(|x| x.0).collect::<Vec<_>>(), want);
        assert!(top_k(&m.keys, &m.data, &q, 0).is_empty());
    }

    #[test]
    fn removal_keeps_rows_and_keys_together() {
        let mut m = Matrix::default();
        for i in 0..10 {
            m.insert(i, &unit(i));
        }
        assert!(m.remove(3));
        assert!(!m.remove(3));
        assert!(m.remove(9));
        assert_eq!(m.keys.len(), 8);
        assert_eq!(m.data.len(), 8 * DIMENSIONS);
        for k in [0, 1, 2, 4, 5, 6, 7, 8] {
            let got = top_k(&m.keys, &m.data, &unit(k), 1);
            assert_eq!(got[0].0, k);
        }
    }

    #[test]
    fn the_cache_keeps_vectors_per_model_and_drops_a_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vectors.bin");
        let (mut s, got) = Store::open(&path, "model-a").unwrap();
        assert!(got.is_empty());
        s.append(&[1, 2], &[unit(1), unit(2)]).unwrap();
        drop(s);
        // A crash in the middle of a record.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&[7u8; 100]).unwrap();
        drop(f);
        let (s, got) = Store::open(&path, "model-a").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[&2], unit(2));
        assert_eq!(s.bytes(), (header("model-a").len() + 2 * RECORD) as u64);
        drop(s);
        let (s, got) = Store::open(&path, "model-b").unwrap();
        assert!(got.is_empty(), "another model's vectors are not used");
        assert_eq!(s.bytes(), header("model-b").len() as u64);
    }
}
