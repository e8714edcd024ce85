//! Outbound HTTP to model upstreams, and nothing about models: one
//! [`Client`] per backend holds its connection pools (HTTP/1.1, and HTTP/2
//! where it is spoken, see `h2.rs`), its URLs parsed once and the headers
//! every request carries (the API key among them, marked sensitive so it is
//! never printed). Connecting (`connect.rs`) goes directly or through the
//! environment's proxy, under the backend's connect timeout; failures are
//! classified once into [`Error`] (`error.rs`).

mod connect;
mod error;
mod h2;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::{ConfigBuilderExt, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as PoolClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::ClientConfig;

use crate::connect::{Connector, Egress, Timed};
pub use crate::error::{Error, MAX_REASON_CHARS, reason};
use crate::error::{REASON_BODY_BYTES, status_error, transport};
use crate::h2::{H2Pool, Lease};

/// A boxed future.
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// An error while reading an answer's body.
pub use hyper::Error as BodyError;

/// How to reach one upstream: its transport settings.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// Base URL including the API version, e.g. `http://127.0.0.1:9001/v1`.
    pub base_url: &'a str,
    /// Path under `base_url` that generation requests go to.
    pub path: &'a str,
    /// Path under `base_url` that the active health check requests.
    pub health_path: &'a str,
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Which HTTP version to speak to it.
    pub http_version: HttpVersion,
}

/// A secret (an upstream API key). Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamSecret(String);

impl UpstreamSecret {
    /// Wrap a secret read from the environment.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for UpstreamSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamSecret(***)")
    }
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

/// A request body: the JSON, written once.
pub(crate) type ReqBody = Full<Bytes>;

/// An upstream's response body; over HTTP/2 it holds the stream's place on
/// its connection until it is dropped.
#[derive(Debug)]
pub struct Body {
    inner: Incoming,
    _lease: Option<Lease>,
}

impl hyper::body::Body for Body {
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
pub struct Client {
    /// HTTP/1.1 connections (hyper-util's pool; it only ever offers
    /// HTTP/1.1 in ALPN, see [`H2Pool`] for why).
    h1: PoolClient<Connector, ReqBody>,
    /// HTTP/2 connections, unless the backend speaks HTTP/1.1 only.
    h2: Option<H2Pool>,
    generate: Uri,
    health: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// `base_url`, for [`Client::endpoint`].
    base_url: String,
}

/// Another path under a backend's `base_url` (`/embeddings`), its URL
/// parsed once by [`Client::endpoint`].
#[derive(Debug, Clone)]
pub struct Endpoint(Uri);

impl Client {
    /// A pool for one backend; requests go to `base_url` + `path`, each
    /// with `headers`.
    pub fn new(
        target: &Target<'_>,
        headers: Vec<(HeaderName, HeaderValue)>,
    ) -> Result<Self, Error> {
        let config = target;
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
                .map_err(|e| Error::Config(format!("cannot set up TLS: {e}")))?
                .with_native_roots()
                .map_err(|e| Error::Config(format!("cannot load the system's CA roots: {e}")))?
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
        let h1 = PoolClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(4096)
            .http1_read_buf_exact_size(READ_BUF_BYTES)
            .build(timed(tls().enable_http1().wrap_connector(egress.clone())));
        let generate = parse_url(&join(config.base_url, config.path))?;
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
            health: parse_url(&join(config.base_url, config.health_path))?,
            generate,
            headers,
            base_url: config.base_url.to_string(),
        })
    }

    /// `path` under the backend's `base_url`, parsed once.
    pub fn endpoint(&self, path: &str) -> Result<Endpoint, Error> {
        Ok(Endpoint(parse_url(&join(&self.base_url, path))?))
    }

    /// POST `json` to `endpoint`, as [`Client::post`] does to the
    /// generation path.
    pub async fn post_to(&self, endpoint: &Endpoint, json: Bytes) -> Result<Response<Body>, Error> {
        self.send(&endpoint.0, Some(json)).await
    }

    /// POST `json` to the generation path; a non-2xx answer becomes a
    /// classified error.
    pub async fn post(&self, json: Bytes) -> Result<Response<Body>, Error> {
        self.send(&self.generate, Some(json)).await
    }

    /// GET the health path.
    pub async fn probe(&self) -> Result<(), Error> {
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

    async fn send(&self, uri: &Uri, json: Option<Bytes>) -> Result<Response<Body>, Error> {
        let h2 = match &self.h2 {
            Some(pool) if !pool.declined() => {
                pool.send(|| self.request(uri, json.as_ref())).await?
            }
            _ => None,
        };
        let response = match h2 {
            Some((lease, response)) => response.map(|inner| Body {
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
                .map(|inner| Body {
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
pub fn secret_header(prefix: &str, key: &UpstreamSecret) -> Result<HeaderValue, Error> {
    let mut v = HeaderValue::try_from(format!("{prefix}{}", key.expose()))
        .map_err(|_| Error::Config("the API key holds characters a header cannot carry".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

/// `base_url` + `path`, with exactly one slash between them.
fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// A URL parsed once when the backend is built; the error never shows the
/// URL (it could carry credentials).
fn parse_url(url: &str) -> Result<Uri, Error> {
    let uri: Uri = url
        .parse()
        .map_err(|e| Error::Config(format!("the backend's `base_url` is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => Err(Error::Config(
            "the backend's `base_url` is not an http:// or https:// URL".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

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
