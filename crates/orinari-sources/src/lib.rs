//! Data sources for grounded answers: the connectors (a folder indexed with
//! BM25, an HTTP JSON API, the operator's SQL query), the fan-out that asks
//! every chosen source at once under deadlines, reciprocal rank fusion with
//! de-duplication, and packing under a token budget.
//!
//! This crate knows nothing of the chat format: the chat step hands it a
//! query, source names and budgets, and gets back passages and per-source
//! outcomes. Queries are conversation text: they are never logged or
//! written anywhere; the operator's own documents are indexed on disk.

mod connector;
mod fanout;
mod files;
mod fusion;
mod http;
mod pack;
mod sql;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use orinari_config::sources::{SourceConfig, SourceKind};

pub use connector::{Connector, Found, Hit, SourceError};
pub use fanout::{Outcome, SourceOutcome, Target};
pub use files::chunk::{TokenCounter, approximate_tokens};
pub use files::dense::DenseStatus;
pub use fusion::{RRF_K, RankedHit, fuse};
pub use pack::{MIN_PARTIAL_TOKENS, Packed, pack};

/// For the benchmarks in `examples/`: not part of the API.
#[doc(hidden)]
pub mod bench {
    pub use crate::files::dense::{seed as seed_vectors, top_k};
}

/// The configured sources, ready to search. Cheap to share (`Arc` inside).
#[derive(Clone, Default)]
pub struct Sources {
    targets: Arc<HashMap<Arc<str>, Target>>,
    order: Arc<Vec<Arc<str>>>,
    /// Each source's last search (for status), by name.
    last: Arc<HashMap<Arc<str>, Mutex<Option<LastSearch>>>>,
}

/// How a source's most recent search went (for operators: an http or sql
/// source's trouble shows here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastSearch {
    /// When it ended.
    pub at: SystemTime,
    /// Its outcome, hits, latency and error.
    pub outcome: SourceOutcome,
}

/// What one retrieval found.
#[derive(Debug, Clone, Default)]
pub struct Retrieval {
    /// Fused, de-duplicated passages, best first.
    pub hits: Vec<RankedHit>,
    /// Each asked source's outcome, in the order asked.
    pub outcomes: Vec<SourceOutcome>,
}

/// A source's state for operators (`/admin/v1/sources`, `orinari sources status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStatus {
    /// The source's name.
    pub name: String,
    /// `files`, `http`, `sql` (or what a custom connector says).
    pub kind: &'static str,
    /// Indexed documents (files), when known.
    pub documents: Option<u64>,
    /// Indexed chunks (files), when known.
    pub chunks: Option<u64>,
    /// Bytes the index takes on disk (files).
    pub index_bytes: Option<u64>,
    /// When the index last matched the folder (files).
    pub last_sync: Option<SystemTime>,
    /// Files that could not be read or extracted at the last sync.
    pub failed_documents: u64,
    /// What is wrong with the source, if anything.
    pub error: Option<String>,
    /// A sync in progress (files): how far it is.
    pub indexing: Option<Progress>,
    /// The most recent search, if any since start.
    pub last_search: Option<LastSearch>,
    /// A files source's vectors (`retrieval` dense or hybrid).
    pub dense: Option<DenseStatus>,
}

/// How far a files source's sync (a start, a rescan, a reindex) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Files read so far.
    pub done: u64,
    /// Files to read (new or changed since the last sync).
    pub total: u64,
    /// Time since the sync began.
    pub elapsed: Duration,
}

impl Progress {
    /// Files per second so far.
    pub fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64().max(1e-3)
    }

    /// Time left at the rate so far (`None` before the first file).
    pub fn left(&self) -> Option<Duration> {
        (self.done > 0).then(|| {
            Duration::from_secs_f64(self.total.saturating_sub(self.done) as f64 / self.rate())
        })
    }
}

impl Sources {
    /// Sources made of the given connectors (custom connectors, tests).
    pub fn from_targets(targets: Vec<Target>) -> Sources {
        let order = targets.iter().map(|t| t.name.clone()).collect();
        let last = targets
            .iter()
            .map(|t| (t.name.clone(), Mutex::new(None)))
            .collect();
        Sources {
            targets: Arc::new(targets.into_iter().map(|t| (t.name.clone(), t)).collect()),
            order: Arc::new(order),
            last: Arc::new(last),
        }
    }

