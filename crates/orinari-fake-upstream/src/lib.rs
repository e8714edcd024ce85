//! A fault-injecting model upstream that speaks the OpenAI Chat Completions
//! API (`POST /v1/chat/completions`, `GET /v1/models`) and the Anthropic
//! Messages API (`POST /v1/messages`), streamed or whole, and OpenAI's
//! embeddings (`POST /v1/embeddings`).
//!
//! Tests start it in-process on port 0 and change its [`Faults`] while it
//! runs: latency before the answer, delay before the first token and between
//! tokens, error statuses, connection resets, death in the middle of a
//! stream, and stalls. [`FakeUpstream::stop`] kills it the way a crashed
//! process dies (listener closed, every open connection cut);
//! [`FakeUpstream::restart`] brings it back on the same port. The
//! `orinari-fake-upstream` binary serves the same thing for benchmarks.

mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::stream::{self, Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use wire::{Call, Dialect, Reply, plan, sample};

/// The whole answer text the fake gives for `n` tokens.
pub fn wire_text(n: usize) -> String {
    wire::text(n)
}

/// What the upstream does to each request. Change it live with [`FakeUpstream::set`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Faults {
    /// Wait before answering at all (before the response head).
    pub latency: Duration,
    /// Streams: wait after the head before the first token.
    pub first_token_delay: Duration,
    /// Streams: wait between tokens.
    pub chunk_delay: Duration,
    /// Tokens per answer.
    pub tokens: usize,
    /// Answer every chat request with this HTTP status (and an error body).
    pub fail_status: Option<u16>,
    /// Close the connection without any answer.
    pub reset: bool,
    /// Streams: cut the connection after this many tokens.
    pub die_after: Option<usize>,
    /// Streams: stop sending (but keep the connection open) after this many tokens.
    pub stall_after: Option<usize>,
    /// Whether the health endpoint (`GET /v1/models`) fails too when
    /// `fail_status` is set. Default true.
    pub health_follows_failures: bool,
    /// Close each connection gracefully (HTTP/2 `GOAWAY`, HTTP/1.1
    /// `Connection: close`) once it has carried this many chat requests, as
    /// nginx does after `keepalive_requests` (1,000 by default): streams
    /// already accepted finish, later ones must go to a new connection.
    pub max_requests_per_connection: Option<u64>,
    /// A reset-flood limit, as strict HTTP/2 servers keep since the rapid
    /// reset attack (CVE-2023-44487): once clients have cancelled this many
    /// streamed answers on one connection, it is closed gracefully (`GOAWAY`).
    pub max_cancelled_per_connection: Option<u64>,
    /// Answer text requests with this text instead of "tok0 tok1 …"
    /// (streamed four characters a piece, so a test sees it split at
    /// awkward places).
    pub reply_text: Option<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            first_token_delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            tokens: 8,
            fail_status: None,
            reset: false,
            die_after: None,
            stall_after: None,
            health_follows_failures: true,
            max_requests_per_connection: None,
            max_cancelled_per_connection: None,
            reply_text: None,
        }
    }
}

/// Counters a test can assert on.
#[derive(Debug, Default)]
pub struct Counters {
    /// Chat requests received (both dialects), answered or not.
    pub requests: AtomicU64,
    /// Health checks received.
    pub probes: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Chat requests that came over HTTP/2.
    pub http2_requests: AtomicU64,
    /// Connections that reached a per-connection limit and were closed
    /// gracefully ([`Faults::max_requests_per_connection`],
    /// [`Faults::max_cancelled_per_connection`]).
    pub goaways: AtomicU64,
}

/// One connection's state, handed to its handlers: how to cut it (`reset`
/// fault), how to close it gracefully (`GOAWAY`), and what it has carried.
struct Conn {
    counters: Arc<Counters>,
    reset: Notify,
    goaway: Notify,
    requests: AtomicU64,
    cancelled: AtomicU64,
}

impl Conn {
    fn new(counters: Arc<Counters>) -> Self {
        Self {
            counters,
            reset: Notify::new(),
            goaway: Notify::new(),
            requests: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
        }
    }

    /// Count a chat request; closes the connection gracefully at `limit`.
    /// Returns whether this is its last request.
    fn request(&self, limit: Option<u64>) -> bool {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let last = limit == Some(n);
        if last {
            self.close();
        }
        last
    }

    /// Count a streamed answer the client cancelled; closes the connection
    /// gracefully at `limit`.
    fn cancelled(&self, limit: u64) {
        if self.cancelled.fetch_add(1, Ordering::Relaxed) + 1 == limit {
            self.close();
        }
    }

    fn close(&self) {
        self.counters.goaways.fetch_add(1, Ordering::Relaxed);
        self.goaway.notify_one();
    }
}

