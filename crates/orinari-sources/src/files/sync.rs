//! The indexer of one files source: a dedicated thread that keeps the
//! index equal to the folder. File events (notify) are applied within a
//! debounce of [`DEBOUNCE`]; a full rescan every `rescan_interval` compares
//! each file's size and modification time (then content hash) with the
//! manifest, so events that were missed (a full inotify queue, a network
//! file system, changes while stopped) heal. Deleted files leave the index.
//! Nothing here runs on a request.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use notify::Watcher as _;
use serde::{Deserialize, Serialize};

use super::State;
use super::chunk::{TokenCounter, chunk};
use super::extract::{extract, supported};
use super::index::{ChunkIndex, IndexOpenError, Writer};

/// File events are gathered this long before they are applied.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(100);

/// How long an indexer waits for the index folder's lock (held by the
/// indexer it replaces) before it reports the source as not indexing.
const WRITER_WAIT: Duration = Duration::from_secs(60);

/// A file larger than this is not indexed (reported as failed).
pub(crate) const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// During a long sync, changes are committed (so become searchable) this often.
const COMMIT_EVERY: Duration = Duration::from_secs(5);

/// Bumped when what is indexed for a file changes (then everything is reindexed).
const MANIFEST_VERSION: u32 = 1;

/// What the index holds, by file: written after each commit.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    folder: PathBuf,
    chunk_tokens: usize,
    files: BTreeMap<String, FileState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileState {
    size: u64,
    mtime_ns: u128,
    hash: u64,
    chunks: u64,
    /// Why it could not be indexed, if it could not.
    failed: Option<String>,
}

/// A message to the indexer thread.
pub(crate) enum Msg {
    /// Something changed at this path.
    Changed(PathBuf),
    /// Compare everything now.
    Rescan,
    /// Read every file again (searches go on meanwhile).
    Reindex,
    /// End.
    Stop,
}

/// Everything the thread needs.
pub(crate) struct Job {
    pub folder: PathBuf,
    pub manifest_path: PathBuf,
    pub chunk_tokens: usize,
    pub rescan_interval: Duration,
    pub count: TokenCounter,
    pub index: Arc<ChunkIndex>,
    pub fresh: bool,
    pub state: Arc<Mutex<State>>,
    pub stop: Arc<AtomicBool>,
    pub tx: Sender<Msg>,
    pub rx: Receiver<Msg>,
    pub name: String,
    /// Told of each commit (the dense thread, when there is one).
    pub committed: Option<Sender<super::dense::DenseMsg>>,
}

struct Syncer {
    job: Job,
    writer: Writer,
    manifest: Manifest,
    dirty: bool,
    last_commit: Instant,
}

