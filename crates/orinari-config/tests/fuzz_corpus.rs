//! Replays the `config_parse` fuzz corpus (`fuzz/corpus/config_parse`) with
//! the fuzz target's properties on every `make test`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::path::Path;

#[test]
fn config_parse_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/config_parse");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        n += 1;
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        if let Err(e) = orinari_config::parse(text, "fuzz.toml", Vec::new()) {
            assert!(e.0.starts_with("fuzz.toml"), "{}: {}", path.display(), e.0);
        }
    }
    assert!(n >= 4, "corpus missing at {}", dir.display());
}