    /// The source names, in config order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(|n| &**n)
    }

    /// Whether a source of this name is configured.
    pub fn contains(&self, name: &str) -> bool {
        self.targets.contains_key(name)
    }

    /// Each source's state, in config order.
    pub fn status(&self) -> Vec<SourceStatus> {
        self.order
            .iter()
            .filter_map(|n| self.targets.get(n))
            .map(|t| {
                let mut s = t.connector.status();
                s.name = t.name.to_string();
                s.last_search = self
                    .last
                    .get(&t.name)
                    .and_then(|l| l.lock().ok().and_then(|l| l.clone()));
                s
            })
            .collect()
    }

    /// Ask the named sources for `k` passages each, all at once, and fuse
    /// what arrives within `budget` (each source also within its own
    /// `timeout_ms`). Returns by the budget whatever the sources do. A name
    /// that is not configured is reported as an `error` outcome.
    pub async fn retrieve<S: AsRef<str>>(
        &self,
        names: &[S],
        query: &str,
        k: usize,
        budget: Duration,
    ) -> Retrieval {
        let mut targets = Vec::with_capacity(names.len());
        let mut unknown = Vec::new();
        for name in names {
            let name = name.as_ref();
            match self.targets.get(name) {
                Some(t) if !targets.iter().any(|x: &Target| x.name == t.name) => {
                    targets.push(t.clone());
                }
                Some(_) => {}
                None => unknown.push(SourceOutcome {
                    source: name.into(),
                    outcome: Outcome::Error,
                    hits: 0,
                    latency: Duration::ZERO,
                    error: Some("no source of this name is configured".into()),
                    note: None,
                }),
            }
        }
        let out = fanout::fan_out(&targets, query, k, budget).await;
        let now = SystemTime::now();
        for o in &out.outcomes {
            if let Some(Ok(mut last)) = self.last.get(&o.source).map(Mutex::lock) {
                *last = Some(LastSearch {
                    at: now,
                    outcome: o.clone(),
                });
            }
        }
        let mut outcomes = out.outcomes;
        outcomes.extend(unknown);
        Retrieval {
            hits: fuse(out.lists),
            outcomes,
        }
    }
}

/// What [`Sources::new`] needs besides the config.
pub struct Setup<'a> {
    /// The data directory; files sources keep their index under
    /// `sources/<name>/` in it.
    pub data_dir: &'a Path,
    /// Counts tokens as the model does (chunk budgets of files sources).
    pub count_tokens: TokenCounter,
    /// Reads environment variables (an http source's `auth_header_env`).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The embedding model's folder, for files sources with `retrieval`
    /// dense or hybrid: the same as `/v1/embeddings` uses, so that the
    /// process holds one copy of it ([`orinari_embed::shared`]).
    pub embed_model: PathBuf,
}

/// The process environment.
const PROCESS_ENV: &dyn Fn(&str) -> Option<String> = &|k| std::env::var(k).ok();

impl<'a> Setup<'a> {
    /// The process environment and the approximate token count.
    pub fn new(data_dir: &'a Path) -> Setup<'a> {
        Setup {
            data_dir,
            count_tokens: Arc::new(approximate_tokens),
            env: PROCESS_ENV,
            embed_model: orinari_embed::default_model_dir(),
        }
    }
}

/// The background indexers of the files sources, one thread each. The
/// caller owns it: [`Indexer::shutdown`] stops and joins them (dropping it
/// only asks them to stop). Sources started again over the same data
/// directory (a configuration reload) search the existing index at once;
/// their indexer waits up to a minute for the previous one to stop.
pub struct Indexer {
    workers: Vec<files::Worker>,
}

impl Indexer {
    /// Ask a files source to read every file again and replace its chunks
    /// (searches keep answering from the index meanwhile).
    /// False when no files source has this name.
    pub fn reindex(&self, name: &str) -> bool {
        self.workers
            .iter()
            .find(|w| w.name == name)
            .is_some_and(|w| w.tx.send(files::sync::Msg::Reindex).is_ok())
    }

    /// Ask a files source to compare its folder with its index now.
    pub fn rescan(&self, name: &str) -> bool {
        self.workers
            .iter()
            .find(|w| w.name == name)
            .is_some_and(|w| w.tx.send(files::sync::Msg::Rescan).is_ok())
    }

    /// Stop every indexer (each commits what it has; a dense one compacts
    /// its vector cache) and wait for them.
    /// Blocks: call it from a blocking context (`spawn_blocking`) in async code.
    pub fn shutdown(mut self) {
        self.signal();
        for w in self.workers.drain(..) {
            if w.thread.join().is_err() {
                tracing::error!(source = %w.name, "indexer thread panicked");
            }
            if let Some((_, t)) = w.dense
                && t.join().is_err()
            {
                tracing::error!(source = %w.name, "dense indexer thread panicked");
            }
        }
    }

    fn signal(&self) {
        for w in &self.workers {
            w.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = w.tx.send(files::sync::Msg::Stop);
            if let Some((tx, _)) = &w.dense {
                let _ = tx.send(files::dense::DenseMsg::Stop);
            }
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.signal();
    }
}

/// A source that could not start: every search says why.
struct Broken {
    kind: &'static str,
    why: String,
}

#[async_trait::async_trait]
impl Connector for Broken {
    async fn search(
        &self,
        _: &str,
        _: usize,
        _: std::time::Instant,
    ) -> Result<Vec<Hit>, SourceError> {
        Err(SourceError::Unavailable(self.why.clone()))
    }

