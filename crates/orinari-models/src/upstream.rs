//! What the upstream adapters share: their settings, the pooled HTTP client,
//! error classification, and the relay that turns a provider's response into
//! [`Event`]s as bytes arrive, polled in the reader's own task.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyDataStream, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use tokio::net::TcpStream;

use crate::h2::{H2Pool, Lease};
use crate::sse::{Parser, SseEvent};
use crate::{BoxFuture, Event, EventResult, EventSource, Events, Generation, ModelError};

/// A connector's error.
type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A whole (non-streamed) answer larger than this is refused.
const MAX_WHOLE_BYTES: usize = 16 << 20;
/// Upstream error text shown to clients is cut to this many characters.
pub(crate) const MAX_REASON_CHARS: usize = 300;
/// At most this much of an error answer's body is read for its reason.
const REASON_BODY_BYTES: usize = 64 << 10;

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
    /// Which HTTP version to speak to it.
    pub http_version: HttpVersion,
}

/// Which HTTP version to speak to an upstream (`http_version`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HttpVersion {
    /// `https`: HTTP/2 where TLS agrees on it (ALPN), else HTTP/1.1;
    /// plain `http`: HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only: with prior knowledge over plain `http`; over `https` an
    /// upstream that does not agree on it in ALPN is an error.
    Http2,
}

/// What a connection to an upstream reads into at a time. hyper's default
/// read buffer starts at 8 KiB and grows; an upstream sends small SSE
/// chunks, and a long stream holds its connection (and this buffer) for
/// its whole life, so a 1,000-stream gateway keeps 1,000 of them.
const READ_BUF_BYTES: usize = 4096;
/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// The connector: TCP (no Nagle delay), through the environment's proxy
/// where it names one, then TLS for `https` URLs, offering the HTTP versions
/// that the pool using it speaks (ALPN); the backend's connect timeout
/// bounds it whole.
pub(crate) type Connector = Timed<HttpsConnector<Egress>>;

/// TCP to the upstream, or a CONNECT tunnel through the proxy that
/// `HTTPS_PROXY`, `HTTP_PROXY` or `ALL_PROXY` names (either case; not for
/// hosts in `NO_PROXY`), read once when the backend is built.
#[derive(Clone)]
pub(crate) struct Egress {
    tcp: HttpConnector,
    proxies: Arc<Matcher>,
}

impl Egress {
    fn new(tcp: HttpConnector, proxies: Matcher) -> Self {
        Self {
            tcp,
            proxies: Arc::new(proxies),
        }
    }
}

impl tower_service::Service<Uri> for Egress {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut tcp = self.tcp.clone();
        match self.proxies.intercept(&dst) {
            None => Box::pin(async move { tcp.call(dst).await.map_err(Into::into) }),
            Some(proxy) => {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), tcp);
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Box::pin(async move { tunnel.call(dst).await.map_err(Into::into) })
            }
        }
    }
}

/// A connector with the backend's connect timeout over the whole
/// connection: TCP (or the proxy tunnel) and TLS. hyper-util's own timeout
/// covers TCP only, so an upstream that accepts and then never answers the
/// TLS handshake would otherwise hold the request until its first-token
/// timeout.
#[derive(Clone, Debug)]
pub(crate) struct Timed<C> {
    inner: C,
    limit: Duration,
}

impl<C> tower_service::Service<Uri> for Timed<C>
where
    C: tower_service::Service<Uri, Error = BoxError>,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<C::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let (limit, connecting) = (self.limit, self.inner.call(dst));
        Box::pin(async move {
            tokio::time::timeout(limit, connecting)
                .await
                .unwrap_or_else(|_| {
                    Err(
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                            .into(),
                    )
                })
        })
    }
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The proxy URL may carry credentials.
        f.write_str("Egress")
    }
}
/// A request body: the JSON, written once.
pub(crate) type ReqBody = Full<Bytes>;

/// An upstream's response body; over HTTP/2 it holds the stream's place on
/// its connection until it is dropped.
#[derive(Debug)]
pub(crate) struct UpBody {
    inner: Incoming,
    _lease: Option<Lease>,
}

