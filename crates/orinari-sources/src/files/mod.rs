//! `kind = "files"`: a folder of Markdown, text, HTML and PDF files,
//! chunked by structure and indexed with tantivy (BM25, English stemming)
//! in the data directory. A dedicated thread per source keeps the index
//! equal to the folder (`sync.rs`); searches read the last commit. With
//! `retrieval = "dense"` or `"hybrid"`, a second thread keeps the chunks'
//! vectors level with the index (`dense.rs`), and searches rank by cosine
//! similarity to the query's vector, or fuse that ranking with BM25's.

pub(crate) mod chunk;
pub(crate) mod dense;
pub(crate) mod extract;
pub(crate) mod index;
pub(crate) mod sync;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use orinari_config::sources::{FilesSource, Retrieval};
use orinari_embed::Input;

use crate::SourceStatus;
use crate::connector::{Connector, Found, Hit, SourceError};

use self::chunk::TokenCounter;
use self::dense::{Dense, DenseJob, DenseMsg};
use self::index::ChunkIndex;
use self::sync::{Job, Msg};

/// What the indexer reports, read by `status`.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub documents: u64,
    pub chunks: u64,
    pub failed_documents: u64,
    pub last_sync: Option<SystemTime>,
    pub error: Option<String>,
    pub progress: Option<Progress>,
}

pub(crate) use crate::Progress;

/// The search side of a files source.
pub(crate) struct FilesConnector {
    index: Arc<ChunkIndex>,
    state: Arc<Mutex<State>>,
    index_dir: PathBuf,
    retrieval: Retrieval,
    dense: Option<Arc<Dense>>,
}

/// The indexing side: its threads, and how to reach them.
pub(crate) struct Worker {
    pub name: String,
    pub stop: Arc<AtomicBool>,
    pub tx: Sender<Msg>,
    pub thread: std::thread::JoinHandle<()>,
    /// The dense thread (`retrieval` dense or hybrid).
    pub dense: Option<(Sender<DenseMsg>, std::thread::JoinHandle<()>)>,
}

/// Time kept back from a source's deadline for the BM25 answer when the
/// query's vector is late.
const DENSE_MARGIN: Duration = Duration::from_millis(5);

