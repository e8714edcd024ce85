//! The one trait every kind of source implements, and what it returns.

use std::time::Instant;

use async_trait::async_trait;

/// One passage a source found.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The document it came from, stable within its source (a file's
    /// relative path, a URL, a row's id).
    pub document: String,
    /// The document's title.
    pub title: String,
    /// Where in the document: a section heading path, `page 3`, … (may be empty).
    pub locator: String,
    /// A link to the document, when the source has one.
    pub url: Option<String>,
    /// The passage itself.
    pub text: String,
    /// The source's own relevance score (BM25 for files); comparable only
    /// within one source's answer.
    pub score: f32,
}

/// Why a source gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The source could not be reached or answered with a failure.
    #[error("{0}")]
    Failed(String),
    /// The source itself gave up at the deadline (a request or statement
    /// timeout); reported as the `timeout` outcome.
    #[error("timed out")]
    Timeout,
    /// The source is not usable as configured or started (a missing folder,
    /// an unset auth variable, an index that could not be opened).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// A search's answer with a remark for operators: how it was answered
/// when that was not the usual way (a files source's dense side not ready,
/// so BM25 only). Never holds the query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    /// The passages, best first.
    pub hits: Vec<Hit>,
    /// The remark, if any.
    pub note: Option<String>,
}

/// A searchable source. Implementations stop work at `deadline` where they
/// can (statement timeouts, request timeouts); the fan-out also drops a
/// search that runs past it, so a source that never answers costs nothing
/// beyond its deadline. The query is conversation text: never log or store it.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The best `k` passages for `query`, best first.
    async fn search(
        &self,
        query: &str,
        k: usize,
        deadline: Instant,
    ) -> Result<Vec<Hit>, SourceError>;

    /// The same search with a remark on how it was answered ([`Found`]);
    /// by default [`Connector::search`]'s hits and no remark.
    async fn find(&self, query: &str, k: usize, deadline: Instant) -> Result<Found, SourceError> {
        self.search(query, k, deadline)
            .await
            .map(|hits| Found { hits, note: None })
    }

    /// The source's state for operators; by default only its kind, `custom`.
    fn status(&self) -> crate::SourceStatus {
        crate::SourceStatus {
            kind: "custom",
            ..crate::SourceStatus::default()
        }
    }
}