    fn status(&self) -> SourceStatus {
        SourceStatus {
            kind: self.kind,
            error: Some(self.why.clone()),
            ..SourceStatus::default()
        }
    }
}

impl Sources {
    /// Start the configured sources: files sources open their index and
    /// start indexing in the background (the returned [`Indexer`]); http
    /// and sql sources prepare their clients (nothing connects yet). A
    /// source that cannot start is kept, reporting why on every search
    /// and in its status, so one broken source never stops the others.
    /// Opening the indexes is file I/O: call it at start-up or on the
    /// blocking pool, not on an async worker serving requests.
    pub fn new(configs: &[SourceConfig], setup: Setup<'_>) -> (Sources, Indexer) {
        let mut targets = Vec::with_capacity(configs.len());
        let mut workers = Vec::new();
        for c in configs {
            let connector: Result<Arc<dyn Connector>, String> = match &c.kind {
                SourceKind::Files(f) => {
                    let dir = setup.data_dir.join("sources").join(&c.name);
                    files::open(
                        &c.name,
                        f,
                        &dir,
                        setup.count_tokens.clone(),
                        &setup.embed_model,
                    )
                    .map(|(conn, w)| {
                        workers.push(w);
                        Arc::new(conn) as Arc<dyn Connector>
                    })
                }
                SourceKind::Http(h) => http::HttpConnector::new(h, setup.env)
                    .map(|x| Arc::new(x) as Arc<dyn Connector>),
                SourceKind::Sql(s) => {
                    sql::SqlConnector::new(s, c.timeout).map(|x| Arc::new(x) as Arc<dyn Connector>)
                }
            };
            let connector = connector.unwrap_or_else(|why| {
                tracing::error!(source = %c.name, error = %why, "source unavailable");
                Arc::new(Broken {
                    kind: c.kind.as_str(),
                    why,
                })
            });
            targets.push(Target {
                name: c.name.as_str().into(),
                timeout: c.timeout,
                connector,
            });
        }
        (Sources::from_targets(targets), Indexer { workers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::time::Instant;

    struct Words(&'static [&'static str]);
    #[async_trait]
    impl Connector for Words {
        async fn search(&self, q: &str, k: usize, _: Instant) -> Result<Vec<Hit>, SourceError> {
            Ok(self
                .0
                .iter()
                .filter(|t| t.contains(q))
                .take(k)
                .map(|t| Hit {
                    document: t.to_string(),
                    title: String::new(),
                    locator: String::new(),
                    url: None,
                    text: t.to_string(),
                    score: 1.0,
                })
                .collect())
        }
    }

    #[test]
    fn progress_gives_rate_and_time_left() {
        let p = Progress {
            done: 50,
            total: 200,
            elapsed: Duration::from_secs(10),
        };
        assert!((p.rate() - 5.0).abs() < 1e-9);
        assert_eq!(p.left(), Some(Duration::from_secs(30)));
        assert_eq!(Progress { done: 0, ..p }.left(), None);
    }

    #[tokio::test]
    async fn retrieve_asks_the_named_sources_and_fuses() {
        let sources = Sources::from_targets(vec![
            Target {
                name: "a".into(),
                timeout: Duration::from_secs(1),
                connector: Arc::new(Words(&["red apple", "green apple"])),
            },
            Target {
                name: "b".into(),
                timeout: Duration::from_secs(1),
                connector: Arc::new(Words(&["green apple", "apple pie"])),
            },
        ]);
        let r = sources
            .retrieve(&["a", "b", "a", "zzz"], "apple", 5, Duration::from_secs(1))
            .await;
        let texts: Vec<&str> = r.hits.iter().map(|h| h.hit.text.as_str()).collect();
        assert_eq!(texts, ["green apple", "red apple", "apple pie"]);
        let outcomes: Vec<(&str, Outcome)> =
            r.outcomes.iter().map(|o| (&*o.source, o.outcome)).collect();
        assert_eq!(
            outcomes,
            [
                ("a", Outcome::Ok),
                ("b", Outcome::Ok),
                ("zzz", Outcome::Error)
            ]
        );
        let only_b = sources
            .retrieve(&["b"], "pie", 5, Duration::from_secs(1))
            .await;
        assert_eq!(only_b.hits.len(), 1);
        assert_eq!(sources.names().collect::<Vec<_>>(), ["a", "b"]);
        let status = sources.status();
        assert_eq!(status[1].name, "b");
        let last = status[1].last_search.as_ref().unwrap();
        assert_eq!((last.outcome.outcome, last.outcome.hits), (Outcome::Ok, 1));
        assert_eq!(status[0].last_search.as_ref().unwrap().outcome.hits, 2);
    }
}