impl hyper::body::Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// One backend's HTTP side: pools of keep-alive connections (HTTP/1.1, and
/// HTTP/2 where it is spoken), its URLs parsed once, and the headers every
/// request carries (the API key among them, marked sensitive so it is never
/// printed).
#[derive(Debug)]
pub(crate) struct Http {
    /// HTTP/1.1 connections (hyper-util's pool; it only ever offers
    /// HTTP/1.1 in ALPN, see [`H2Pool`] for why).
    h1: Client<Connector, ReqBody>,
    /// HTTP/2 connections, unless the backend speaks HTTP/1.1 only.
    h2: Option<H2Pool>,
    generate: Uri,
    health: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Http {
    /// A pool for one backend; requests go to `base_url` + `path`.
    pub(crate) fn new(
        config: &UpstreamConfig,
        path: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
    ) -> Result<Self, ModelError> {
        let mut tcp = HttpConnector::new();
        // Split over the host's addresses, so a dead first one leaves time
        // for the next; `Timed` bounds the whole attempt, TLS included.
        tcp.set_connect_timeout(Some(config.connect_timeout));
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let egress = Egress::new(tcp, Matcher::from_env());
        // The system's CA roots, read once for both pools.
        let roots =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| ModelError::Internal(format!("cannot set up TLS: {e}")))?
                .with_native_roots()
                .map_err(|e| {
                    ModelError::Internal(format!("cannot load the system's CA roots: {e}"))
                })?
                .with_no_client_auth();
        let tls = || {
            HttpsConnectorBuilder::new()
                .with_tls_config(roots.clone())
                .https_or_http()
        };
        let timed = |inner| Timed {
            inner,
            limit: config.connect_timeout,
        };
        let h1 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(4096)
            .http1_read_buf_exact_size(READ_BUF_BYTES)
            .build(timed(tls().enable_http1().wrap_connector(egress.clone())));
        let generate = parse_url(&join(&config.base_url, path))?;
        let https = generate.scheme_str() == Some("https");
        let h2 = match (config.http_version, https) {
            (HttpVersion::Http1, _) | (HttpVersion::Auto, false) => None,
            (HttpVersion::Http2, _) => Some(tls().enable_http2().wrap_connector(egress)),
            (HttpVersion::Auto, true) => Some(tls().enable_all_versions().wrap_connector(egress)),
        }
        .map(|connector| {
            H2Pool::new(
                timed(connector),
                generate.clone(),
                config.http_version == HttpVersion::Http2,
                POOL_IDLE,
            )
        });
        Ok(Self {
            h1,
            h2,
            health: parse_url(&join(&config.base_url, &config.health_path))?,
            generate,
            headers,
        })
    }

    /// POST `body` as JSON; a non-2xx answer becomes a classified error.
    pub(crate) async fn post(
        &self,
        body: &impl serde::Serialize,
    ) -> Result<Response<UpBody>, ModelError> {
        let json = serde_json::to_vec(body)
            .map_err(|e| ModelError::Internal(format!("cannot write the request: {e}")))?;
        self.send(&self.generate, Some(Bytes::from(json))).await
    }

    /// GET the health path.
    pub(crate) async fn probe(&self) -> Result<(), ModelError> {
        let response = self.send(&self.health, None).await?;
        // Read the (small) answer so the connection goes back to the pool.
        let _ = Limited::new(response.into_body(), REASON_BODY_BYTES)
            .collect()
            .await;
        Ok(())
    }

