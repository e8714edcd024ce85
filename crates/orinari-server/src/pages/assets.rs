//! Static assets compiled into the binary, served under content-hashed names.
//!
//! Each file is embedded with `include_bytes!` and named at start-up as
//! `stem.HASH.ext`, where HASH is a 64-bit FNV-1a of its bytes: a changed file
//! gets a new URL, so every asset can be cached forever (`immutable`). The
//! hash needs no secrecy, only stability across runs, which FNV gives without
//! a dependency.

use std::sync::LazyLock;

/// One embedded file under its hashed URL.
pub struct Asset {
    /// The URL path, e.g. `/assets/chat.0123abcd4567ef89.js`.
    pub path: String,
    /// The bytes as built.
    pub bytes: &'static [u8],
    /// The `content-type` header value.
    pub content_type: &'static str,
    /// A strong entity tag (the content hash, quoted).
    pub etag: String,
}

/// Every asset the pages use.
pub struct Assets {
    /// The stylesheet.
    pub css: Asset,
    /// The chat page's entry module.
    pub chat_js: Asset,
    /// The Markdown renderer, imported on demand by `chat_js`.
    pub markdown_js: Asset,
    /// The icon (SVG, scales to any size).
    pub icon: Asset,
    /// The status page's stylesheet.
    pub status_css: Asset,
    /// The status page's live-update module.
    pub status_js: Asset,
}

impl Assets {
    fn all(&self) -> [&Asset; 6] {
        [
            &self.css,
            &self.chat_js,
            &self.markdown_js,
            &self.icon,
            &self.status_css,
            &self.status_js,
        ]
    }

    /// The asset served at `/assets/{name}`, if any.
    pub fn get(&self, name: &str) -> Option<&Asset> {
        self.all()
            .into_iter()
            .find(|a| a.path.strip_prefix(PREFIX) == Some(name))
    }
}

const PREFIX: &str = "/assets/";

/// The asset table, hashed once on first use.
pub static ASSETS: LazyLock<Assets> = LazyLock::new(|| Assets {
    css: asset(
        "chat",
        "css",
        include_bytes!("../../assets/chat.css"),
        "text/css; charset=utf-8",
    ),
    chat_js: asset(
        "chat",
        "js",
        include_bytes!("../../assets/chat.js"),
        "text/javascript; charset=utf-8",
    ),
    markdown_js: asset(
        "markdown",
        "js",
        include_bytes!("../../assets/markdown.js"),
        "text/javascript; charset=utf-8",
    ),
    icon: asset(
        "icon",
        "svg",
        include_bytes!("../../assets/icon.svg"),
        "image/svg+xml",
    ),
    status_css: asset(
        "status",
        "css",
        include_bytes!("../../assets/status.css"),
        "text/css; charset=utf-8",
    ),
    status_js: asset(
        "status",
        "js",
        include_bytes!("../../assets/status.js"),
        "text/javascript; charset=utf-8",
    ),
});

fn asset(stem: &str, ext: &str, bytes: &'static [u8], content_type: &'static str) -> Asset {
    let hash = format!("{:016x}", fnv1a(bytes));
    Asset {
        path: format!("{PREFIX}{stem}.{hash}.{ext}"),
        bytes,
        content_type,
        etag: format!("\"{hash}\""),
    }
}

/// 64-bit FNV-1a.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_content_hash_and_resolve() {
        let a = &ASSETS.chat_js;
        assert!(a.path.starts_with("/assets/chat.") && a.path.ends_with(".js"));
        assert_eq!(a.path.len(), "/assets/chat.".len() + 16 + ".js".len());
        let name = &a.path["/assets/".len()..];
        assert!(ASSETS.get(name).is_some_and(|b| b.path == a.path));
        assert!(ASSETS.get("chat.js").is_none());
        assert!(ASSETS.get("../Cargo.toml").is_none());
        // FNV-1a test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