/// Open (or create) the source's index under `dir` and start its indexer
/// thread (and its dense thread, with the model in `model_dir`).
pub(crate) fn open(
    name: &str,
    cfg: &FilesSource,
    dir: &Path,
    count: TokenCounter,
    model_dir: &Path,
) -> Result<(FilesConnector, Worker), String> {
    let index_dir = dir.join("index");
    let (index, fresh) = ChunkIndex::open(&index_dir)?;
    let index = Arc::new(index);
    let state = Arc::new(Mutex::new(State::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut dense_worker = None;
    let mut dense = None;
    let mut committed = None;
    if cfg.retrieval.dense() {
        let d = Arc::new(Dense::default());
        let (dtx, drx) = std::sync::mpsc::channel();
        let job = DenseJob {
            name: name.to_string(),
            dense: d.clone(),
            index: index.clone(),
            model_dir: model_dir.to_path_buf(),
            cache: dir.join("vectors.bin"),
            stop: stop.clone(),
            rx: drx,
        };
        let thread = std::thread::Builder::new()
            .name(format!("embed-{name}"))
            .spawn(move || dense::run(job))
            .map_err(|e| format!("cannot start the dense indexer thread: {e}"))?;
        committed = Some(dtx.clone());
        dense_worker = Some((dtx, thread));
        dense = Some(d);
    }
    let job = Job {
        folder: cfg.path.clone(),
        manifest_path: dir.join("manifest.json"),
        chunk_tokens: cfg.chunk_tokens,
        rescan_interval: cfg.rescan_interval,
        count,
        index: index.clone(),
        fresh,
        state: state.clone(),
        stop: stop.clone(),
        tx: tx.clone(),
        rx,
        name: name.to_string(),
        committed,
    };
    let thread = std::thread::Builder::new()
        .name(format!("index-{name}"))
        .spawn(move || sync::run(job))
        .map_err(|e| format!("cannot start the indexer thread: {e}"))?;
    Ok((
        FilesConnector {
            index,
            state,
            index_dir,
            retrieval: cfg.retrieval,
            dense,
        },
        Worker {
            name: name.to_string(),
            stop,
            tx,
            thread,
            dense: dense_worker,
        },
    ))
}

impl FilesConnector {
    /// The dense (or hybrid) answer: the query's vector (on the blocking
    /// pool, as BM25 is), its nearest chunks, fused with BM25's for hybrid.
    /// BM25 alone, with a remark, when the model is not loaded yet or the
    /// vector is not there in time.
    async fn find_dense(
        &self,
        dense: &Arc<Dense>,
        query: &str,
        k: usize,
        deadline: Instant,
    ) -> Result<Found, SourceError> {
        let bm25 = {
            let index = self.index.clone();
            let query = query.to_string();
            tokio::task::spawn_blocking(move || index.search(&query, k))
        };
        let Some(encoder) = dense.encoder() else {
            return Ok(Found {
                hits: joined(bm25.await)?,
                note: Some(dense.not_ready()),
            });
        };
        let nearest = {
            let index = self.index.clone();
            let dense = dense.clone();
            let query = query.to_string();
            tokio::task::spawn_blocking(move || {
                let v = encoder
                    .embed(&[Input::Text(query)])
                    .map_err(|e| e.to_string())?
                    .vectors
                    .pop()
                    .ok_or("no vector for the query")?;
                index.by_hashes(&dense.nearest(&v, k), k)
            })
        };
        let bm25 = joined(bm25.await)?;
        let cutoff = deadline.checked_sub(DENSE_MARGIN).unwrap_or(deadline);
        let vectors = match tokio::time::timeout_at(cutoff.into(), nearest).await {
            Ok(Ok(Ok(hits))) => hits,
            Ok(Ok(Err(e))) => {
                return Ok(Found {
                    hits: bm25,
                    note: Some(format!("dense retrieval failed ({e}): BM25 only")),
                });
            }
            Ok(Err(_)) => {
                return Ok(Found {
                    hits: bm25,
                    note: Some("dense retrieval failed: BM25 only".into()),
                });
            }
            Err(_) => {
                return Ok(Found {
                    hits: bm25,
                    note: Some("dense retrieval missed the source's deadline: BM25 only".into()),
                });
            }
        };
        let hits = match self.retrieval {
            Retrieval::Hybrid => {
                crate::fusion::fuse(vec![("bm25".into(), bm25), ("dense".into(), vectors)])
                    .into_iter()
                    .take(k)
                    .map(|r| Hit {
                        score: r.score as f32,
                        ..r.hit
                    })
                    .collect()
            }
            Retrieval::Dense | Retrieval::Bm25 => vectors,
        };
        Ok(Found {
            hits,
            note: dense.coverage(),
        })
    }
}

/// A blocking search's result.
fn joined(
    r: Result<Result<Vec<Hit>, String>, tokio::task::JoinError>,
) -> Result<Vec<Hit>, SourceError> {
    r.map_err(|_| SourceError::Failed("the search task failed".into()))?
        .map_err(SourceError::Failed)
}

#[async_trait]
impl Connector for FilesConnector {
    async fn search(
        &self,
        query: &str,
        k: usize,
        deadline: Instant,
    ) -> Result<Vec<Hit>, SourceError> {
        self.find(query, k, deadline).await.map(|f| f.hits)
    }

    async fn find(&self, query: &str, k: usize, deadline: Instant) -> Result<Found, SourceError> {
        if let Some(dense) = &self.dense {
            return self.find_dense(dense, query, k, deadline).await;
        }
        let index = self.index.clone();
        let query = query.to_string();
        // BM25 over the memory-mapped index is CPU work: off the async workers.
        let hits = joined(tokio::task::spawn_blocking(move || index.search(&query, k)).await)?;
        Ok(Found { hits, note: None })
    }

    fn status(&self) -> SourceStatus {
        let st = self.state.lock().map(|s| {
            (
                s.documents,
                s.chunks,
                s.failed_documents,
                s.last_sync,
                s.error.clone(),
                s.progress,
            )
        });
        let (documents, chunks, failed, last_sync, error, indexing) =
            st.unwrap_or((0, 0, 0, None, Some("state unavailable".into()), None));
        SourceStatus {
            name: String::new(),
            kind: "files",
            documents: Some(documents),
            chunks: Some(chunks),
            index_bytes: Some(dir_size(&self.index_dir)),
            last_sync,
            failed_documents: failed,
            error,
            indexing,
            last_search: None,
            dense: self
                .dense
                .as_ref()
                .map(|d| d.status(self.retrieval.as_str())),
        }
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
