//! ACME end to end against the real test CA server `pebble` (Debian): the
//! HTTPS listener starts on a placeholder, the ACME client creates an account,
//! answers the HTTP-01 challenge on the plain listener, gets a certificate
//! signed by pebble's CA and serves it; with a renewal window longer than the
//! certificate's life it renews by itself, and the new certificate is served
//! without a restart. Private keys in the cache are 0600.
//!
//! A cluster: two servers on one PostgreSQL database (as two instances would
//! be) — only the `acme` leader orders, once; both serve the same
//! certificate, loaded from the store, where it is sealed; the CA's
//! validation request reaches the instance that did not order and is
//! answered from the store; when the leader stops, the other renews.
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

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orinari_config::tls::{AcmeConfig, TlsConfig};
use orinari_server::AppState;
use orinari_server::acme::Acme;
use orinari_server::tls::Tls;
use orinari_store::{AcmeKey, Store};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Pebble(Child);

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// pebble on `port`, validating HTTP-01 on `http_port`; its own TLS
/// certificate is signed by a CA whose PEM is returned.
fn pebble(dir: &std::path::Path, port: u16, http_port: u16) -> (Pebble, std::path::PathBuf) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "pebble API test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_pem = leaf.signed_by(&leaf_key, &issuer).unwrap().pem();
    std::fs::write(dir.join("pebble-ca.pem"), &ca_pem).unwrap();
    std::fs::write(dir.join("pebble-cert.pem"), leaf_pem).unwrap();
    std::fs::write(dir.join("pebble-key.pem"), leaf_key.serialize_pem()).unwrap();
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{port}"),
        "managementListenAddress": format!("127.0.0.1:{}", free_port()),
        "certificate": dir.join("pebble-cert.pem"),
        "privateKey": dir.join("pebble-key.pem"),
        "httpPort": http_port,
        "tlsPort": free_port(),
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
    let child = Command::new("pebble")
        .arg("-config")
        .arg(dir.join("pebble.json"))
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env("PEBBLE_AUTHZREUSE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble (make test installs it: apt-get install pebble)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "pebble did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Pebble(child), dir.join("pebble-ca.pem"))
}

