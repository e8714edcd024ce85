//! The guard's normalizer and screen on arbitrary text: never panics, and
//! the normalized text has no invisible or bidi control characters, no
//! leading, trailing or doubled spaces. Replayed by
//! `crates/orinari-guard/tests/fuzz_corpus.rs`.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use orinari_guard::Guard;

static GUARD: LazyLock<Option<Guard>> = LazyLock::new(|| Guard::new().ok());

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let n = orinari_guard::normalize(&text);
    assert!(!n.text.starts_with(' ') && !n.text.ends_with(' ') && !n.text.contains("  "));
    assert!(!n.text.chars().any(|c| matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')));
    if let Some(g) = GUARD.as_ref() {
        let v = g.screen(&text);
        assert!(v.score.is_finite() && (0.0..=1.0).contains(&v.score));
        assert_eq!(v.attack, v.rule.is_some());
    }
});