/// The thread's body.
pub(crate) fn run(job: Job) {
    // The index folder is locked by its writer: while a previous indexer
    // of the same source (a configuration reload) is still finishing,
    // wait for it rather than give up.
    let started = Instant::now();
    let writer = loop {
        match job.index.writer() {
            Ok(w) => break w,
            Err(e) => {
                let waiting = matches!(e, IndexOpenError::Busy(_));
                if !waiting || started.elapsed() >= WRITER_WAIT || job.stop.load(Ordering::Relaxed)
                {
                    let why = e.to_string();
                    tracing::error!(source = %job.name, error = %why, "files source cannot index");
                    set_error(&job.state, Some(why));
                    return;
                }
                set_error(&job.state, Some(e.to_string()));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    set_error(&job.state, None);
    let loaded = if job.fresh {
        None
    } else {
        load_manifest(&job.manifest_path)
    };
    let canonical = job
        .folder
        .canonicalize()
        .unwrap_or_else(|_| job.folder.clone());
    let mut s = Syncer {
        manifest: Manifest {
            version: MANIFEST_VERSION,
            folder: canonical,
            chunk_tokens: job.chunk_tokens,
            files: BTreeMap::new(),
        },
        job,
        writer,
        dirty: false,
        last_commit: Instant::now(),
    };
    match loaded {
        Some(m)
            if m.version == MANIFEST_VERSION
                && m.folder == s.manifest.folder
                && m.chunk_tokens == s.job.chunk_tokens =>
        {
            s.manifest.files = m.files;
        }
        // No manifest, or one for other settings: the index's content is
        // unknown, so it is rebuilt.
        _ => s.clear(),
    }
    s.publish_counts();

    let tx = s.job.tx.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let msgs: Vec<Msg> = match res {
            Ok(event) => event.paths.into_iter().map(Msg::Changed).collect(),
            // An overflowed queue or a watch error: compare everything.
            Err(_) => vec![Msg::Rescan],
        };
        for m in msgs {
            let _ = tx.send(m);
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "file watching unavailable; periodic rescans only"))
    .ok();
    let mut watching = false;

    let mut next_rescan = Instant::now();
    loop {
        if s.stopped() {
            break;
        }
        if !watching && let Some(w) = watcher.as_mut() {
            watching = w
                .watch(&s.job.folder, notify::RecursiveMode::Recursive)
                .is_ok();
        }
        if Instant::now() >= next_rescan {
            s.full_sync();
            next_rescan = Instant::now() + s.job.rescan_interval;
            continue;
        }
        let msg = match s.job.rx.recv_timeout(next_rescan - Instant::now()) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut changed = BTreeSet::new();
        let mut rescan = false;
        let mut pending = Some(msg);
        let quiet_until = Instant::now() + DEBOUNCE;
        while let Some(m) = pending.take() {
            match m {
                Msg::Stop => return s.finish(),
                Msg::Changed(p) => {
                    changed.insert(p);
                }
                Msg::Rescan => rescan = true,
                Msg::Reindex => {
                    s.forget();
                    rescan = true;
                }
            }
            let left = quiet_until.saturating_duration_since(Instant::now());
            pending = s.job.rx.recv_timeout(left).ok();
        }
        if rescan {
            s.full_sync();
            next_rescan = Instant::now() + s.job.rescan_interval;
        } else if s.apply(&changed) {
            // A directory moved or vanished: its files need a walk.
            s.full_sync();
        }
        // A folder that was missing may be back: watch it again then.
        if s.job
            .state
            .lock()
            .map(|st| st.error.is_some())
            .unwrap_or(false)
        {
            watching = false;
        }
    }
    s.finish();
}

impl Syncer {
    fn stopped(&self) -> bool {
        self.job.stop.load(Ordering::Relaxed)
    }

    fn finish(mut self) {
        self.commit();
    }

    /// Make every known file count as changed, so the next sync reads
    /// each again and replaces its chunks; searches go on meanwhile, and
    /// files gone from the folder still leave the index.
    fn forget(&mut self) {
        for f in self.manifest.files.values_mut() {
            f.size = u64::MAX;
            f.hash = 0;
        }
    }

    fn clear(&mut self) {
        if let Err(e) = self.writer.clear() {
            set_error(&self.job.state, Some(e));
        }
        self.manifest.files.clear();
        self.dirty = true;
        self.commit();
    }

    /// Apply file events; true when a full walk is needed instead.
    fn apply(&mut self, changed: &BTreeSet<PathBuf>) -> bool {
        for p in changed {
            let Some(rel) = self.relative(p) else {
                continue;
            };
            match std::fs::metadata(p) {
                Ok(m) if m.is_dir() => return true,
                Ok(m) if m.is_file() => {
                    if supported(p) {
                        self.update(&rel, p, &m);
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    if self.manifest.files.contains_key(&rel) {
                        self.remove(&rel);
                    } else if self
                        .manifest
                        .files
                        .keys()
                        .any(|k| k.starts_with(&format!("{rel}/")))
                    {
                        return true;
                    }
                }
            }
        }
        self.commit();
        false
    }

    /// `p` relative to the folder, `/`-separated; `None` outside it or hidden.
    fn relative(&self, p: &Path) -> Option<String> {
        let rel = p
            .strip_prefix(&self.job.folder)
            .or_else(|_| p.strip_prefix(&self.manifest.folder))
            .ok()?;
        let mut parts = Vec::new();
        for c in rel.components() {
            let s = c.as_os_str().to_str()?;
            if s.starts_with('.') {
                return None;
            }
            parts.push(s);
        }
        (!parts.is_empty()).then(|| parts.join("/"))
    }

    /// Compare every file with the manifest.
    fn full_sync(&mut self) {
        let root = self.job.folder.clone();
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => {}
            _ => {
                // Kept as indexed: an unmounted folder should not empty the index.
                set_error(
                    &self.job.state,
                    Some(format!("the folder {} is not there", root.display())),
                );
                return;
            }
        }
        // Walk first, so the work (files new or changed since the
        // manifest) is known and its progress can be reported.
        let mut seen = BTreeSet::new();
        let mut work = Vec::new();
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            if self.stopped() {
                return;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(rel) = self.relative(&path) else {
                    continue;
                };
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(path);
                } else if supported(&path) {
                    // Symlinked files are followed; symlinked folders are not (no loops).
                    if let Ok(m) = std::fs::metadata(&path)
                        && m.is_file()
                    {
                        if self.changed(&rel, &m) {
                            work.push((rel.clone(), path, m));
                        }
                        seen.insert(rel);
                    }
                }
            }
        }
        let started = Instant::now();
        let total = work.len() as u64;
        for (done, (rel, path, m)) in work.into_iter().enumerate() {
            if self.stopped() {
                return;
            }
            if let Ok(mut st) = self.job.state.lock() {
                st.progress = Some(super::Progress {
                    done: done as u64,
                    total,
                    elapsed: started.elapsed(),
                });
            }
            self.update(&rel, &path, &m);
            if self.last_commit.elapsed() >= COMMIT_EVERY {
                self.commit();
            }
        }
        let gone: Vec<String> = self
            .manifest
            .files
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for rel in gone {
            self.remove(&rel);
        }
        self.commit();
        if let Ok(mut st) = self.job.state.lock() {
            st.error = None;
            st.last_sync = Some(SystemTime::now());
            st.progress = None;
        }
    }

    /// Whether a file's size or modification time differs from the manifest's.
    fn changed(&self, rel: &str, meta: &std::fs::Metadata) -> bool {
        let (size, mtime_ns) = stamp(meta);
        self.manifest
            .files
            .get(rel)
            .is_none_or(|k| k.size != size || k.mtime_ns != mtime_ns)
    }

    fn update(&mut self, rel: &str, path: &Path, meta: &std::fs::Metadata) {
        let (size, mtime_ns) = stamp(meta);
        if !self.changed(rel, meta) {
            return;
        }
        if size > MAX_FILE_BYTES {
            self.record(
                rel,
                size,
                mtime_ns,
                0,
                0,
                Some(format!("larger than {MAX_FILE_BYTES} bytes")),
            );
            return;
        }
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            // Gone or unreadable right now: the next event or rescan decides.
            Err(_) => return,
        };
        let hash = xxhash_rust::xxh3::xxh3_64(&bytes);
        if let Some(k) = self.manifest.files.get_mut(rel)
            && k.hash == hash
        {
            // Touched, not changed.
            k.size = size;
            k.mtime_ns = mtime_ns;
            return;
        }
        let result = extract(path, &bytes).map(|doc| {
            let chunks = chunk(&doc, self.job.chunk_tokens, &self.job.count);
            (doc.title, chunks)
        });
        match result {
            Ok((title, chunks)) => match self.writer.put(rel, &title, &chunks) {
                Ok(()) => self.record(rel, size, mtime_ns, hash, chunks.len() as u64, None),
                Err(e) => set_error(&self.job.state, Some(e)),
            },
            Err(why) => {
                tracing::warn!(source = %self.job.name, file = rel, error = %why, "file not indexed");
                self.writer.delete(rel);
                self.record(rel, size, mtime_ns, hash, 0, Some(why));
            }
        }
    }

    fn record(
        &mut self,
        rel: &str,
        size: u64,
        mtime_ns: u128,
        hash: u64,
        chunks: u64,
        failed: Option<String>,
    ) {
        self.manifest.files.insert(
            rel.to_string(),
            FileState {
                size,
                mtime_ns,
                hash,
                chunks,
                failed,
            },
        );
        self.dirty = true;
    }

    fn remove(&mut self, rel: &str) {
        self.writer.delete(rel);
        self.manifest.files.remove(rel);
        self.dirty = true;
    }

    fn commit(&mut self) {
        self.last_commit = Instant::now();
        if !self.dirty {
            return;
        }
        let result = self
            .writer
            .commit()
            .and_then(|()| self.job.index.reload())
            .and_then(|()| save_manifest(&self.job.manifest_path, &self.manifest));
        match result {
            Ok(()) => {
                self.dirty = false;
                if let Some(tx) = &self.job.committed {
                    let _ = tx.send(super::dense::DenseMsg::Committed);
                }
            }
            Err(e) => {
                tracing::error!(source = %self.job.name, error = %e, "files source index not saved");
                set_error(&self.job.state, Some(e));
            }
        }
        self.publish_counts();
    }

    fn publish_counts(&self) {
        let files = &self.manifest.files;
        let documents = files.values().filter(|f| f.chunks > 0).count() as u64;
        let failed = files.values().filter(|f| f.failed.is_some()).count() as u64;
        let chunks = self.job.index.chunks();
        if let Ok(mut st) = self.job.state.lock() {
            st.documents = documents;
            st.failed_documents = failed;
            st.chunks = chunks;
        }
    }
}

/// A file's size and modification time (ns since the epoch).
fn stamp(meta: &std::fs::Metadata) -> (u64, u128) {
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    (meta.len(), mtime_ns)
}

fn set_error(state: &Mutex<State>, error: Option<String>) {
    if let Ok(mut st) = state.lock() {
        st.error = error;
    }
}

fn load_manifest(path: &Path) -> Option<Manifest> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Written whole to a temporary file, then renamed over the old one.
fn save_manifest(path: &Path, m: &Manifest) -> Result<(), String> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(m).map_err(|e| format!("cannot encode the manifest: {e}"))?;
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
