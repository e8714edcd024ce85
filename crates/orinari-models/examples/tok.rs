//! Print the token ids and pieces of a chat prompt (debug aid).
//!
//! `cargo run -p orinari-models --example tok -- "some text"`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::io::Write;

use orinari_models::Message;
use orinari_models::local::{default_model_path, load_vocab};

fn main() -> anyhow::Result<()> {
    let text = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "What is the capital of France? 12345".into());
    let v = load_vocab(&default_model_path()).map_err(anyhow::Error::msg)?;
    let ids = v
        .encode_chat(&[Message::text("user", text)])
        .map_err(anyhow::Error::msg)?;
    let pieces: Vec<String> = ids
        .iter()
        .map(|&i| String::from_utf8_lossy(v.tokenizer.token_bytes(i)).into_owned())
        .collect();
    let mut out = std::io::stdout();
    writeln!(out, "{ids:?}")?;
    writeln!(out, "{pieces:?}")?;
    Ok(())
}
