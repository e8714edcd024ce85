//! ACME end to end against the real test CA server `pebble` (Debian): the
//! HTTPS listener starts on a placeholder, the ACME client creates an account,
//! answers the HTTP-01 challenge on the plain listener, gets a certificate
//! signed by pebble's CA and serves it; with a renewal window longer than the
//! certificate's life it renews by itself, and the new certificate is served
//! without a restart. Private keys in the cache are 0600.
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
use orinari_server::tls::Tls;
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