#[derive(Clone)]
struct Shared {
    faults: Arc<RwLock<Faults>>,
    counters: Arc<Counters>,
    last_auth: Arc<RwLock<Option<String>>>,
    last_request: Arc<RwLock<Option<serde_json::Value>>>,
}

/// A running fake upstream.
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Shared,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Serving HTTPS (see [`FakeUpstream::start_tls`]).
    tls: Option<TlsAcceptor>,
}

impl FakeUpstream {
    /// Start on `127.0.0.1:0`.
    pub async fn start(faults: Faults) -> std::io::Result<Self> {
        Self::start_on(
            "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
            faults,
        )
        .await
    }

    /// Start on a given address.
    pub async fn start_on(addr: SocketAddr, faults: Faults) -> std::io::Result<Self> {
        Self::start_with(addr, faults, None).await
    }

    /// Start on `127.0.0.1:0` behind TLS, with a new self-signed certificate
    /// for `localhost`, offering the `alpn` protocols (`b"h2"`,
    /// `b"http/1.1"`). Returns the certificate (PEM) a client must trust;
    /// [`FakeUpstream::base_url`] is then `https://localhost:PORT/v1`.
    pub async fn start_tls(faults: Faults, alpn: &[&[u8]]) -> std::io::Result<(Self, String)> {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .map_err(std::io::Error::other)?;
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .map_err(std::io::Error::other)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let addr = "127.0.0.1:0".parse().map_err(std::io::Error::other)?;
        let me = Self::start_with(addr, faults, Some(TlsAcceptor::from(Arc::new(config)))).await?;
        Ok((me, certified.cert.pem()))
    }

    async fn start_with(
        addr: SocketAddr,
        faults: Faults,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<Self> {
        let shared = Shared {
            faults: Arc::new(RwLock::new(faults)),
            counters: Arc::new(Counters::default()),
            last_auth: Arc::new(RwLock::new(None)),
            last_request: Arc::new(RwLock::new(None)),
        };
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mut me = Self {
            addr,
            shared,
            stop: None,
            task: None,
            tls,
        };
        me.spawn(listener);
        Ok(me)
    }

    fn spawn(&mut self, listener: TcpListener) {
        let (tx, rx) = oneshot::channel();
        self.stop = Some(tx);
        #[expect(
            clippy::disallowed_methods,
            reason = "owned by the FakeUpstream: stop() joins it, Drop aborts it"
        )]
        let task = tokio::spawn(serve(
            listener,
            app(self.shared.clone()),
            rx,
            self.shared.counters.clone(),
            self.tls.clone(),
        ));
        self.task = Some(task);
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/v1` (or `https://localhost:PORT/v1` with TLS), the
    /// `base_url` to configure.
    pub fn base_url(&self) -> String {
        match self.tls {
            None => format!("http://{}/v1", self.addr),
            Some(_) => format!("https://localhost:{}/v1", self.addr.port()),
        }
    }

    /// Change the faults; applies to requests that arrive from now on.
    pub fn set(&self, change: impl FnOnce(&mut Faults)) {
        if let Ok(mut f) = self.shared.faults.write() {
            change(&mut f);
        }
    }

    /// Chat requests received so far.
    pub fn requests(&self) -> u64 {
        self.shared.counters.requests.load(Ordering::Relaxed)
    }

    /// Health checks received so far.
    pub fn probes(&self) -> u64 {
        self.shared.counters.probes.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.counters.connections.load(Ordering::Relaxed)
    }

    /// Chat requests that came over HTTP/2 so far.
    pub fn http2_requests(&self) -> u64 {
        self.shared.counters.http2_requests.load(Ordering::Relaxed)
    }

    /// Connections closed gracefully by a per-connection limit so far.
    pub fn goaways(&self) -> u64 {
        self.shared.counters.goaways.load(Ordering::Relaxed)
    }

    /// The credential of the last chat request (`Authorization` or `x-api-key`).
    pub fn last_auth(&self) -> Option<String> {
        self.shared.last_auth.read().ok().and_then(|a| a.clone())
    }

    /// The body of the last chat request, as JSON (what the gateway passed on).
    pub fn last_request(&self) -> Option<serde_json::Value> {
        self.shared.last_request.read().ok().and_then(|r| r.clone())
    }

