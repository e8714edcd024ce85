//! `kind = "files"`: a folder of Markdown, text, HTML and PDF files,
//! chunked by structure and indexed with tantivy (BM25, English stemming)
//! in the data directory. A dedicated thread per source keeps the index
//! equal to the folder (`sync.rs`); searches read the last commit.

pub(crate) mod chunk;
pub(crate) mod extract;
pub(crate) mod index;
pub(crate) mod sync;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use orinari_config::sources::FilesSource;

use crate::SourceStatus;
use crate::connector::{Connector, Hit, SourceError};

use self::chunk::TokenCounter;
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
    index_dir: std::path::PathBuf,
}

/// The indexing side: its thread, and how to reach it.
pub(crate) struct Worker {
    pub name: String,
    pub stop: Arc<AtomicBool>,
    pub tx: std::sync::mpsc::Sender<Msg>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Open (or create) the source's index under `dir` and start its indexer thread.
pub(crate) fn open(
    name: &str,
    cfg: &FilesSource,
    dir: &Path,
    count: TokenCounter,
) -> Result<(FilesConnector, Worker), String> {
    let index_dir = dir.join("index");
    let (index, fresh) = ChunkIndex::open(&index_dir)?;
    let index = Arc::new(index);
    let state = Arc::new(Mutex::new(State::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
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
        },
        Worker {
            name: name.to_string(),
            stop,
            tx,
            thread,
        },
    ))
}

#[async_trait]
impl Connector for FilesConnector {
    async fn search(
        &self,
        query: &str,
        k: usize,
        _deadline: Instant,
    ) -> Result<Vec<Hit>, SourceError> {
        let index = self.index.clone();
        let query = query.to_string();
        // BM25 over the memory-mapped index is CPU work: off the async workers.
        tokio::task::spawn_blocking(move || index.search(&query, k))
            .await
            .map_err(|_| SourceError::Failed("the search task failed".into()))?
            .map_err(SourceError::Failed)
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
