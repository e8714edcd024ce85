//! Sealing backup files: AES-256-GCM with a fresh random nonce per file and
//! the file's name as associated data, so a file cannot be swapped for
//! another or altered without detection (the GCM tag is the checksum).

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};

/// Marks a sealed ORINARI backup file, format version 1.
const MAGIC: &[u8; 8] = b"ORIBAK01";
const NONCE_LEN: usize = 12;

/// A 256-bit key, held in memory only.
#[derive(Clone)]
pub struct BackupKey(Aes256Gcm);

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupKey(..)")
    }
}

impl BackupKey {
    /// From base64 text (32 bytes once decoded).
    pub fn from_base64(text: &str) -> Result<Self, String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| "the backup key is not valid base64".to_string())?;
        if bytes.len() != 32 {
            return Err(format!(
                "the backup key must be 32 bytes, not {}",
                bytes.len()
            ));
        }
        Aes256Gcm::new_from_slice(&bytes)
            .map(Self)
            .map_err(|_| "invalid backup key".to_string())
    }

    /// Encrypt `plain` for the file called `name`.
    pub fn seal(&self, name: &str, plain: &[u8]) -> Result<Vec<u8>, String> {
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
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypt and authenticate a file called `name`.
    pub fn open(&self, name: &str, data: &[u8]) -> Result<Vec<u8>, String> {
        let body = data
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| format!("{name}: not an ORINARI backup file"))?;
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
            .map_err(|_| {
                format!("{name}: checksum mismatch (corrupt, renamed, or a different key)")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> BackupKey {
        BackupKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap()
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
    }
}
