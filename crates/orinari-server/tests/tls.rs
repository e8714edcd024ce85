//! HTTPS end to end with a test CA (rcgen): HTTP/2 by ALPN, HSTS, the plain
//! listener's redirect, TLS 1.2 only with ECDHE + AEAD (and not at all in
//! `modern`), and a certificate swapped on disk while a connection stays open.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "a test's tasks end with the test"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orinari_config::tls::TlsConfig;
use orinari_server::AppState;
use orinari_server::tls::Tls;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "orinari test CA");
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A leaf for localhost and 127.0.0.1 named `cn`, written to `dir`.
fn leaf(ca: &Ca, cn: &str, dir: &Path) -> (PathBuf, PathBuf) {
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    // Write to temporary names and rename: a renewal that is atomic per file.
    std::fs::write(dir.join("cert.tmp"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.tmp"), key.serialize_pem()).unwrap();
    std::fs::rename(dir.join("key.tmp"), &k).unwrap();
    std::fs::rename(dir.join("cert.tmp"), &c).unwrap();
    (c, k)
}

struct Running {
    http: String,
    https_port: u16,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempdir::Dir,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!("orinari-tls-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn start(ca: &Ca, modern: bool) -> Running {
    let dir = tempdir::Dir::new();
    let (cert, key) = leaf(ca, "first", &dir.0);
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let secure = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = format!("http://{}", plain.local_addr().unwrap());
    let https_port = secure.local_addr().unwrap().port();
    let tls = Tls::new(TlsConfig {
        listen: secure.local_addr().unwrap(),
        cert,
        key,
        modern,
        acme: None,
    })
    .unwrap();
    let state = AppState::new(Vec::new(), 32_000, 1 << 20)
        .with_admin_token_hash(orinari_server::hash_token("adm"));
    let (tx, rx) = oneshot::channel();
    tokio::spawn(orinari_server::serve_all(
        plain,
        Some((secure, tls)),
        state,
        async move {
            let _ = rx.await;
        },
        Duration::from_secs(5),
    ));
    Running {
        http,
        https_port,
        stop: Some(tx),
        _dir: dir,
    }
}

fn client_config(
    ca: &Ca,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let der = CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap();
    roots.add(der).unwrap();
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    c
}

use rustls::pki_types::pem::PemObject;

async fn handshake(
    ca: &Ca,
    port: u16,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca, versions)));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap().to_owned(), tcp)
        .await
}

fn common_name(s: &tokio_rustls::client::TlsStream<TcpStream>) -> String {
    let der = s.get_ref().1.peer_certificates().unwrap()[0].clone();
    // The CN is in the DER as a UTF8String; enough for telling two apart.
    let text = String::from_utf8_lossy(der.as_ref()).into_owned();
    ["first", "second"]
        .iter()
        .find(|n| text.contains(*n))
        .unwrap_or(&"?")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_h2_hsts_and_a_redirecting_plain_listener() {
    let ca = ca();
    let s = start(&ca, false).await;
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .get(format!("https://localhost:{}/healthz", s.https_port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "h2 by ALPN");
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    // Errors carry the headers too.
    let r = client
        .get(format!("https://localhost:{}/nope", s.https_port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().contains_key("strict-transport-security"));
    assert!(r.headers().contains_key("content-security-policy"));
    // Plain HTTP: health answers, everything else moves to HTTPS.
    let r = client
        .get(format!("{}/healthz", s.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("strict-transport-security"));
    let r = client
        .get(format!("{}/v1/models?x=1", s.http))
        .header("host", "localhost:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://localhost:{}/v1/models?x=1", s.https_port).as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_only_with_ecdhe_aead_and_not_in_modern() {
    let ca = ca();
    let s = start(&ca, false).await;
    let t = handshake(&ca, s.https_port, &[&rustls::version::TLS12])
        .await
        .unwrap();
    let suite = format!(
        "{:?}",
        t.get_ref().1.negotiated_cipher_suite().unwrap().suite()
    );
    assert!(
        suite.contains("ECDHE") && (suite.contains("GCM") || suite.contains("CHACHA20")),
        "{suite}"
    );
    let t = handshake(&ca, s.https_port, &[&rustls::version::TLS13])
        .await
        .unwrap();
    assert_eq!(
        t.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let m = start(&ca, true).await;
    assert!(
        handshake(&ca, m.https_port, &[&rustls::version::TLS12])
            .await
            .is_err()
    );
    assert!(
        handshake(&ca, m.https_port, &[&rustls::version::TLS13])
            .await
            .is_ok()
    );
}

async fn ask(s: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_picked_up_without_dropping_connections() {
    let ca = ca();
    let s = start(&ca, false).await;
    let mut old = handshake(&ca, s.https_port, &[&rustls::version::TLS13])
        .await
        .unwrap();
    assert_eq!(common_name(&old), "first");
    // The ALPN picked h2 for this client; ask over HTTP/1.1 instead.
    drop(old);
    let connector = {
        let mut c = client_config(&ca, &[&rustls::version::TLS13]);
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(c))
    };
    let tcp = TcpStream::connect(("127.0.0.1", s.https_port))
        .await
        .unwrap();
    old = connector
        .connect(ServerName::try_from("localhost").unwrap().to_owned(), tcp)
        .await
        .unwrap();
    assert!(ask(&mut old).await.starts_with("HTTP/1.1 200"));
    // Renew on disk.
    leaf(&ca, "second", &s._dir.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = handshake(&ca, s.https_port, &[&rustls::version::TLS13])
            .await
            .unwrap();
        if common_name(&fresh) == "second" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The connection opened before the renewal still works.
    assert!(ask(&mut old).await.starts_with("HTTP/1.1 200"));
    // POST /admin/v1/reload reloads at once; a broken key file is refused
    // and the current certificate stays.
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let reload = || {
        client
            .post(format!(
                "https://localhost:{}/admin/v1/reload",
                s.https_port
            ))
            .bearer_auth("adm")
            .send()
    };
    let r = reload().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["tls_certificate"], "reloaded");
    std::fs::write(s._dir.0.join("key.pem"), "not a key").unwrap();
    let r = reload().await.unwrap();
    assert_eq!(r.status(), 500);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("key.pem"),
        "no file paths in responses: {text}"
    );
    let fresh = handshake(&ca, s.https_port, &[&rustls::version::TLS13])
        .await
        .unwrap();
    assert_eq!(common_name(&fresh), "second");
}
