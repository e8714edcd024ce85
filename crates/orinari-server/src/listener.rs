//! The accept loop and per-connection protocol settings: connection caps
//! (total and per client IP), the request-head timeout (slowloris; also the
//! idle keep-alive timeout for HTTP/1), head size and header count limits
//! (431), HTTP/2 stream and reset-flood limits, and TLS handshakes for the
//! HTTPS listener. Every connection holds a slot until it ends; on stop,
//! each finishes its requests in flight and closes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::BoxError;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::Body as HttpBody;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use orinari_config::admission::{ConnectionConfig, canonical};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::AppState;
use crate::stack::App;

/// HTTP/2 streams a client may reset before the connection is closed
/// (rapid-reset floods).
const H2_MAX_PENDING_RESETS: usize = 20;
/// How often an idle HTTP/2 connection is pinged, and how long a ping may
/// go unanswered before it is closed.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(30);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections open per client IP, shared by every listener.
#[derive(Default)]
pub struct PerIp(Mutex<HashMap<IpAddr, usize>>);

impl PerIp {
    fn enter(&self, ip: IpAddr, max: usize) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    fn leave(&self, ip: IpAddr) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }
}

/// The first bytes of an HTTP/2 connection without TLS (prior knowledge).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// One builder per protocol. A connection is served by the one its protocol
/// needs, chosen before hyper reads anything (ALPN, or a peek at the first
/// bytes), so hyper's HTTP/1 connection reads the socket itself: no
/// replayed prefix, whose partial first read doubles the read buffer.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(c: &ConnectionConfig) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(c.header_read_timeout)
            .max_buf_size(c.max_header_bytes.max(8192))
            .max_headers(c.max_headers)
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(c.http2_max_concurrent_streams)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
            .max_local_error_reset_streams(H2_MAX_PENDING_RESETS)
            .max_header_list_size(u32::try_from(c.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(H2_KEEP_ALIVE)
            .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
        Self { http1, http2 }
    }

    /// Serve `io` with `protocol` until it closes or it is told to end
    /// (see [`drive`]). The HTTP/2 connection (the rarer one, and larger) is
    /// boxed, so every connection task is only as large as an HTTP/1
    /// connection.
    async fn serve<I>(
        &self,
        protocol: Protocol,
        io: I,
        svc: impl Svc,
        ending: Ending,
    ) -> Result<(), hyper::Error>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        match protocol {
            Protocol::Http1 => drive(self.http1.serve_connection(io, svc), ending).await,
            Protocol::Http2 => Box::pin(drive(self.http2.serve_connection(io, svc), ending)).await,
        }
    }
}

/// The hyper service one connection is served with: the app, given the
/// client's address.
trait Svc:
    hyper::service::Service<
        hyper::Request<Incoming>,
        Response = hyper::Response<Self::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
    type Body: HttpBody<Data = Bytes, Error: Into<BoxError>> + Send + 'static;
}

impl<S, B> Svc for S
where
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: HttpBody<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
{
    type Body = B;
}

/// Which protocol a connection without TLS speaks, from its first bytes
/// (peeked, not read): the HTTP/2 preface, or anything else for HTTP/1.
/// `None` when the client closes or sends nothing within `within`.
async fn sniff(stream: &TcpStream, within: Duration) -> Option<Protocol> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let look = async {
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if buf[..n] != H2_PREFACE[..n] {
                return Some(Protocol::Http1);
            }
            if n == H2_PREFACE.len() {
                return Some(Protocol::Http2);
            }
            // Part of the preface so far: a peek returns at once while
            // those bytes wait, so look again shortly for the rest.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(within, look).await.ok().flatten()
}

/// A connection's hold on its slot and on its client IP's count, given
/// back when the connection task ends.
struct Held {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.per_ip.leave(self.ip);
    }
}

