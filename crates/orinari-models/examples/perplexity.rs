//! Perplexity of the embedded model in each weight format on a fixed public
//! text: the quality gate for weight formats (issue #21). Prints one JSON
//! line per format.
//!
//! ```text
//! cargo run --release -p orinari-models --example perplexity [-- FILE [TOKENS]]
//! ```
//!
//! FILE defaults to the GNU GPL version 3 as Debian ships it
//! (`/usr/share/common-licenses/GPL-3`, 35 KiB of English prose), TOKENS to
//! 1024. Lower is better; a format may cost at most a few percent over the
//! GGUF's own Q4_1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a measuring tool fails loudly"
)]

use std::io::Write;
use std::time::Instant;

use anyhow::Context;
use orinari_models::local::{
    EngineOptions, LocalConfig, Requantized, default_model_path, packed_kernel_available,
    perplexity,
};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let file = args
        .next()
        .unwrap_or_else(|| "/usr/share/common-licenses/GPL-3".into());
    let tokens: usize = args.next().map_or(Ok(1024), |t| t.parse())?;
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?;
    for (name, requantize, requantized) in [
        ("packed", false, Requantized::Q8_0),
        ("q4_1", false, Requantized::Q8_0),
        ("q8_0", true, Requantized::Q8_0),
        ("q4k-tiled", true, Requantized::TiledQ4K),
        ("q6k-tiled", true, Requantized::TiledQ6K),
    ] {
        let cfg = LocalConfig {
            path: default_model_path(),
            context_size: Some(2048),
            max_active: 1,
            queue_depth: 1,
            requantize,
        };
        if name == "packed" && !packed_kernel_available() {
            continue;
        }
        let opts = EngineOptions {
            prefix_cache_mib: 0,
            requantized,
            packed: name == "packed",
            ..EngineOptions::default()
        };
        let t = Instant::now();
        let (ppl, scored) = perplexity(&cfg, &opts, &text, tokens).map_err(anyhow::Error::msg)?;
        let line = serde_json::json!({
            "weights": name,
            "text": file,
            "tokens_scored": scored,
            "perplexity": (ppl * 1000.0).round() / 1000.0,
            "seconds": (t.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        });
        writeln!(std::io::stdout(), "{line}")?;
    }
    Ok(())
}
