//! What the upstream adapters share: their settings, the pooled HTTP client,
//! error classification, and the relay task that turns a provider's response
//! into [`Event`]s as bytes arrive.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::sse::{Parser, SseEvent};
use crate::{Event, Generation, ModelError};

/// Events buffered between the relay task and the reader.
const CHANNEL: usize = 64;
/// A whole (non-streamed) answer larger than this is refused.
const MAX_WHOLE_BYTES: usize = 16 << 20;
/// Upstream error text shown to clients is cut to this many characters.
const MAX_REASON_CHARS: usize = 300;

/// A secret (an upstream API key). Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamSecret(String);

impl UpstreamSecret {
    /// Wrap a secret read from the environment.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for UpstreamSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamSecret(***)")
    }
}

/// How to reach one upstream backend.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Base URL including the API version, e.g. `http://127.0.0.1:9001/v1`.
    pub base_url: String,
    /// The model name the upstream knows.
    pub model: String,
    /// The API key, read from `api_key_env` (never from the config file).
    pub api_key: Option<UpstreamSecret>,
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Path under `base_url` that the active health check requests.
    pub health_path: String,
    /// Context window to report for `/v1/models` (0 when unknown).
    pub context_window: u32,
}

/// The pooled client one backend uses: keep-alive connections, HTTP/2 where
/// the upstream offers it over TLS (ALPN), no Nagle delay.
pub(crate) fn client(config: &UpstreamConfig) -> Result<reqwest::Client, ModelError> {
    reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(4096)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| ModelError::Internal(format!("cannot build the HTTP client: {e}")))
}

/// `base_url` + `path`, with exactly one slash between them.
pub(crate) fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// A transport error, classified. The message names what failed, never a URL
/// (which could carry credentials) or a header.
pub(crate) fn transport(e: &reqwest::Error) -> ModelError {
    if e.is_timeout() {
        ModelError::Timeout("the connection timed out".into())
    } else if e.is_connect() {
        ModelError::Upstream("cannot connect".into())
    } else if e.is_body() || e.is_decode() {
        ModelError::Upstream("the response broke off".into())
    } else {
        ModelError::Upstream("the request failed".into())
    }
}

/// A non-2xx answer, classified: a refusal of the request itself (400, 413,
/// 422) is the client's to fix and is not retried; anything else (401/403 of
/// a misconfigured backend, 404, 408, 429, 5xx) is this backend's fault.
pub(crate) async fn status_error(response: reqwest::Response) -> ModelError {
    let status = response.status().as_u16();
    match status {
        400 | 413 | 422 => {
            let body = response.bytes().await.unwrap_or_default();
            ModelError::Rejected(reason(&body).unwrap_or_else(|| format!("HTTP {status}")))
        }
        _ => ModelError::Upstream(format!("HTTP {status}")),
    }
}

/// `error.message` of an OpenAI or Anthropic error body, cut short.
pub(crate) fn reason(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let m = v.get("error")?.get("message")?.as_str()?;
    Some(m.chars().take(MAX_REASON_CHARS).collect())
}

/// Turns a provider's events into ours.
pub(crate) trait Translate: Send + 'static {
    /// One upstream SSE event → events to pass on, or the end.
    fn event(&mut self, ev: SseEvent, out: &mut Vec<Event>) -> Result<Flow, ModelError>;
    /// The body ended: the last event, or an error if the answer is incomplete.
    fn end(&mut self) -> Result<Event, ModelError>;
    /// A whole (non-streamed) answer body → events.
    fn whole(&mut self, body: &[u8]) -> Result<Vec<Event>, ModelError>;
}

/// Whether the stream goes on after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Finished,
}

/// Send the request; a non-2xx answer becomes a classified error.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, ModelError> {
    let response = request.send().await.map_err(|e| transport(&e))?;
    if !response.status().is_success() {
        return Err(status_error(response).await);
    }
    Ok(response)
}

/// Read a whole answer (bounded) and translate it.
pub(crate) async fn whole(
    mut response: reqwest::Response,
    mut t: impl Translate,
) -> Result<Generation, ModelError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(&e))? {
        if body.len() + chunk.len() > MAX_WHOLE_BYTES {
            return Err(ModelError::Upstream(
                "the answer is larger than 16 MiB".into(),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let events = t.whole(&body)?;
    let (tx, rx) = mpsc::channel(events.len().max(1));
    for e in events {
        let _ = tx.try_send(Ok(e));
    }
    Ok(Generation {
        prompt_tokens: 0,
        events: rx,
    })
}

/// Relay a streamed answer: a task reads the body as it arrives and sends
/// each translated event on at once. The task is owned by the returned
/// [`Generation`]: it ends when the body ends, or as soon as the reader drops
/// the generation (which closes the upstream connection and so cancels the
/// upstream's work).
pub(crate) fn relay(mut response: reqwest::Response, mut t: impl Translate) -> Generation {
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(async move {
        let mut parser = Parser::default();
        let mut raw = Vec::new();
        let mut events = Vec::new();
        loop {
            let chunk = tokio::select! {
                c = response.chunk() => c,
                () = tx.closed() => return,
            };
            let bytes = match chunk {
                Ok(Some(bytes)) => bytes,
                Ok(None) => {
                    let _ = tx.send(t.end()).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(transport(&e))).await;
                    return;
                }
            };
            if let Err(e) = parser.push(&bytes, &mut raw) {
                let _ = tx.send(Err(ModelError::Upstream(e.0.into()))).await;
                return;
            }
            for ev in raw.drain(..) {
                let flow = t.event(ev, &mut events);
                for e in events.drain(..) {
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                match flow {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Finished) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        }
    });
    Generation {
        prompt_tokens: 0,
        events: rx,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = UpstreamSecret::new("sk-very-secret");
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn urls_join_with_one_slash() {
        assert_eq!(join("http://h/v1/", "/models"), "http://h/v1/models");
        assert_eq!(
            join("http://h/v1", "chat/completions"),
            "http://h/v1/chat/completions"
        );
    }

    #[test]
    fn upstream_reasons_are_cut_short() {
        let long = "x".repeat(1000);
        let body = serde_json::json!({"error": {"message": long}}).to_string();
        assert_eq!(reason(body.as_bytes()).map(|r| r.len()), Some(300));
        assert_eq!(reason(b"not json"), None);
    }
}
