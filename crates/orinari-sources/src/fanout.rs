//! Fan-out: every chosen source queried at once, each under its own
//! deadline and all under the retrieval budget. What arrived in time is
//! used; each source's outcome is reported.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::connector::{Connector, Found, Hit, SourceError};

/// How one source's search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It answered (perhaps with no hits).
    Ok,
    /// It did not answer before its deadline or the budget.
    Timeout,
    /// It failed.
    Error,
}

impl Outcome {
    /// The contract's label: `ok`, `timeout`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
        }
    }
}

/// One source's part in a retrieval (CONTRACT.md's `retrieval` entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOutcome {
    /// The source's name.
    pub source: Arc<str>,
    /// How its search ended.
    pub outcome: Outcome,
    /// Hits it returned (0 unless `Ok`).
    pub hits: usize,
    /// From the start of the retrieval to its answer or deadline.
    pub latency: Duration,
    /// Why it failed, for operators (never holds the query).
    pub error: Option<String>,
    /// How it answered when that was not the usual way (a files source's
    /// dense side not ready: BM25 only); never holds the query.
    pub note: Option<String>,
}

/// A source as the fan-out sees it.
#[derive(Clone)]
pub struct Target {
    /// Its name.
    pub name: Arc<str>,
    /// Its own deadline.
    pub timeout: Duration,
    /// The search.
    pub connector: Arc<dyn Connector>,
}

/// Each source's ranked hits (in `targets` order) and outcomes.
pub(crate) struct FanOut {
    pub lists: Vec<(Arc<str>, Vec<Hit>)>,
    pub outcomes: Vec<SourceOutcome>,
}

/// Query every target at once; return by `start + budget` at the latest.
pub(crate) async fn fan_out(targets: &[Target], query: &str, k: usize, budget: Duration) -> FanOut {
    let start = Instant::now();
    let overall = start + budget;
    let searches = targets.iter().map(|t| {
        let deadline = overall.min(start + t.timeout);
        async move {
            let result =
                tokio::time::timeout_at(deadline.into(), t.connector.find(query, k, deadline))
                    .await;
            let latency = start.elapsed();
            let (outcome, hits, error, note) = match result {
                Ok(Ok(Found { mut hits, note })) => {
                    hits.truncate(k);
                    (Outcome::Ok, hits, None, note)
                }
                Ok(Err(SourceError::Timeout)) | Err(_) => {
                    (Outcome::Timeout, Vec::new(), None, None)
                }
                Ok(Err(e)) => (Outcome::Error, Vec::new(), Some(scrub(&e, query)), None),
            };
            tracing::debug!(
                source = %t.name,
                outcome = outcome.as_str(),
                hits = hits.len(),
                latency_ms = latency.as_millis() as u64,
                "source searched"
            );
            (
                SourceOutcome {
                    source: t.name.clone(),
                    outcome,
                    hits: hits.len(),
                    latency,
                    error,
                    note,
                },
                hits,
            )
        }
    });
    let mut lists = Vec::with_capacity(targets.len());
    let mut outcomes = Vec::with_capacity(targets.len());
    for (outcome, hits) in join_all(searches).await {
        lists.push((outcome.source.clone(), hits));
        outcomes.push(outcome);
    }
    FanOut { lists, outcomes }
}

/// An error's text without the query in it: a database or API may echo a
/// parameter it could not use, and outcomes reach logs and admin pages.
fn scrub(e: &SourceError, query: &str) -> String {
    let text = e.to_string();
    let q = query.trim();
    if q.len() >= 3 {
        text.replace(q, "…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;

    struct Fixed(Vec<Hit>, Duration);
    #[async_trait]
    impl Connector for Fixed {
        async fn search(&self, _: &str, _: usize, _: Instant) -> Result<Vec<Hit>, SourceError> {
            tokio::time::sleep(self.1).await;
            Ok(self.0.clone())
        }
    }
    struct Never;
    #[async_trait]
    impl Connector for Never {
        async fn search(&self, _: &str, _: usize, _: Instant) -> Result<Vec<Hit>, SourceError> {
            std::future::pending().await
        }
    }
    struct Fails;
    #[async_trait]
    impl Connector for Fails {
        async fn search(&self, q: &str, _: usize, _: Instant) -> Result<Vec<Hit>, SourceError> {
            Err(SourceError::Failed(format!("bad input: {q}")))
        }
    }

    pub(crate) fn hit(doc: &str, text: &str) -> Hit {
        Hit {
            document: doc.into(),
            title: doc.into(),
            locator: String::new(),
            url: None,
            text: text.into(),
            score: 1.0,
        }
    }

    fn target(name: &str, timeout_ms: u64, c: impl Connector + 'static) -> Target {
        Target {
            name: name.into(),
            timeout: Duration::from_millis(timeout_ms),
            connector: Arc::new(c),
        }
    }

    #[tokio::test]
    async fn a_source_that_never_answers_costs_only_the_budget() {
        let targets = [
            target("fast", 1000, Fixed(vec![hit("a", "alpha")], Duration::ZERO)),
            target("never", 60_000, Never),
            target("broken", 1000, Fails),
        ];
        let started = Instant::now();
        let out = fan_out(&targets, "secret question", 5, Duration::from_millis(150)).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(150), "{took:?}");
        assert!(took < Duration::from_millis(200), "{took:?}");
        let o = &out.outcomes;
        assert_eq!((o[0].outcome, o[0].hits), (Outcome::Ok, 1));
        assert_eq!((o[1].outcome, o[1].hits), (Outcome::Timeout, 0));
        assert!(o[1].latency >= Duration::from_millis(150));
        assert_eq!(o[2].outcome, Outcome::Error);
        let e = o[2].error.as_deref().unwrap();
        assert!(
            !e.contains("secret"),
            "the query leaked into the error: {e}"
        );
        assert_eq!(out.lists[0].1.len(), 1);
    }

    #[tokio::test]
    async fn each_source_has_its_own_deadline() {
        let targets = [
            target(
                "slow",
                50,
                Fixed(vec![hit("a", "alpha")], Duration::from_millis(500)),
            ),
            target(
                "quick",
                1000,
                Fixed(vec![hit("b", "beta")], Duration::from_millis(10)),
            ),
        ];
        let started = Instant::now();
        let out = fan_out(&targets, "q", 5, Duration::from_secs(5)).await;
        // Done once the quick source answered and the slow one's 50 ms passed.
        assert!(started.elapsed() < Duration::from_millis(300));
        assert_eq!(out.outcomes[0].outcome, Outcome::Timeout);
        assert_eq!(out.outcomes[1].outcome, Outcome::Ok);
        assert!(out.outcomes[0].latency < Duration::from_millis(300));
    }

    #[tokio::test]
    async fn hits_beyond_k_are_cut() {
        let many: Vec<Hit> = (0..20).map(|i| hit(&i.to_string(), "t")).collect();
        let out = fan_out(
            &[target("s", 1000, Fixed(many, Duration::ZERO))],
            "q",
            3,
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(out.lists[0].1.len(), 3);
        assert_eq!(out.outcomes[0].hits, 3);
    }
}
