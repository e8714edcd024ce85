//! Sealing secrets at rest: AES-256-GCM with a fresh random nonce per
//! sealed value and the value's name as associated data, so one value cannot
//! be swapped for another or altered without detection (the GCM tag is the
//! checksum). One implementation for two formats: backup files
//! ([`BackupKey`]) and the ACME account and certificates a cluster shares
//! through the store ([`AcmeKey`]); each starts with its own magic, so a
//! value of one kind never opens as the other.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};

const NONCE_LEN: usize = 12;

/// What a key seals: its magic (8 bytes, with a format version) and names
/// for messages.
struct Format {
    magic: &'static [u8; 8],
    /// "backup key", "ACME key".
    key: &'static str,
    /// What a value that fails the magic check is not.
    value: &'static str,
}

/// Sealed ORINARI backup files, format version 1.
const BACKUP: Format = Format {
    magic: b"ORIBAK01",
    key: "backup key",
    value: "an ORINARI backup file",
};

/// Sealed ACME secrets in the store, format version 1.
const ACME: Format = Format {
    magic: b"ORIACM01",
    key: "ACME key",
    value: "a sealed ORINARI ACME secret",
};

/// A 256-bit key, held in memory only.
#[derive(Clone)]
struct SealKey(Aes256Gcm);

impl SealKey {
    /// From base64 text (32 bytes once decoded).
    fn from_base64(text: &str, f: &Format) -> Result<Self, String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| format!("the {} is not valid base64", f.key))?;
        if bytes.len() != 32 {
            return Err(format!(
                "the {} must be 32 bytes, not {}",
                f.key,
                bytes.len()
            ));
        }
        Aes256Gcm::new_from_slice(&bytes)
            .map(Self)
            .map_err(|_| format!("invalid {}", f.key))
    }

    /// Encrypt `plain` for the value called `name`.
    fn seal(&self, f: &Format, name: &str, plain: &[u8]) -> Result<Vec<u8>, String> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| "encryption failed".to_string())?;
        let mut out = Vec::with_capacity(f.magic.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(f.magic);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypt and authenticate the value called `name`; `mismatch` says
    /// what a failed check means.
    fn open(&self, f: &Format, name: &str, data: &[u8], mismatch: &str) -> Result<Vec<u8>, String> {
        let body = data
            .strip_prefix(f.magic.as_slice())
            .ok_or_else(|| format!("{name}: not {}", f.value))?;
        if body.len() < NONCE_LEN {
            return Err(format!("{name}: truncated"));
        }
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        self.0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| format!("{name}: {mismatch}"))
    }
}

/// The key sealing backup files.
#[derive(Clone)]
pub struct BackupKey(SealKey);

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupKey(..)")
    }
}

impl BackupKey {
    /// From base64 text (32 bytes once decoded).
    pub fn from_base64(text: &str) -> Result<Self, String> {
        SealKey::from_base64(text, &BACKUP).map(Self)
    }

    /// Encrypt `plain` for the file called `name`.
    pub fn seal(&self, name: &str, plain: &[u8]) -> Result<Vec<u8>, String> {
        self.0.seal(&BACKUP, name, plain)
    }

    /// Decrypt and authenticate a file called `name`.
    pub fn open(&self, name: &str, data: &[u8]) -> Result<Vec<u8>, String> {
        self.0.open(
            &BACKUP,
            name,
            data,
            "checksum mismatch (corrupt, renamed, or a different key)",
        )
    }
}

/// The key sealing the ACME account and certificates shared through the
/// store (`[server.tls] acme.key_env`).
#[derive(Clone)]
pub struct AcmeKey(SealKey);

impl std::fmt::Debug for AcmeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AcmeKey(..)")
    }
}

impl AcmeKey {
    /// From base64 text (32 bytes once decoded).
    pub fn from_base64(text: &str) -> Result<Self, String> {
        SealKey::from_base64(text, &ACME).map(Self)
    }

    /// Encrypt `plain` for the stored value called `name`.
    pub fn seal(&self, name: &str, plain: &[u8]) -> Result<Vec<u8>, String> {
        self.0.seal(&ACME, name, plain)
    }

    /// Decrypt and authenticate the stored value called `name`.
    pub fn open(&self, name: &str, data: &[u8]) -> Result<Vec<u8>, String> {
        self.0.open(
            &ACME,
            name,
            data,
            "cannot be decrypted: it was sealed with a different key \
             (every instance needs the same server.tls.acme.key_env value) or altered",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const OTHER: &str = "HxwdHhscGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

    fn key() -> BackupKey {
        BackupKey::from_base64(KEY).unwrap()
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let k = key();
        let sealed = k.seal("a.snap", b"hello").unwrap();
        assert_eq!(k.open("a.snap", &sealed).unwrap(), b"hello");
        assert!(k.open("b.snap", &sealed).is_err(), "renamed file must fail");
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(k.open("a.snap", &bad).is_err(), "flipped bit must fail");
        assert!(
            !sealed.windows(5).any(|w| w == b"hello"),
            "plaintext must not appear"
        );
    }

    #[test]
    fn keys_are_validated() {
        assert!(BackupKey::from_base64("not base64!").is_err());
        assert!(BackupKey::from_base64("AAAA").is_err());
        let e = AcmeKey::from_base64("AAAA").unwrap_err();
        assert!(e.contains("ACME key") && e.contains("32 bytes"), "{e}");
    }

    #[test]
    fn acme_secret_with_a_wrong_key_fails_clearly() {
        let k = AcmeKey::from_base64(KEY).unwrap();
        let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let sealed = k.seal("certificate example.org", pem).unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"BEGIN"), "plaintext");
        assert_eq!(k.open("certificate example.org", &sealed).unwrap(), pem);
        let e = AcmeKey::from_base64(OTHER)
            .unwrap()
            .open("certificate example.org", &sealed)
            .unwrap_err();
        assert!(
            e.starts_with("certificate example.org: cannot be decrypted")
                && e.contains("server.tls.acme.key_env"),
            "{e}"
        );
        // A backup file is not an ACME secret, even under the same key.
        let backup = key().seal("certificate example.org", pem).unwrap();
        let e = k.open("certificate example.org", &backup).unwrap_err();
        assert!(e.contains("not a sealed ORINARI ACME secret"), "{e}");
    }
}
