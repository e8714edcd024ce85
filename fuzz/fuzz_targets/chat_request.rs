//! The chat request validator on arbitrary bytes: never panics; every
//! refusal is a 4xx that names a field or says what is wrong with the body.
//! Replayed by `crates/orinari-api/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orinari_api::{ChatRequest, ValidationLimits};

fuzz_target!(|data: &[u8]| {
    let limits = ValidationLimits {
        max_input_chars: 4096,
    };
    match ChatRequest::parse(data, limits) {
        Ok(req) => {
            assert!(!req.messages.is_empty());
            let chars: usize = req.messages.iter().map(|m| m.content.chars().count()).sum();
            assert!(chars <= limits.max_input_chars);
        }
        Err(e) => {
            assert!((400..500).contains(&e.status), "{}", e.status);
            assert!(!e.message.is_empty());
        }
    }
});
