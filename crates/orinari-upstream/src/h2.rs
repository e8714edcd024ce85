//! HTTP/2 to one upstream, over as many connections as the streams in
//! flight need.
//!
//! hyper-util's pool keeps a single HTTP/2 connection per host, so requests
//! beyond the server's `SETTINGS_MAX_CONCURRENT_STREAMS` would wait for one
//! of the running streams to end — for an LLM stream, many seconds. Here a
//! connection carries at most that many streams (and at most
//! [`MAX_STREAMS`]); when every open connection is full, the next request
//! opens another. Requests that arrive while a connection is being opened
//! wait for it instead of opening their own.
//!
//! A request the upstream did not process — refused (`REFUSED_STREAM`),
//! above the last stream id of a `GOAWAY`, or never written because the
//! connection had closed — is sent again at once on another connection (up
//! to [`UNPROCESSED_RETRIES`] times) on a connection dialled after the one
//! that failed it, and that one takes no new streams. Servers close connections like that on purpose:
//! after a number of requests (nginx's `keepalive_requests`), on a reset
//! flood (CVE-2023-44487 defences), or on shutdown; none of it is the
//! request's fault, and nothing was done twice. Any other failure is the
//! caller's to judge (the balancer's failover rules).

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::Shared;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::ReqBody;
use crate::connect::{Connector, connect_error};
use crate::{BoxFuture, Error};

