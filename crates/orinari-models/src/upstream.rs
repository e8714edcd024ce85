//! What the upstream adapters share: their settings, the pooled HTTP client,
//! error classification, and the relay that turns a provider's response into
//! [`Event`]s as bytes arrive, polled in the reader's own task.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

use crate::sse::{Parser, SseEvent};
use crate::{Event, EventResult, EventSource, Events, Generation, ModelError};
/// A whole (non-streamed) answer larger than this is refused.
const MAX_WHOLE_BYTES: usize = 16 << 20;
/// Upstream error text shown to clients is cut to this many characters.
pub(crate) const MAX_REASON_CHARS: usize = 300;

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

/// A URL parsed once when the backend is built; the error never shows the
/// URL (it could carry credentials).
pub(crate) fn parse_url(url: &str) -> Result<reqwest::Url, ModelError> {
    reqwest::Url::parse(url)
        .map_err(|e| ModelError::Internal(format!("the backend's `base_url` is not a URL: {e}")))
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
    Ok(Generation {
        prompt_tokens: 0,
        events: Events::ready(events.into_iter().map(Ok).collect()),
    })
}

/// Relay a streamed answer: the body is read and translated inside the
/// reader's own poll, as bytes arrive, with no task or channel in between.
/// Dropping the returned [`Generation`] drops the response, which closes the
/// upstream connection and so cancels the upstream's work.
pub(crate) fn relay(response: reqwest::Response, t: impl Translate) -> Generation {
    Generation {
        prompt_tokens: 0,
        events: Events::polled(Relay {
            body: response.bytes_stream(),
            parser: Parser::default(),
            raw: Vec::new(),
            out: Vec::new(),
            queue: VecDeque::new(),
            t,
            ended: false,
        }),
    }
}

/// A streamed upstream body being translated (see [`relay`]).
struct Relay<S, T> {
    body: S,
    parser: Parser,
    /// SSE events parsed from the latest piece of body.
    raw: Vec<SseEvent>,
    /// Events translated from one SSE event.
    out: Vec<Event>,
    /// Translated events not yet handed on (one body piece often holds several).
    queue: VecDeque<EventResult>,
    t: T,
    /// The answer is complete, failed, or the body ended: nothing more is read.
    ended: bool,
}

impl<S, T> Relay<S, T>
where
    S: Stream<Item = reqwest::Result<Bytes>> + Unpin + Send,
    T: Translate,
{
    /// Translate one piece of body into `queue`; returns whether the answer ended.
    fn piece(&mut self, bytes: &[u8]) -> bool {
        if let Err(e) = self.parser.push(bytes, &mut self.raw) {
            self.raw.clear();
            self.queue.push_back(Err(ModelError::Upstream(e.0.into())));
            return true;
        }
        let mut ended = false;
        for ev in self.raw.drain(..) {
            if ended {
                continue;
            }
            let flow = self.t.event(ev, &mut self.out);
            self.queue.extend(self.out.drain(..).map(Ok));
            match flow {
                Ok(Flow::Continue) => {}
                Ok(Flow::Finished) => ended = true,
                Err(e) => {
                    self.queue.push_back(Err(e));
                    ended = true;
                }
            }
        }
        ended
    }

    /// After the last event: read the body's end if it is already here, so
    /// the connection goes back to the pool instead of being closed.
    fn drain_tail(&mut self, cx: &mut Context<'_>) {
        for _ in 0..2 {
            match Pin::new(&mut self.body).poll_next(cx) {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(None | Some(Err(_))) | Poll::Pending => return,
            }
        }
    }
}

impl<S, T> EventSource for Relay<S, T>
where
    S: Stream<Item = reqwest::Result<Bytes>> + Unpin + Send,
    T: Translate,
{
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<EventResult>> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Poll::Ready(Some(event));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.body).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => {
                    if self.piece(&bytes) {
                        self.ended = true;
                        self.drain_tail(cx);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.ended = true;
                    self.queue.push_back(Err(transport(&e)));
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    self.queue.push_back(self.t.end());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    /// A relay over a body that arrives in the given pieces.
    fn relay_of(
        pieces: &[&str],
    ) -> Relay<impl Stream<Item = reqwest::Result<Bytes>> + Unpin + Send, crate::openai::Chunks>
    {
        let body: Vec<reqwest::Result<Bytes>> = pieces
            .iter()
            .map(|p| Ok(Bytes::copy_from_slice(p.as_bytes())))
            .collect();
        Relay {
            body: futures::stream::iter(body),
            parser: Parser::default(),
            raw: Vec::new(),
            out: Vec::new(),
            queue: VecDeque::new(),
            t: crate::openai::Chunks::default(),
            ended: false,
        }
    }

    fn drain(mut r: impl EventSource) -> Vec<EventResult> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut out = Vec::new();
        while let Poll::Ready(Some(e)) = r.poll_event(&mut cx) {
            out.push(e);
        }
        out
    }

    #[test]
    fn the_relay_translates_events_split_and_batched_in_any_way() {
        let text = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"He\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"llo\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\ndata: {\"ignored\":true}\n\n",
        );
        let done = Event::Done {
            finish_reason: crate::FinishReason::Stop,
            usage: crate::Usage {
                prompt_tokens: 0,
                completion_tokens: 2,
            },
        };
        let want = vec![
            Ok(Event::Delta("He".into())),
            Ok(Event::Delta("llo".into())),
            Ok(done),
        ];
        for piece in [1, 7, 40, text.len()] {
            let pieces: Vec<&str> = text
                .as_bytes()
                .chunks(piece)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            assert_eq!(drain(relay_of(&pieces)), want, "pieces of {piece}");
        }
    }

    #[test]
    fn a_body_that_ends_early_ends_the_relay_with_an_error() {
        let got = drain(relay_of(&[
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
        ]));
        assert_eq!(got.len(), 2);
        assert!(matches!(got[1], Err(ModelError::Upstream(_))));
        let bad = drain(relay_of(&["data: not json\n\n", "data: [DONE]\n\n"]));
        assert_eq!(
            bad,
            vec![Err(ModelError::Upstream(
                "a stream chunk is not JSON".into()
            ))]
        );
    }

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
