//! The TLS certificate-expiry probe: a handshake with the target, then the
//! leaf certificate's `notAfter` read from its DER. The certificate is not
//! validated here (an HTTPS check does that); this check only asks "when does
//! it expire", so it also works for internal CAs.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;

/// Accepts any certificate, but still checks the handshake signatures with it.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Unix seconds at which the certificate served at `host:port` expires.
pub async fn expiry(host: &str, port: u16) -> Result<i64, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("`{host}`: {e}"))?;
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect failed: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("the server sent no certificate")?;
    not_after(leaf.as_ref()).ok_or_else(|| "cannot read the certificate's expiry".to_string())
}

/// One DER element: (tag, content, rest).
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, b| (a << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// `notAfter` of an X.509 certificate, Unix seconds.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert, _) = element(der)?; // Certificate ::= SEQUENCE
    let (_, tbs, _) = element(cert)?; // tbsCertificate ::= SEQUENCE
    let (tag, _, mut rest) = element(tbs)?;
    if tag == 0xa0 {
        // [0] version present: skip to the serial number.
        rest = element(rest)?.2;
    }
    let rest = element(rest)?.2; // signature AlgorithmIdentifier
    let rest = element(rest)?.2; // issuer
    let (_, validity, _) = element(rest)?;
    let (_, _, after) = element(validity)?; // notBefore
    let (tag, time, _) = element(after)?;
    let s = std::str::from_utf8(time).ok()?;
    let full = match tag {
        0x17 => {
            // UTCTime: YYMMDDHHMMSSZ, years 1950–2049.
            let yy: i32 = s.get(..2)?.parse().ok()?;
            format!(
                "{}{}",
                if yy < 50 { 2000 + yy } else { 1900 + yy },
                s.get(2..)?
            )
        }
        0x18 => s.to_string(),
        _ => return None,
    };
    // YYYYMMDDHHMMSSZ
    let n = |a: usize, b: usize| full.get(a..b)?.parse::<i16>().ok();
    let b = |a: usize, z: usize| n(a, z).and_then(|v| i8::try_from(v).ok());
    let dt = jiff::civil::DateTime::new(
        n(0, 4)?,
        b(4, 6)?,
        b(6, 8)?,
        b(8, 10)?,
        b(10, 12)?,
        b(12, 14)?,
        0,
    )
    .ok()?;
    dt.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp().as_second())
}