/// The most streams one connection carries, even where the server allows
/// more: past this, a new connection spreads the work over more tasks.
const MAX_STREAMS: usize = 100;
/// Ping a connection that carries streams this often, and close it when the
/// answer takes longer than [`PING_TIMEOUT`].
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Reset streams each connection remembers (for h2's default 1 s), so the
/// frames already on their way for them are dropped quietly. h2's default,
/// 50, is less than the streams one connection carries. A late frame on a
/// stream h2 has forgotten is answered with a reset of its own
/// (`STREAM_CLOSED`), which h2 counts as a protocol-error reset — see
/// [`open`] for why that count is not capped here.
const REMEMBERED_RESETS: usize = 10 * MAX_STREAMS;
/// How many more connections one request tries after upstreams said they
/// did not process it. Bounded, so an upstream that refuses everything
/// still fails the request at once (the balancer then fails over).
const UNPROCESSED_RETRIES: usize = 2;

/// How a connection attempt ended, shared by every request waiting on it.
#[derive(Clone)]
enum Dial {
    Failed(Error),
    /// TLS agreed on HTTP/1.1 (ALPN): the upstream does not speak HTTP/2.
    Declined,
}

type Ready = Shared<BoxFuture<'static, Result<(), Dial>>>;

/// What the connection's own task reports.
#[derive(Debug)]
struct Link {
    /// Streams this connection may carry at once.
    limit: AtomicUsize,
    /// It takes no new streams: the attempt failed, the connection ended,
    /// or the upstream left a request on it unprocessed (it is closing).
    /// Streams already on it run to their end.
    retired: AtomicBool,
    /// The way to send requests on it, while its task runs. Its task takes
    /// it away when the connection ends, and so does the pool when it forgets
    /// the connection ([`Conn`]'s `Drop`): hyper's request channel can keep
    /// a request that raced with the end of the connection (handed over
    /// after the connection's task dropped and drained the receiving end),
    /// and that request is handed back, unwritten, only once every sender
    /// of the channel is gone. A sender held anywhere past the connection's
    /// end — here, or by a request waiting for its answer — would leave that
    /// request waiting for ever.
    sender: Mutex<Option<SendRequest<ReqBody>>>,
}

impl Link {
    fn sender(&self) -> Option<SendRequest<ReqBody>> {
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Drop the connection's sender: see [`Link::sender`].
    fn forget_sender(&self) {
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

struct Conn {
    /// Dial order: a request the upstream left unprocessed on this
    /// connection is sent again only on one opened after it.
    seq: u64,
    ready: Ready,
    link: Arc<Link>,
    in_flight: AtomicUsize,
    /// When `in_flight` last fell to 0, in ms since the pool's epoch.
    idle_since_ms: AtomicU64,
}

impl Drop for Conn {
    /// Forgotten by the pool and by every lease: dropping the last sender
    /// ends the connection's task once its streams are done.
    fn drop(&mut self) {
        self.link.forget_sender();
    }
}

/// A stream's claim on a connection, released when dropped (with the
/// response body it travels in).
pub(crate) struct Lease {
    conn: Arc<Conn>,
    epoch: Instant,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.conn.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.conn
                .idle_since_ms
                .store(ms_since(self.epoch), Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

fn ms_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The HTTP/2 connections to one upstream.
pub(crate) struct H2Pool {
    connector: Connector,
    /// Scheme and authority to connect to.
    target: Uri,
    /// `https`: HTTP/2 only where TLS agrees on it (ALPN); plain `http`
    /// speaks it with prior knowledge.
    tls: bool,
    /// An upstream that declines HTTP/2 is an error (`http_version = "2"`)
    /// rather than a reason to use HTTP/1.1 (`"auto"`).
    required: bool,
    /// Set once the upstream declined HTTP/2 (`"auto"` only).
    declined: AtomicBool,
    idle: Duration,
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Connections dialled so far (the next one's `seq`).
    dialled: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Pool")
            .field("required", &self.required)
            .field("declined", &self.declined)
            .finish_non_exhaustive()
    }
}

impl H2Pool {
    pub(crate) fn new(connector: Connector, target: Uri, required: bool, idle: Duration) -> Self {
        Self {
            connector,
            tls: target.scheme_str() == Some("https"),
            target,
            required,
            declined: AtomicBool::new(false),
            idle,
            conns: Mutex::new(Vec::new()),
            dialled: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Whether the upstream declined HTTP/2: use HTTP/1.1 instead.
    pub(crate) fn declined(&self) -> bool {
        self.declined.load(Ordering::Relaxed)
    }

    /// A connection with room for one more stream (opened if none has) and
    /// its sender (`None` if it has ended since), or `None` when the upstream
    /// turned out not to speak HTTP/2; when `after` is given, one dialled
    /// after the connection numbered so (a fresh one, for a request an older
    /// one left unprocessed).
    async fn checkout(
        &self,
        after: Option<u64>,
    ) -> Result<Option<(Lease, Option<SendRequest<ReqBody>>)>, Error> {
        let lease = self.lease(after);
        match lease.conn.ready.clone().await {
            Ok(()) => {
                let sender = lease.conn.link.sender();
                Ok(Some((lease, sender)))
            }
            Err(Dial::Failed(e)) => Err(e),
            Err(Dial::Declined) => {
                self.declined.store(true, Ordering::Relaxed);
                Ok(None)
            }
        }
    }

    /// Send a request (built by `build`, anew for each attempt) on a
    /// connection with room for it; `None` when the upstream turned out not
    /// to speak HTTP/2. A request the upstream did not process is sent again
    /// on another connection (see the module's doc).
    pub(crate) async fn send(
        &self,
        build: impl Fn() -> Request<ReqBody>,
    ) -> Result<Option<(Lease, Response<Incoming>)>, Error> {
        let (mut retries, mut after) = (0, None);
        loop {
            let Some((lease, sender)) = self.checkout(after).await? else {
                return Ok(None);
            };
            let (retry, error) = match sender {
                Some(mut sender) => {
                    let response = sender.try_send_request(build());
                    // No sender waits with the request: see `Link::sender`.
                    drop(sender);
                    match response.await {
                        Ok(response) => return Ok(Some((lease, response))),
                        // Handed back unwritten: the connection had closed.
                        Err(mut e) => (
                            e.take_message().is_some() || unprocessed(e.error()),
                            e.into_error().to_string(),
                        ),
                    }
                }
                None => (true, "the connection had ended".to_owned()),
            };
            if retry {
                lease.conn.link.retired.store(true, Ordering::Relaxed);
                after = Some(lease.conn.seq);
            }
            tracing::debug!(
                %error,
                retry = retry && retries < UNPROCESSED_RETRIES,
                "an upstream HTTP/2 request failed"
            );
            if !retry || retries == UNPROCESSED_RETRIES {
                return Err(Error::Failed("the request failed".into()));
            }
            retries += 1;
        }
    }

    fn lease(&self, after: Option<u64>) -> Lease {
        let now = ms_since(self.epoch);
        let idle_ms = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget connections that are retired, and close those idle too
        // long (dropping the last `Conn` drops the connection's sender,
        // which ends its task).
        conns.retain(|c| {
            !c.link.retired.load(Ordering::Relaxed)
                && (c.in_flight.load(Ordering::Acquire) > 0
                    || now.saturating_sub(c.idle_since_ms.load(Ordering::Relaxed)) < idle_ms)
        });
        let conn = match conns.iter().find(|c| {
            after.is_none_or(|a| c.seq > a)
                && c.in_flight.load(Ordering::Acquire) < c.link.limit.load(Ordering::Relaxed)
        }) {
            Some(c) => c.clone(),
            None => {
                let c = Arc::new(self.dial(now));
                conns.push(c.clone());
                c
            }
        };
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Lease {
            conn,
            epoch: self.epoch,
        }
    }

    /// A new connection, opened by the first request that awaits it.
    fn dial(&self, now: u64) -> Conn {
        let link = Arc::new(Link {
            limit: AtomicUsize::new(MAX_STREAMS),
            retired: AtomicBool::new(false),
            sender: Mutex::new(None),
        });
        let attempt = open(
            self.connector.clone(),
            self.target.clone(),
            self.tls,
            self.required,
            link.clone(),
        );
        let failed = link.clone();
        let ready: BoxFuture<'static, _> = Box::pin(async move {
            let result = attempt.await;
            if result.is_err() {
                failed.retired.store(true, Ordering::Relaxed);
            }
            result
        });
        Conn {
            seq: self.dialled.fetch_add(1, Ordering::Relaxed),
            ready: ready.shared(),
            link,
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(now),
        }
    }
}

/// Connect, check that TLS agreed on HTTP/2, shake hands, spawn the
/// connection's task and leave the sender in `link`.
async fn open(
    mut connector: Connector,
    target: Uri,
    tls: bool,
    required: bool,
    link: Arc<Link>,
) -> Result<(), Dial> {
    std::future::poll_fn(|cx| connector.poll_ready(cx))
        .await
        .map_err(|e| Dial::Failed(connect_error(&*e)))?;
    let io = connector
        .call(target)
        .await
        .map_err(|e| Dial::Failed(connect_error(&*e)))?;
    if tls && !io.connected().is_negotiated_h2() {
        return Err(if required {
            Dial::Failed(Error::Failed(
                "the upstream does not offer HTTP/2 (TLS ALPN chose HTTP/1.1); set `http_version = \"auto\"` or \"1.1\"".into(),
            ))
        } else {
            Dial::Declined
        });
    }
    let (sender, conn) = Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(PING_EVERY)
        .keep_alive_timeout(PING_TIMEOUT)
        .max_concurrent_reset_streams(REMEMBERED_RESETS)
        // h2 closes a connection (GOAWAY `too_many_internal_resets`) once it
        // has sent 1,024 protocol-error resets in its whole life, a defence
        // for servers against peers that make them reset streams (CVE-2025-8671).
        // A gateway's upstream connection cancels streams whenever clients
        // hang up; once more than `REMEMBERED_RESETS` are cancelled within
        // a second, each late frame of a forgotten one counts, and a busy,
        // healthy connection was torn down with every stream on it. The
        // upstream is a server the operator chose, and a reset costs it a
        // few bytes; the count is unbounded here.
        .max_local_error_reset_streams(None)
        .handshake::<_, ReqBody>(io)
        .await
        .map_err(|_| Dial::Failed(Error::Failed("the HTTP/2 handshake failed".into())))?;
    #[expect(
        clippy::disallowed_methods,
        reason = "the connection owns its task: it ends when the pool drops the last sender (retired or idle) or the peer closes"
    )]
    tokio::spawn(drive(conn, link.clone()));
    *link.sender.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender);
    Ok(())
}

/// One HTTP/2 connection's state machine, run by its own task.
type H2Connection = hyper::client::conn::http2::Connection<
    hyper_rustls::MaybeHttpsStream<TokioIo<TcpStream>>,
    ReqBody,
    TokioExecutor,
>;

/// Run a connection, keeping its stream limit (the server's
/// `SETTINGS_MAX_CONCURRENT_STREAMS`, which may change) where the pool sees it.
async fn drive(conn: H2Connection, link: Arc<Link>) {
    let mut conn = pin!(conn);
    let ended = std::future::poll_fn(|cx| {
        let polled = conn.as_mut().poll(cx);
        link.limit.store(
            conn.current_max_send_streams().clamp(1, MAX_STREAMS),
            Ordering::Relaxed,
        );
        polled
    })
    .await;
    link.retired.store(true, Ordering::Relaxed);
    link.forget_sender();
    if let Err(e) = ended {
        tracing::debug!(error = %e, "an upstream HTTP/2 connection ended");
    }
}

/// Whether an HTTP/2 failure says the upstream did not process the request
/// (RFC 9113 §8.7): it refused the stream, or its `GOAWAY` named a last
/// stream below this one (h2 reports exactly those streams, and any request
/// after the `GOAWAY`, as the remote's `GOAWAY`).
fn unprocessed(e: &hyper::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(h2) = c.downcast_ref::<::h2::Error>() {
            return h2.is_remote()
                && (h2.is_go_away() || h2.reason() == Some(::h2::Reason::REFUSED_STREAM));
        }
        cause = c.source();
    }
    false
}