    /// Kill it: close the listener and cut every open connection.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Start again on the same port (after [`FakeUpstream::stop`]).
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await?;
        self.spawn(listener);
        Ok(())
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Serve `app` until `stop` fires. Every connection task lives in one
/// `JoinSet`, so stopping drops them all at once, like a dead process.
/// HTTP/1.1 and HTTP/2 (prior knowledge) are both served.
pub async fn accept_loop(listener: TcpListener, app: Router, stop: oneshot::Receiver<()>) {
    serve(listener, app, stop, Arc::default(), None).await;
}

async fn serve(
    listener: TcpListener,
    app: Router,
    mut stop: oneshot::Receiver<()>,
    counters: Arc<Counters>,
    tls: Option<TlsAcceptor>,
) {
    let mut conns = JoinSet::new();
    loop {
        let (socket, _) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let _ = socket.set_nodelay(true);
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(counters.clone()));
        let app = app.clone().layer(axum::Extension(conn.clone()));
        let tls = tls.clone();
        conns.spawn(async move {
            match tls {
                None => connection(socket, app, conn).await,
                Some(tls) => {
                    if let Ok(stream) = tls.accept(socket).await {
                        connection(stream, app, conn).await;
                    }
                }
            }
        });
    }
}

/// Serve one connection (HTTP/1.1, or HTTP/2 by its preface) until it ends
/// or a `reset` fault ends it from inside a handler. A per-connection limit
/// closes it gracefully: hyper sends `GOAWAY` (HTTP/2) naming the last
/// stream it accepted, finishes those, and refuses the rest.
async fn connection<S>(stream: S, app: Router, state: Arc<Conn>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let mut conn =
        std::pin::pin!(builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = state.reset.notified() => return,
            () = state.goaway.notified(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The routes, for serving on a listener of the caller's own.
fn app(shared: Shared) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai))
        .route("/v1/messages", post(anthropic))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .with_state(shared)
}

/// A router that serves the fake upstream with fixed faults (the benchmark binary).
pub fn router(faults: Faults) -> Router {
    app(Shared {
        faults: Arc::new(RwLock::new(faults)),
        counters: Arc::new(Counters::default()),
        last_auth: Arc::new(RwLock::new(None)),
        last_request: Arc::new(RwLock::new(None)),
    })
}

async fn models(State(s): State<Shared>) -> Response {
    s.counters.probes.fetch_add(1, Ordering::Relaxed);
    let faults = s.faults.read().map(|f| f.clone()).unwrap_or_default();
    if let Some(status) = faults
        .fail_status
        .filter(|_| faults.health_follows_failures)
    {
        return error(status);
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"object":"list","data":[{"id":"fake","object":"model","created":0,"owned_by":"fake"}]}"#,
    )
        .into_response()
}

async fn openai(
    State(s): State<Shared>,
    axum::Extension(conn): axum::Extension<Arc<Conn>>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    count(&s, version);
    answer(s, conn, version, headers, body, Dialect::OpenAi).await
}

async fn anthropic(
    State(s): State<Shared>,
    axum::Extension(conn): axum::Extension<Arc<Conn>>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    count(&s, version);
    answer(s, conn, version, headers, body, Dialect::Anthropic).await
}

/// `POST /v1/embeddings`: for input `i` of `n` characters (or token
/// ids) the vector `[n, i, 1, 0]`, listed last input first (a client must
/// order by `index`), always as floats whatever `encoding_format` asks (as
/// some servers do); usage counts one token per character or id.
/// `latency` and `fail_status` apply as to answers.
async fn embeddings(State(s): State<Shared>, version: Version, body: Bytes) -> Response {
    use serde_json::{Value, json};
    count(&s, version);
    let faults = s.faults.read().map(|f| f.clone()).unwrap_or_default();
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    if let Some(status) = faults.fail_status {
        return error(status);
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(400);
    };
    let size = |v: &Value| match v {
        Value::String(t) => t.chars().count(),
        Value::Array(ids) => ids.len(),
        _ => 1,
    };
    let sizes: Vec<usize> = match &request["input"] {
        Value::Array(items) if items.iter().all(Value::is_number) => vec![items.len()],
        Value::Array(items) => items.iter().map(size).collect(),
        other => vec![size(other)],
    };
    let data: Vec<Value> = sizes
        .iter()
        .enumerate()
        .rev()
        .map(|(i, &n)| json!({"object": "embedding", "index": i, "embedding": [n as f32, i as f32, 1.0, 0.0]}))
        .collect();
    let tokens: usize = sizes.iter().sum();
    let model = request["model"].clone();
    if let Ok(mut r) = s.last_request.write() {
        *r = Some(request);
    }
    axum::Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response()
}

fn count(s: &Shared, version: Version) {
    s.counters.requests.fetch_add(1, Ordering::Relaxed);
    if version == Version::HTTP_2 {
        s.counters.http2_requests.fetch_add(1, Ordering::Relaxed);
    }
}