/// The leaf certificate (DER) the HTTPS listener presents now.
async fn served(port: u16) -> Vec<u8> {
    #[derive(Debug)]
    struct AnyCert;
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCert))
    .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap().to_owned(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

fn issued_by_pebble(der: &[u8]) -> bool {
    String::from_utf8_lossy(der).contains("Pebble")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_issues_and_renews_a_certificate_without_restart() {
    let dir = std::env::temp_dir().join(format!("orinari-acme-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let secure = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https_port = secure.local_addr().unwrap().port();
    let pebble_port = free_port();
    let (_pebble, pebble_ca) = pebble(&dir, pebble_port, plain.local_addr().unwrap().port());
    let cache = dir.join("acme");
    let acme = AcmeConfig {
        domains: vec!["localhost".into()],
        directory: format!("https://127.0.0.1:{pebble_port}/dir"),
        contact: vec!["mailto:ops@example.org".into()],
        cache_dir: cache.clone(),
        // Longer than pebble's certificates live: every check renews.
        renew_before: Duration::from_secs(100 * 365 * 86_400),
        check_interval: Duration::from_secs(2),
        directory_ca: Some(pebble_ca),
        key_env: None,
    };
    let tls = Tls::new(TlsConfig {
        listen: secure.local_addr().unwrap(),
        cert: cache.join("cert.pem"),
        key: cache.join("key.pem"),
        modern: false,
        acme: Some(acme),
    })
    .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(orinari_server::serve_all(
        plain,
        Some((secure, tls)),
        AppState::new(Vec::new(), 32_000, 1 << 20),
        async move {
            let _ = rx.await;
        },
        Duration::from_secs(5),
    ));
    // The first certificate: pebble's, for localhost, replacing the placeholder.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let der = served(https_port).await;
        if issued_by_pebble(&der) {
            break der;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate from pebble in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for (file, mode) in [
        ("key.pem", 0o600),
        ("account.json", 0o600),
        ("cert.pem", 0o644),
    ] {
        let m = std::fs::metadata(cache.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, mode, "{file}");
    }
    // Renewed by itself: a different certificate, same listener.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let der = served(https_port).await;
        if issued_by_pebble(&der) && der != first {
            break;
        }
        assert!(Instant::now() < deadline, "never renewed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn admin_url() -> String {
    std::env::var("ORINARI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `sql`'s single value, by psql (all SQL of the product lives in
/// orinari-store; the test reads the database as an operator would).
fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qtAc", sql])
        .output()
        .expect("psql is installed (make test uses it)");
    assert!(out.status.success(), "psql: {sql}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A fresh PostgreSQL database: its URL and name.
fn fresh_db() -> (String, String) {
    let name = format!("orinari_acme_{}", uuid::Uuid::new_v4().simple());
    let admin = admin_url();
    psql(&admin, &format!("CREATE DATABASE {name}"));
    let (base, _) = admin.rsplit_once('/').unwrap();
    (format!("{base}/{name}"), name)
}

fn drop_db(name: &str) {
    psql(&admin_url(), &format!("DROP DATABASE {name} WITH (FORCE)"));
}

/// Advisory locks granted in database `name` (only the ACME election takes
/// one in this test).
fn advisory_locks(name: &str) -> i64 {
    psql(
        &admin_url(),
        &format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
             WHERE l.locktype = 'advisory' AND l.granted AND d.datname = '{name}'"
        ),
    )
    .parse()
    .unwrap()
}

fn serial(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.tbs_certificate.raw_serial().to_vec()
}

async fn get(port: u16, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Wait until `port` serves a pebble certificate other than `not`.
async fn pebble_cert(port: u16, not: Option<&[u8]>, within: Duration, what: &str) -> Vec<u8> {
    let deadline = Instant::now() + within;
    loop {
        let der = served(port).await;
        if issued_by_pebble(&der) && Some(der.as_slice()) != not {
            return der;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct Instance {
    plain: u16,
    https: u16,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn bind() -> (tokio::net::TcpListener, tokio::net::TcpListener) {
    (
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
}

fn start(
    (plain, secure): (tokio::net::TcpListener, tokio::net::TcpListener),
    acme: AcmeConfig,
    store: Store,
) -> Instance {
    let tls = Tls::new(TlsConfig {
        listen: secure.local_addr().unwrap(),
        cert: acme.cache_dir.join("cert.pem"),
        key: acme.cache_dir.join("key.pem"),
        modern: false,
        acme: Some(acme),
    })
    .unwrap()
    .with_shared_acme(store, AcmeKey::from_base64(KEY).unwrap());
    let (plain_port, https) = (
        plain.local_addr().unwrap().port(),
        secure.local_addr().unwrap().port(),
    );
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(orinari_server::serve_all(
        plain,
        Some((secure, tls)),
        AppState::new(Vec::new(), 32_000, 1 << 20),
        async move {
            let _ = rx.await;
        },
        Duration::from_secs(5),
    ));
    Instance {
        plain: plain_port,
        https,
        stop,
        server,
    }
}

impl Instance {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(15), self.server).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_orders_once_shares_the_sealed_certificate_and_takes_over_renewal() {
    let dir = std::env::temp_dir().join(format!("orinari-acme-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (url, db) = fresh_db();
    let (store_a, store_b) = (
        Store::open(&url).await.unwrap(),
        Store::open(&url).await.unwrap(),
    );
    let (sockets_a, sockets_b) = (bind().await, bind().await);
    let b_plain = sockets_b.0.local_addr().unwrap().port();
    // The CA validates on B's plain listener: B did not order, so it
    // answers from the store.
    let pebble_port = free_port();
    let (_pebble, pebble_ca) = pebble(&dir, pebble_port, b_plain);
    let acme = |name: &str| AcmeConfig {
        domains: vec!["localhost".into()],
        directory: format!("https://127.0.0.1:{pebble_port}/dir"),
        contact: vec!["mailto:ops@example.org".into()],
        cache_dir: dir.join(name),
        // Longer than pebble's certificates live: every leader's check
        // renews, so a new leader renews as soon as it takes over.
        renew_before: Duration::from_secs(100 * 365 * 86_400),
        // … and the first leader checks only once while the test runs.
        check_interval: Duration::from_secs(3600),
        directory_ca: Some(pebble_ca.clone()),
        key_env: Some("ORINARI_ACME_KEY".into()),
    };
    let cert_name = Acme::certificate_name(&acme("a"));

    // A first, and B once A holds the `acme` lock: A is the leader.
    let a = start(sockets_a, acme("a"), store_a.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while advisory_locks(&db) < 1 {
        assert!(Instant::now() < deadline, "A never took the acme lock");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = start(sockets_b, acme("b"), store_b.clone());

    // Both serve the same certificate from pebble.
    let on_a = pebble_cert(
        a.https,
        None,
        Duration::from_secs(90),
        "A's first certificate",
    )
    .await;
    let on_b = pebble_cert(
        b.https,
        None,
        Duration::from_secs(30),
        "B's first certificate",
    )
    .await;
    assert_eq!(serial(&on_a), serial(&on_b), "both serve one certificate");
    assert_eq!(on_a, on_b);

    // Exactly one order: the stored certificate was written once, and stays
    // so over several election and follow periods with both running.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let stored = store_b.acme_secret(&cert_name).await.unwrap().unwrap();
    assert_eq!(stored.version, 1, "one certificate issued, by one instance");
    assert_eq!(serial(&served(b.https).await), serial(&on_a));

    // Sealed at rest: no PEM, no JSON; it opens with the key only.
    for name in [
        cert_name.clone(),
        format!("account https://127.0.0.1:{pebble_port}/dir"),
    ] {
        let secret = store_b.acme_secret(&name).await.unwrap().unwrap();
        let bytes = &secret.sealed;
        assert!(bytes.starts_with(b"ORIACM01"), "{name}");
        for plain in [&b"BEGIN"[..], b"PRIVATE", b"\"cert\"", b"\"id\""] {
            assert!(
                !bytes.windows(plain.len()).any(|w| w == plain),
                "{name} holds plaintext"
            );
        }
        let opened = AcmeKey::from_base64(KEY)
            .unwrap()
            .open(&name, bytes)
            .unwrap();
        assert!(!opened.is_empty());
        let other = AcmeKey::from_base64("HxwdHhscGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=").unwrap();
        assert!(
            other
                .open(&name, bytes)
                .unwrap_err()
                .contains("different key")
        );
    }
    // Nothing on disk in a cluster, and no challenge left open.
    assert!(
        !dir.join("a").exists() && !dir.join("b").exists(),
        "no cache files"
    );
    assert_eq!(
        psql(&url, "SELECT count(*) FROM acme_challenges"),
        "0",
        "challenges withdrawn after the order"
    );

    // A challenge published in the store is answered by either instance
    // (pebble's validation above reached B, which did not order).
    store_a
        .put_acme_challenge(
            "tok-123",
            "tok-123.thumbprint",
            orinari_store::now_ms() + 60_000,
        )
        .await
        .unwrap();
    for port in [a.plain, b.plain] {
        assert_eq!(
            get(port, "/.well-known/acme-challenge/tok-123").await,
            (200, "tok-123.thumbprint".to_string())
        );
        assert_eq!(get(port, "/.well-known/acme-challenge/other").await.0, 404);
    }

    // The leader stops: B takes the lock and renews.
    a.stop().await;
    let started = Instant::now();
    let renewed = pebble_cert(b.https, Some(&on_a), Duration::from_secs(60), "B's renewal").await;
    assert_ne!(serial(&renewed), serial(&on_a));
    let stored = store_b.acme_secret(&cert_name).await.unwrap().unwrap();
    assert_eq!(stored.version, 2);
    eprintln!(
        "takeover: B served its renewed certificate {:.1} s after A stopped",
        started.elapsed().as_secs_f64()
    );

    b.stop().await;
    store_a.close().await;
    store_b.close().await;
    drop_db(&db);
    let _ = std::fs::remove_dir_all(&dir);
}
