//! The config loader on arbitrary text: never panics; every refusal names
//! the file (and a line, column or key). Replayed by
//! `crates/orinari-config/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = orinari_config::parse(text, "fuzz.toml", Vec::new()) {
        assert!(e.0.starts_with("fuzz.toml"), "{}", e.0);
    }
});