async fn answer(
    s: Shared,
    conn: Arc<Conn>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
    dialect: Dialect,
) -> Response {
    let faults = s.faults.read().map(|f| f.clone()).unwrap_or_default();
    let last = conn.request(faults.max_requests_per_connection);
    let mut response = respond(s, conn, faults, headers, body, dialect).await;
    // HTTP/1.1's last answer on a connection says so, as nginx's does, so
    // the client does not send another on it as it closes.
    if last && version < Version::HTTP_2 {
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}

async fn respond(
    s: Shared,
    conn: Arc<Conn>,
    faults: Faults,
    headers: HeaderMap,
    body: Bytes,
    dialect: Dialect,
) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .or_else(|| headers.get("x-api-key"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Ok(mut a) = s.last_auth.write() {
        *a = auth;
    }
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    if faults.reset {
        conn.reset.notify_one();
        return std::future::pending().await;
    }
    if let Some(status) = faults.fail_status {
        return error(status);
    }
    let request: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return error(400),
    };
    let stream = request
        .get("stream")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let tokens = request
        .get("max_tokens")
        .and_then(serde_json::Value::as_u64)
        .map_or(faults.tokens, |m| faults.tokens.min(m as usize));
    let logprobs = dialect == wire::Dialect::OpenAi
        && request.get("logprobs") == Some(&serde_json::Value::Bool(true));
    let top = request
        .get("top_logprobs")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0) as usize;
    let reply = match (wire::plan(dialect, &request, tokens), &faults.reply_text) {
        (wire::Reply::Text(_), Some(text)) => wire::Reply::Json(text.clone()),
        (wire::Reply::Text(n), None) if logprobs => wire::Reply::Scored(n, top),
        (reply, _) => reply,
    };
    if let Ok(mut r) = s.last_request.write() {
        *r = Some(request);
    }
    if !stream {
        return (
            [(header::CONTENT_TYPE, "application/json")],
            wire::whole_reply(dialect, &reply),
        )
            .into_response();
    }
    let limit = faults.max_cancelled_per_connection;
    let body = Body::from_stream(Watched {
        inner: sse(dialect, &reply, faults),
        on_cancel: limit.map(|limit| (conn, limit)),
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A reply's events after the head, paced by the faults like tokens (the
/// last event, the tail, is never delayed or cut).
fn paced(
    dialect: Dialect,
    mut events: Vec<Bytes>,
    f: Faults,
) -> std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>> {
    let tail = events.pop().unwrap_or_default();
    let head = stream::once(async move { Ok(wire::stream_head(dialect)) });
    let body = stream::iter(events.into_iter().enumerate()).then(move |(i, event)| {
        let f = f.clone();
        async move {
            let delay = if i == 0 {
                f.first_token_delay
            } else {
                f.chunk_delay
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if f.die_after == Some(i) {
                return Err(std::io::Error::other("injected death"));
            }
            if f.stall_after == Some(i) {
                std::future::pending::<()>().await;
            }
            Ok(event)
        }
    });
    Box::pin(
        head.chain(body)
            .chain(stream::once(async move { Ok(tail) })),
    )
}

fn error(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!(
            r#"{{"error":{{"message":"injected failure {}","type":"server_error"}}}}"#,
            status.as_u16()
        ),
    )
        .into_response()
}

/// A streamed answer that counts, on its connection, a client that hung up
/// before its end.
struct Watched {
    inner: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>,
    /// Taken when the answer ends, so only a cancelled one is counted.
    on_cancel: Option<(Arc<Conn>, u64)>,
}

impl Stream for Watched {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        if matches!(polled, std::task::Poll::Ready(None)) {
            self.on_cancel = None;
        }
        polled
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some((conn, limit)) = self.on_cancel.take() {
            conn.cancelled(limit);
        }
    }
}

/// The streamed body, paced by the faults: a text reply token by token, a
/// JSON or tool-call reply piece by piece. With no delays and no faults a
/// text reply is one buffer (the benchmark's fast path).
fn sse(
    dialect: Dialect,
    reply: &wire::Reply,
    f: Faults,
) -> std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>> {
    let tokens = match reply {
        wire::Reply::Text(n) => *n,
        other => return paced(dialect, wire::stream_reply(dialect, other), f),
    };
    let quiet = f.first_token_delay.is_zero()
        && f.chunk_delay.is_zero()
        && f.die_after.is_none()
        && f.stall_after.is_none();
    if quiet {
        let all = wire::stream_all(dialect, tokens);
        return Box::pin(stream::once(async move { Ok::<_, std::io::Error>(all) }));
    }
    let head = stream::once(async move { Ok(wire::stream_head(dialect)) });
    let body = stream::iter(0..tokens).then(move |i| {
        let f = f.clone();
        async move {
            let delay = if i == 0 {
                f.first_token_delay
            } else {
                f.chunk_delay
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if f.die_after == Some(i) {
                return Err(std::io::Error::other("injected death"));
            }
            if f.stall_after == Some(i) {
                std::future::pending::<()>().await;
            }
            Ok(wire::stream_token(dialect, i))
        }
    });
    let tail = stream::once(async move { Ok(wire::stream_tail(dialect, tokens)) });
    Box::pin(head.chain(body).chain(tail))
}