/// A TLS connection once its handshake is done (within `within`), with the
/// protocol ALPN agreed on; `None` when the handshake fails or times out.
async fn handshake(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    within: Duration,
) -> Option<(Protocol, tokio_rustls::server::TlsStream<TcpStream>)> {
    let stream = match tokio::time::timeout(within, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            return None;
        }
    };
    let protocol = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        _ => Protocol::Http1,
    };
    Some((protocol, stream))
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// How one connection is told to end: the server's stop signal, and
/// whether the connection has begun its first request.
struct Ending {
    stop: watch::Receiver<bool>,
    /// Set by the service when the connection's first request reaches it.
    begun: Arc<AtomicBool>,
    /// How long a connection accepted just before the stop may take to
    /// send its first request (the request-head timeout).
    first_request_within: Duration,
}

/// Serve one connection; once the server stops, finish the requests in
/// flight and close (idle keep-alive connections close at once).
///
/// A connection accepted just before the stop whose first request hyper
/// has not read yet would be closed unanswered by a graceful shutdown
/// (hyper closes a connection that has seen no read or write at once),
/// although its client did nothing wrong: during an upgrade that request
/// would be lost. Such a connection is served until its first request has
/// begun, within the head timeout, and is then shut down like the others.
async fn drive<C>(conn: C, ending: Ending) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    let Ending {
        mut stop,
        begun,
        first_request_within,
    } = ending;
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return r,
        () = stopped(&mut stop) => {}
    }
    if !begun.load(Ordering::Acquire) {
        // The service is called from within the connection's poll, so the
        // flag is up to date whenever that poll returns.
        let first_request = std::future::poll_fn(|cx| match conn.as_mut().poll(cx) {
            std::task::Poll::Ready(r) => std::task::Poll::Ready(Some(r)),
            std::task::Poll::Pending if begun.load(Ordering::Acquire) => {
                std::task::Poll::Ready(None)
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        });
        if let Ok(Some(r)) = tokio::time::timeout(first_request_within, first_request).await {
            return r;
        }
    }
    conn.as_mut().graceful_shutdown();
    conn.await
}

/// What every listener shares: the state, the connection caps (total and
/// per IP, across listeners) and the stop signal.
#[derive(Clone)]
pub struct Shared {
    pub state: AppState,
    pub slots: Arc<Semaphore>,
    pub per_ip: Arc<PerIp>,
    pub stop: watch::Receiver<bool>,
}

