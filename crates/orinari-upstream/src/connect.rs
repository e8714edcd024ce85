//! Reaching an upstream: TCP (no Nagle delay), through the environment's
//! proxy where it names one, then TLS for `https`, the whole attempt under
//! the backend's connect timeout.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{BoxFuture, Error};

/// A connector's error.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    pub(crate) fn new(tcp: HttpConnector, proxies: Matcher) -> Self {
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
    pub(crate) inner: C,
    pub(crate) limit: Duration,
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

/// A connection that could not be made: timed out, or refused (or failed).
pub(crate) fn connect_error(e: &(dyn std::error::Error + 'static)) -> Error {
    if timed_out(e) {
        Error::Timeout("the connection timed out".into())
    } else {
        Error::Failed("cannot connect".into())
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
