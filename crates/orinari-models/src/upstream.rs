//! What the upstream adapters share: their settings, one backend shape
//! ([`HttpBackend`], generic over the [`Provider`] that maps requests,
//! answers and chunks), and the relay that turns a provider's response into
//! [`Event`]s as bytes arrive, polled in the reader's own task. The HTTP
//! itself (pools, timeouts, egress) is `orinari-upstream`'s.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::pin::Pin;
#[cfg(test)]
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::Response;
use http::header::{HeaderName, HeaderValue};
use http_body_util::{BodyDataStream, BodyExt};
use orinari_api::embeddings::{Embeddings, EmbeddingsRequest};
use orinari_upstream::{Body, BodyError, Client, Endpoint, Target};

use crate::sse::{Parser, SseEvent};
use crate::{
    BoxFuture, Event, EventResult, EventSource, Events, GenerateRequest, Generation, ModelBackend,
    ModelError, ModelInfo,
};

pub use orinari_upstream::{HttpVersion, UpstreamSecret};

/// A whole (non-streamed) answer larger than this is refused.
const MAX_WHOLE_BYTES: usize = 16 << 20;

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
    /// Which HTTP version to speak to it.
    pub http_version: HttpVersion,
}

impl From<orinari_upstream::Error> for ModelError {
    fn from(e: orinari_upstream::Error) -> Self {
        use orinari_upstream::Error as E;
        match e {
            E::Failed(m) => Self::Upstream(m),
            E::Timeout(m) => Self::Timeout(m),
            E::Rejected(m) => Self::Rejected(m),
            E::Config(m) => Self::Internal(m),
        }
    }
}

/// What one provider's API is: where requests go, what they carry, and how
/// requests, answers and chunks map to ours. Everything else about an
/// upstream backend is the same for every provider ([`HttpBackend`]).
pub(crate) trait Provider: Send + Sync + 'static {
    /// The path under `base_url` that generation requests go to.
    const PATH: &'static str;
    /// `owned_by` in `/v1/models`.
    const OWNED_BY: &'static str;
    /// The path under `base_url` that embeddings requests go to, for a
    /// provider whose API embeds (`None`: it does not).
    const EMBEDDINGS_PATH: Option<&'static str> = None;
    /// Translates this provider's answers and stream chunks.
    type Translator: Translate + Default;

    /// Headers every request carries (the API key among them).
    fn headers(
        api_key: Option<&UpstreamSecret>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, ModelError>;

    /// The request body for `request`, as JSON.
    fn body(model: &str, request: &GenerateRequest) -> Result<Vec<u8>, serde_json::Error>;

    /// Refuse, naming the field, what this provider cannot do (checked
    /// before anything is sent).
    fn check(request: &GenerateRequest) -> Result<(), ModelError>;
}

/// An upstream model backend speaking provider `P`'s API over its own
/// connection pools.
pub struct HttpBackend<P> {
    model: String,
    http: Client,
    embeddings: Option<Endpoint>,
    info: ModelInfo,
    provider: PhantomData<fn() -> P>,
}

impl<P> std::fmt::Debug for HttpBackend<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpBackend")
            .field("model", &self.model)
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

/// A backend with its own connection pools (each provider's public `new`
/// calls this).
pub(crate) fn build<P: Provider>(config: UpstreamConfig) -> Result<HttpBackend<P>, ModelError> {
    let target = Target {
        base_url: &config.base_url,
        path: P::PATH,
        health_path: &config.health_path,
        connect_timeout: config.connect_timeout,
        http_version: config.http_version,
    };
    let http = Client::new(&target, P::headers(config.api_key.as_ref())?)?;
    Ok(HttpBackend {
        embeddings: P::EMBEDDINGS_PATH
            .map(|path| http.endpoint(path))
            .transpose()?,
        http,
        info: ModelInfo {
            context_window: config.context_window,
            owned_by: P::OWNED_BY.into(),
        },
        model: config.model,
        provider: PhantomData,
    })
}

impl<P: Provider> ModelBackend for HttpBackend<P> {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn start(&self, request: GenerateRequest) -> BoxFuture<'_, Result<Generation, ModelError>> {
        Box::pin(async move {
            P::check(&request)?;
            let json = P::body(&self.model, &request)
                .map_err(|e| ModelError::Internal(format!("cannot write the request: {e}")))?;
            let response = self.http.post(Bytes::from(json)).await?;
            if request.stream {
                Ok(relay(response, P::Translator::default()))
            } else {
                whole(response, P::Translator::default()).await
            }
        })
    }

    fn ready(&self) -> bool {
        true
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), ModelError>> {
        Box::pin(async { Ok(self.http.probe().await?) })
    }

    /// The request passed on with the upstream's model name; its answer
    /// checked (one vector per input) and written as the client asked.
    fn embed(&self, request: EmbeddingsRequest) -> BoxFuture<'_, Result<Embeddings, ModelError>> {
        Box::pin(async move {
            let Some(endpoint) = &self.embeddings else {
                return Err(crate::does_not_embed());
            };
            let json = request.upstream_body(&self.model);
            let response = self.http.post_to(endpoint, Bytes::from(json)).await?;
            let body = read_whole(response).await?;
            Embeddings::from_upstream(&body, request.input.len(), request.encoding_format).map_err(
                |e| ModelError::Upstream(format!("the embeddings answer is unusable: {e}")),
            )
        })
    }
}