/// Accept connections and serve `app` on them until `stop` turns true;
/// then stop accepting and return the handle that drains the open ones.
/// With `tls`, each connection completes a TLS handshake first (within the
/// head timeout).
pub async fn accept(
    listener: TcpListener,
    app: impl App,
    tls: Option<TlsAcceptor>,
    shared: Shared,
) {
    let Shared {
        state,
        slots,
        per_ip,
        mut stop,
    } = shared;
    let c = state.edge().config().connections.clone();
    let builders = Arc::new(Builders::new(&c));
    loop {
        // At the cap, wait for a connection to close before accepting more:
        // the rest wait in the kernel's backlog instead of being refused.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let ip = canonical(peer.ip());
        if !per_ip.enter(ip, c.max_connections_per_ip) {
            state.metrics().limits.rejected("connections");
            tracing::debug!("per-IP connection cap reached; closing");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let begun = Arc::new(AtomicBool::new(false));
        let ending = Ending {
            stop: stop.clone(),
            begun: begun.clone(),
            first_request_within: c.header_read_timeout,
        };
        let svc = app
            .clone()
            .map_request(move |req: hyper::Request<hyper::body::Incoming>| {
                begun.store(true, Ordering::Release);
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let svc = TowerToHyperService::new(svc);
        let held = Held {
            per_ip: per_ip.clone(),
            ip,
            _slot: slot,
        };
        let (builders, tls, head_timeout) = (builders.clone(), tls.clone(), c.header_read_timeout);
        // Each task holds a connection slot: the drain waits until every
        // slot is back, so no connection task outlives `serve`'s deadline.
        // The TLS handshake is boxed: plain connections' tasks stay small.
        let served = async move {
            let _held = held;
            let served = match tls {
                None => match sniff(&stream, head_timeout).await {
                    Some(protocol) => builders.serve(protocol, stream, svc, ending).await,
                    None => {
                        tracing::debug!("no request head in time; closing");
                        Ok(())
                    }
                },
                Some(acceptor) => {
                    Box::pin(async move {
                        match handshake(stream, acceptor, head_timeout).await {
                            Some((protocol, stream)) => {
                                builders.serve(protocol, stream, svc, ending).await
                            }
                            None => Ok(()),
                        }
                    })
                    .await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        };
        #[expect(
            clippy::disallowed_methods,
            reason = "owned through its connection slot: the drain waits for every slot, and `ending` ends the connection at the deadline"
        )]
        tokio::spawn(served);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use std::io::Write;

    use super::*;

    /// A connected pair: the client's (blocking) stream and the server's.
    async fn pair() -> (std::net::TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn the_protocol_is_told_from_the_first_bytes() {
        let within = Duration::from_secs(2);
        for (first, want) in [
            (&b"GET / HTTP/1.1\r\n"[..], Protocol::Http1),
            // Starts like the preface, then is not: HTTP/1.
            (&b"POST / HTTP/1.1\r\n"[..], Protocol::Http1),
            (&H2_PREFACE[..], Protocol::Http2),
        ] {
            let (mut client, server) = pair().await;
            client.write_all(first).unwrap();
            assert_eq!(sniff(&server, within).await, Some(want));
        }

        // The preface in two pieces: the first alone cannot tell, so the
        // sniff waits for the rest.
        let (mut client, server) = pair().await;
        client.write_all(&H2_PREFACE[..10]).unwrap();
        let rest = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            client.write_all(&H2_PREFACE[10..]).unwrap();
            client
        });
        assert_eq!(sniff(&server, within).await, Some(Protocol::Http2));
        drop(rest.join().unwrap());

        // Nothing within the time allowed, or a closed connection: neither.
        let (_client, server) = pair().await;
        assert_eq!(sniff(&server, Duration::from_millis(50)).await, None);
        let (client, server) = pair().await;
        drop(client);
        assert_eq!(sniff(&server, within).await, None);
    }

    /// One connection served by `drive` after the server has stopped, with
    /// a service that says when a request reaches it, as `accept`'s does.
    async fn serve_stopped(server: TcpStream, first_request_within: Duration) {
        let (_tx, stop) = watch::channel(true);
        let begun = Arc::new(AtomicBool::new(false));
        let seen = begun.clone();
        let svc = hyper::service::service_fn(move |_req| {
            seen.store(true, Ordering::Release);
            async { Ok::<_, Infallible>(hyper::Response::new(axum::body::Body::from("ok"))) }
        });
        let ending = Ending {
            stop,
            begun,
            first_request_within,
        };
        let builders =
            Builders::new(&orinari_config::admission::AdmissionConfig::default().connections);
        builders
            .serve(Protocol::Http1, server, svc, ending)
            .await
            .unwrap();
    }

    /// A request that reached the socket just before the server stopped
    /// (hyper has read none of it: a graceful shutdown alone would close
    /// the connection unanswered, as happened to one request in a few
    /// hundred during upgrades) is answered, and then the connection
    /// closes; a connection that sends nothing closes after the head
    /// timeout.
    #[tokio::test]
    async fn a_request_that_arrived_before_the_stop_is_answered() {
        use std::io::Read;
        // `drive` looks at the connection or at the stop first, by chance:
        // many connections, so that both orders are seen.
        for _ in 0..32 {
            let (mut client, server) = pair().await;
            client
                .write_all(b"GET /v1/models HTTP/1.1\r\nHost: test\r\n\r\n")
                .unwrap();
            serve_stopped(server, Duration::from_secs(5)).await;
            let mut answer = String::new();
            client.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
            assert!(answer.ends_with("\r\n\r\nok"), "{answer:?}");
        }

        let (mut client, server) = pair().await;
        let started = std::time::Instant::now();
        serve_stopped(server, Duration::from_millis(100)).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).unwrap();
        assert!(answer.is_empty(), "{answer:?}");
    }
}
