//! Replays the `guard_normalize` fuzz corpus (`fuzz/corpus/guard_normalize`)
//! with the fuzz target's properties on every `make test`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::path::Path;

use orinari_guard::Guard;

#[test]
fn guard_normalize_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/guard_normalize");
    let guard = Guard::new().unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&data);
        let norm = orinari_guard::normalize(&text);
        let t = &norm.text;
        assert!(
            !t.starts_with(' ') && !t.ends_with(' ') && !t.contains("  "),
            "{}",
            path.display()
        );
        assert!(
            !t.chars().any(|c| matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')),
            "{}",
            path.display()
        );
        let v = guard.screen(&text);
        assert!(v.score.is_finite() && (0.0..=1.0).contains(&v.score));
        assert_eq!(v.attack, v.rule.is_some());
        n += 1;
    }
    assert!(n >= 4, "corpus missing at {}", dir.display());
}