/// The answer's body broke off (reset, or not valid HTTP framing).
fn broke_off() -> ModelError {
    ModelError::Upstream("the response broke off".into())
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

/// Read a whole answer (bounded) and translate it.
pub(crate) async fn whole(
    response: Response<Body>,
    mut t: impl Translate,
) -> Result<Generation, ModelError> {
    let events = t.whole(&read_whole(response).await?)?;
    Ok(Generation {
        prompt_tokens: 0,
        events: Events::ready(events.into_iter().map(Ok).collect()),
    })
}

/// A whole answer's body, at most [`MAX_WHOLE_BYTES`].
async fn read_whole(response: Response<Body>) -> Result<Vec<u8>, ModelError> {
    let mut incoming = response.into_body();
    let mut body = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let Ok(chunk) = frame.map_err(|_| broke_off())?.into_data() else {
            continue; // trailers
        };
        if body.len() + chunk.len() > MAX_WHOLE_BYTES {
            return Err(ModelError::Upstream(
                "the answer is larger than 16 MiB".into(),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Relay a streamed answer: the body is read and translated inside the
/// reader's own poll, as bytes arrive, with no task or channel in between.
/// Dropping the returned [`Generation`] drops the response, which closes the
/// upstream connection (HTTP/1.1) or resets the stream (HTTP/2) and so
/// cancels the upstream's work.
pub(crate) fn relay(response: Response<Body>, t: impl Translate) -> Generation {
    Generation {
        prompt_tokens: 0,
        events: Events::polled(Relay::new(BodyDataStream::new(response.into_body()), t)),
    }
}

/// How long a finished answer's body may take to end (HTTP/2's
/// `END_STREAM`, HTTP/1.1's last chunk) after its last event before it is
/// dropped (see [`Relay::drain_tail`]).
const TAIL_GRACE: Duration = Duration::from_secs(1);

/// A streamed upstream body being translated (see [`relay`]).
struct Relay<S, T> {
    /// `None` once nothing more is read: the answer is complete (its body
    /// end left to the tail task), it failed, or the body ended.
    body: Option<S>,
    parser: Parser,
    /// SSE events parsed from the latest piece of body.
    raw: Vec<SseEvent>,
    /// Events translated from one SSE event.
    out: Vec<Event>,
    /// Translated events not yet handed on (one body piece often holds several).
    queue: VecDeque<EventResult>,
    t: T,
}

impl<S, T> Relay<S, T> {
    fn new(body: S, t: T) -> Self {
        Self {
            body: Some(body),
            parser: Parser::default(),
            raw: Vec::new(),
            out: Vec::new(),
            queue: VecDeque::new(),
            t,
        }
    }
}

impl<S, T> Relay<S, T>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin + Send + 'static,
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

    /// After the last event the body's end (HTTP/2's `END_STREAM`,
    /// HTTP/1.1's last chunk) usually follows at once: read it if it is
    /// here, or else let a small task wait for it, up to [`TAIL_GRACE`]. The
    /// answer is complete either way; what this saves is the connection.
    /// Dropped unfinished, an HTTP/1.1 body closes its connection instead of
    /// returning it to the pool, and an HTTP/2 stream is reset — and the
    /// frames still on their way for a reset stream, once h2 has forgotten
    /// it, count as errors against h2's limit of 1,024, past which it closes
    /// the whole connection with every stream on it.
    fn drain_tail(&mut self, cx: &mut Context<'_>) {
        let Some(mut body) = self.body.take() else {
            return;
        };
        for _ in 0..2 {
            match Pin::new(&mut body).poll_next(cx) {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(None | Some(Err(_))) => return,
                Poll::Pending => break,
            }
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            #[expect(
                clippy::disallowed_methods,
                reason = "bounded: it reads one finished body's end for at most TAIL_GRACE, then ends"
            )]
            runtime.spawn(async move {
                let rest = async { while body.next().await.is_some() {} };
                let _ = tokio::time::timeout(TAIL_GRACE, rest).await;
            });
        }
    }
}

impl<S, T> EventSource for Relay<S, T>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin + Send + 'static,
    T: Translate,
{
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<EventResult>> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Poll::Ready(Some(event));
            }
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(body).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => {
                    if self.piece(&bytes) {
                        self.drain_tail(cx);
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    self.body = None;
                    self.queue.push_back(Err(broke_off()));
                }
                Poll::Ready(None) => {
                    self.body = None;
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
    ) -> Relay<
        impl Stream<Item = Result<Bytes, BodyError>> + Unpin + Send + use<>,
        crate::openai::Chunks,
    > {
        let body: Vec<Result<Bytes, BodyError>> = pieces
            .iter()
            .map(|p| Ok(Bytes::copy_from_slice(p.as_bytes())))
            .collect();
        Relay::new(
            futures::stream::iter(body),
            crate::openai::Chunks::default(),
        )
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

    /// The answer is handed on as soon as `[DONE]` is read; the body's end,
    /// still on its way, is read by the tail task rather than dropped (which
    /// would reset an HTTP/2 stream or close an HTTP/1.1 connection).
    #[tokio::test]
    async fn a_finished_answer_reads_the_body_end_off_the_readers_path() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, BodyError>>();
        tx.unbounded_send(Ok(Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
        )))
        .unwrap();
        let end_read = Arc::new(AtomicBool::new(false));
        let flag = end_read.clone();
        let body = rx.chain(futures::stream::poll_fn(move |_| {
            flag.store(true, Ordering::SeqCst);
            Poll::Ready(None)
        }));
        let got = drain(Relay::new(body, crate::openai::Chunks::default()));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(!end_read.load(Ordering::SeqCst));
        drop(tx);
        for _ in 0..200 {
            if end_read.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the body's end was never read");
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
}
