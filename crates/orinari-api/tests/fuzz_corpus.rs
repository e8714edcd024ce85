//! Replays the `chat_request` fuzz corpus (`fuzz/corpus/chat_request`) with
//! the fuzz target's properties, so every input the fuzzer kept is checked
//! on every `make test`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::path::Path;

use orinari_api::{ChatRequest, ValidationLimits};

#[test]
fn chat_request_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/chat_request");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let limits = ValidationLimits {
            max_input_chars: 4096,
        };
        match ChatRequest::parse(&data, limits) {
            Ok(req) => {
                assert!(!req.messages.is_empty(), "{}", path.display());
                let chars: usize = req.messages.iter().map(|m| m.content.chars().count()).sum();
                assert!(chars <= limits.max_input_chars, "{}", path.display());
            }
            Err(e) => {
                assert!(
                    (400..500).contains(&e.status),
                    "{}: {}",
                    path.display(),
                    e.status
                );
                assert!(!e.message.is_empty());
            }
        }
        n += 1;
    }
    assert!(n >= 4, "corpus missing at {}", dir.display());
}
