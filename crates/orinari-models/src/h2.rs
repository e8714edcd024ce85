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

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::Shared;
use http::Uri;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::upstream::{Connector, ReqBody, connect_error};
use crate::{BoxFuture, ModelError};

/// The most streams one connection carries, even where the server allows
/// more: past this, a new connection spreads the work over more tasks.
const MAX_STREAMS: usize = 100;
/// Ping a connection that carries streams this often, and close it when the
/// answer takes longer than [`PING_TIMEOUT`].
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Reset streams each connection remembers (for h2's default 1 s), so the
/// frames already on their way for them are dropped quietly. h2's default,
/// 50, is less than the streams one connection carries: when more are
/// cancelled at once, the late frames of the forgotten ones count as
/// protocol errors, and after 1,024 of those in its life h2 closes the
/// connection with every stream on it.
const REMEMBERED_RESETS: usize = 10 * MAX_STREAMS;

/// How a connection attempt ended, shared by every request waiting on it.
#[derive(Clone)]
enum Dial {
    Failed(ModelError),
    /// TLS agreed on HTTP/1.1 (ALPN): the upstream does not speak HTTP/2.
    Declined,
}

type Ready = Shared<BoxFuture<'static, Result<SendRequest<ReqBody>, Dial>>>;

/// What the connection's own task reports.
#[derive(Debug)]
struct Link {
    /// Streams this connection may carry at once.
    limit: AtomicUsize,
    /// The attempt failed or the connection ended.
    closed: AtomicBool,
}

struct Conn {
    ready: Ready,
    link: Arc<Link>,
    in_flight: AtomicUsize,
    /// When `in_flight` last fell to 0, in ms since the pool's epoch.
    idle_since_ms: AtomicU64,
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
            epoch: Instant::now(),
        }
    }

    /// Whether the upstream declined HTTP/2: use HTTP/1.1 instead.
    pub(crate) fn declined(&self) -> bool {
        self.declined.load(Ordering::Relaxed)
    }

    /// A connection with room for one more stream (opened if none has),
    /// or `None` when the upstream turned out not to speak HTTP/2.
    pub(crate) async fn checkout(
        &self,
    ) -> Result<Option<(Lease, SendRequest<ReqBody>)>, ModelError> {
        let lease = self.lease();
        match lease.conn.ready.clone().await {
            Ok(sender) => Ok(Some((lease, sender))),
            Err(Dial::Failed(e)) => Err(e),
            Err(Dial::Declined) => {
                self.declined.store(true, Ordering::Relaxed);
                Ok(None)
            }
        }
    }

    fn lease(&self) -> Lease {
        let now = ms_since(self.epoch);
        let idle_ms = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget connections that ended, and close those idle too long
        // (dropping the last sender ends the connection's task).
        conns.retain(|c| {
            !c.link.closed.load(Ordering::Relaxed)
                && (c.in_flight.load(Ordering::Acquire) > 0
                    || now.saturating_sub(c.idle_since_ms.load(Ordering::Relaxed)) < idle_ms)
        });
        let conn = match conns
            .iter()
            .find(|c| c.in_flight.load(Ordering::Acquire) < c.link.limit.load(Ordering::Relaxed))
        {
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
            closed: AtomicBool::new(false),
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
                failed.closed.store(true, Ordering::Relaxed);
            }
            result
        });
        Conn {
            ready: ready.shared(),
            link,
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(now),
        }
    }
}

/// Connect, check that TLS agreed on HTTP/2, shake hands, and spawn the
/// connection's task.
async fn open(
    mut connector: Connector,
    target: Uri,
    tls: bool,
    required: bool,
    link: Arc<Link>,
) -> Result<SendRequest<ReqBody>, Dial> {
    std::future::poll_fn(|cx| connector.poll_ready(cx))
        .await
        .map_err(|e| Dial::Failed(connect_error(&*e)))?;
    let io = connector
        .call(target)
        .await
        .map_err(|e| Dial::Failed(connect_error(&*e)))?;
    if tls && !io.connected().is_negotiated_h2() {
        return Err(if required {
            Dial::Failed(ModelError::Upstream(
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
        .handshake::<_, ReqBody>(io)
        .await
        .map_err(|_| Dial::Failed(ModelError::Upstream("the HTTP/2 handshake failed".into())))?;
    tokio::spawn(drive(conn, link));
    Ok(sender)
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
    link.closed.store(true, Ordering::Relaxed);
    if let Err(e) = ended {
        tracing::debug!(error = %e, "an upstream HTTP/2 connection ended");
    }
}
