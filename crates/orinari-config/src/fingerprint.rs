//! The configuration that every instance of a cluster should share, as
//! one text to hash (`/admin/v1/instances` shows the hash and marks the
//! instances whose hash differs).
//!
//! It covers the whole effective configuration (file, defaults and
//! environment overrides) except what is set per instance: the listening
//! addresses (and what defaults from them) and the region. Secrets never
//! enter the configuration (keys are named by environment variable or
//! file), with one exception it handles: a password inside a URL
//! (`postgres://user:pw@host`, `redis://:pw@host`) is cut out, so a hash
//! of the text cannot be used to guess a weak one.

use crate::Config;

impl Config {
    /// The cluster-wide configuration as text, for a hash: stable for a
    /// given binary and configuration, with no password in it.
    pub fn cluster_text(&self) -> String {
        let mut shared = self.clone();
        shared.server.region = String::new();
        let mut text = format!("{shared:?}");
        // The listening addresses are the instance's own, and so is what
        // defaults from them (the status page's URL).
        text = text.replace(&self.server.listen.to_string(), "<listen>");
        if let Some(tls) = &self.tls {
            text = text.replace(&tls.listen.to_string(), "<tls-listen>");
        }
        without_url_credentials(&text)
    }
}

/// `text` with the user information (`user:password@`) of every URL in it
/// replaced by `***@`.
fn without_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the path, the query, or the end of the
        // value in the debug text.
        let end = tail
            .find(['/', '?', '#', '"', ' ', ',', ')', '}'])
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(i) => {
                out.push_str("***");
                rest = &tail[i..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    #[test]
    fn url_credentials_are_cut_out() {
        assert_eq!(
            without_url_credentials(
                r#"a: "postgres://u:secret@db:5432/x", b: "redis://:pw@r/0", c: "http://h/p@q""#
            ),
            r#"a: "postgres://***@db:5432/x", b: "redis://***@r/0", c: "http://h/p@q""#
        );
    }

    fn config(text: &str) -> Config {
        crate::parse(text, "t.toml", std::iter::empty()).unwrap()
    }

    #[test]
    fn per_instance_keys_do_not_change_the_text_and_shared_ones_do() {
        // The status page's URL defaults from the listening address.
        let a = config("[server]\nlisten = \"127.0.0.1:18081\"\nregion = \"eu\"\n");
        let b = config("[server]\nlisten = \"127.0.0.1:18082\"\nregion = \"us\"\n");
        assert_eq!(a.cluster_text(), b.cluster_text());
        let c = config("[limits]\nrequests_per_minute = 7\n");
        assert_ne!(a.cluster_text(), c.cluster_text());
        let pw1 = config("[cluster]\nredis_url = \"redis://:s3cr3t-one@127.0.0.1:6379\"\n");
        let pw2 = config("[cluster]\nredis_url = \"redis://:s3cr3t-two@127.0.0.1:6379\"\n");
        assert_eq!(pw1.cluster_text(), pw2.cluster_text());
        assert!(!pw1.cluster_text().contains("s3cr3t"));
    }
}
