//! The accept loop and per-connection protocol settings: connection caps
//! (total and per client IP), the request-head timeout (slowloris; also the
//! idle keep-alive timeout for HTTP/1), head size and header count limits
//! (431), HTTP/2 stream and reset-flood limits, and TLS handshakes for the
//! HTTPS listener. Every connection holds a slot until it ends; on stop,
//! each finishes its requests in flight and closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use orinari_config::admission::{ConnectionConfig, canonical};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
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

fn builder(c: &ConnectionConfig) -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(c.header_read_timeout)
        .max_buf_size(c.max_header_bytes.max(8192))
        .max_headers(c.max_headers)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(c.http2_max_concurrent_streams)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_PENDING_RESETS)
        .max_header_list_size(u32::try_from(c.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(H2_KEEP_ALIVE)
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
    b
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serve one connection; when `stop` turns true, finish the requests in
/// flight and close (idle keep-alive connections close at once).
async fn drive<C>(conn: C, mut stop: watch::Receiver<bool>) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return r,
        () = stopped(&mut stop) => {}
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
    let builder = Arc::new(builder(&c));
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
        let svc = app
            .clone()
            .map_request(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let svc = TowerToHyperService::new(svc);
        let (per_ip, builder, conn_stop) = (per_ip.clone(), builder.clone(), stop.clone());
        let (tls, handshake_timeout) = (tls.clone(), c.header_read_timeout);
        // Each task holds a connection slot: the drain waits until every
        // slot is back, so no connection task outlives `serve`'s deadline.
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .into_owned();
                    drive(conn, conn_stop).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let conn = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                .into_owned();
                            drive(conn, conn_stop).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            per_ip.leave(ip);
            drop(slot);
        });
    }
}