    /// A POST of `json`, or a GET without it, to `uri` with the backend's
    /// headers. Built anew for each attempt: the body is shared, not copied.
    fn request(&self, uri: &Uri, json: Option<&Bytes>) -> Request<ReqBody> {
        let mut request = Request::new(json.cloned().map(Full::new).unwrap_or_default());
        *request.uri_mut() = uri.clone();
        if json.is_some() {
            *request.method_mut() = Method::POST;
            request
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        for (name, value) in &self.headers {
            request.headers_mut().insert(name, value.clone());
        }
        request
    }

    async fn send(&self, uri: &Uri, json: Option<Bytes>) -> Result<Response<UpBody>, ModelError> {
        let h2 = match &self.h2 {
            Some(pool) if !pool.declined() => {
                pool.send(|| self.request(uri, json.as_ref())).await?
            }
            _ => None,
        };
        let response = match h2 {
            Some((lease, response)) => response.map(|inner| UpBody {
                inner,
                _lease: Some(lease),
            }),
            // hyper-util's pool retries a request that it had not written
            // when a kept-alive connection turned out closed
            // (`retry_canceled_requests`, on by default).
            None => self
                .h1
                .request(self.request(uri, json.as_ref()))
                .await
                .map_err(|e| transport(&e))?
                .map(|inner| UpBody {
                    inner,
                    _lease: None,
                }),
        };
        if !response.status().is_success() {
            return Err(status_error(response).await);
        }
        Ok(response)
    }
}

/// A header carrying a secret: refused if it is not a valid header value
/// (without saying what it is), and marked sensitive.
pub(crate) fn secret_header(prefix: &str, key: &UpstreamSecret) -> Result<HeaderValue, ModelError> {
    let mut v = HeaderValue::try_from(format!("{prefix}{}", key.expose())).map_err(|_| {
        ModelError::Internal("the API key holds characters a header cannot carry".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
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
pub(crate) fn parse_url(url: &str) -> Result<Uri, ModelError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| ModelError::Internal(format!("the backend's `base_url` is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => Err(ModelError::Internal(
            "the backend's `base_url` is not an http:// or https:// URL".into(),
        )),
    }
}

/// A transport error, classified. The message names what failed, never a URL
/// (which could carry credentials) or a header.
pub(crate) fn transport(e: &hyper_util::client::legacy::Error) -> ModelError {
    if e.is_connect() {
        connect_error(e)
    } else {
        ModelError::Upstream("the request failed".into())
    }
}

/// A connection that could not be made: timed out, or refused (or failed).
pub(crate) fn connect_error(e: &(dyn std::error::Error + 'static)) -> ModelError {
    if timed_out(e) {
        ModelError::Timeout("the connection timed out".into())
    } else {
        ModelError::Upstream("cannot connect".into())
    }
}

/// Whether an I/O timeout is among an error's causes.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The answer's body broke off (reset, or not valid HTTP framing).
fn broke_off() -> ModelError {
    ModelError::Upstream("the response broke off".into())
}

/// A non-2xx answer, classified: a refusal of the request itself (400, 413,
/// 422) is the client's to fix and is not retried; anything else (401/403 of
/// a misconfigured backend, 404, 408, 429, 5xx) is this backend's fault.
pub(crate) async fn status_error(response: Response<UpBody>) -> ModelError {
    let status = response.status().as_u16();
    match status {
        400 | 413 | 422 => {
            let body = Limited::new(response.into_body(), REASON_BODY_BYTES)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
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

/// Read a whole answer (bounded) and translate it.
pub(crate) async fn whole(
    response: Response<UpBody>,
    mut t: impl Translate,
) -> Result<Generation, ModelError> {
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
    let events = t.whole(&body)?;
    Ok(Generation {
        prompt_tokens: 0,
        events: Events::ready(events.into_iter().map(Ok).collect()),
    })
}

/// Relay a streamed answer: the body is read and translated inside the
/// reader's own poll, as bytes arrive, with no task or channel in between.
/// Dropping the returned [`Generation`] drops the response, which closes the
/// upstream connection (HTTP/1.1) or resets the stream (HTTP/2) and so
/// cancels the upstream's work.
pub(crate) fn relay(response: Response<UpBody>, t: impl Translate) -> Generation {
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
    S: Stream<Item = Result<Bytes, hyper::Error>> + Unpin + Send + 'static,
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
            runtime.spawn(async move {
                let rest = async { while body.next().await.is_some() {} };
                let _ = tokio::time::timeout(TAIL_GRACE, rest).await;
            });
        }
    }
}

impl<S, T> EventSource for Relay<S, T>
where
    S: Stream<Item = Result<Bytes, hyper::Error>> + Unpin + Send + 'static,
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
        impl Stream<Item = Result<Bytes, hyper::Error>> + Unpin + Send + use<>,
        crate::openai::Chunks,
    > {
        let body: Vec<Result<Bytes, hyper::Error>> = pieces
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
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, hyper::Error>>();
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

    #[test]
    fn secrets_never_print() {
        let s = UpstreamSecret::new("sk-very-secret");
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn base_urls_must_be_http_with_a_host_and_errors_never_show_them() {
        assert!(parse_url("https://api.example.com/v1/chat/completions").is_ok());
        assert!(parse_url("http://10.0.0.7:8000/v1/messages").is_ok());
        for bad in [
            "ftp://user:pw@h/v1",
            "user:pw@h/v1",
            "http:///v1",
            "not a url",
        ] {
            let e = parse_url(bad).unwrap_err().to_string();
            assert!(!e.contains("pw") && !e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn a_key_a_header_cannot_carry_is_refused_without_showing_it() {
        let ok = secret_header("Bearer ", &UpstreamSecret::new("sk-fine")).unwrap();
        assert!(ok.is_sensitive());
        assert_eq!(ok.to_str().unwrap(), "Bearer sk-fine");
        let e = secret_header("", &UpstreamSecret::new("sk-bad\nkey"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("sk-bad"), "{e}");
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
