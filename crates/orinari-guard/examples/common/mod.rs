//! Shared by the training and evaluation examples: reading the JSON Lines
//! splits that `scripts/fetch-guard-data.sh` writes.

use std::path::Path;

/// One labelled prompt.
#[derive(Debug, serde::Deserialize)]
pub struct Row {
    /// The prompt.
    pub text: String,
    /// 1 for an attack, 0 for benign.
    pub label: u8,
    /// The attack category (neuralchemy only; empty otherwise).
    #[serde(default)]
    #[allow(dead_code, reason = "read by guard-eval only")]
    pub category: String,
}

/// The two data sets, by directory name.
pub const SETS: &[&str] = &["s-labs", "neuralchemy"];

/// Read `<dir>/<set>/<split>.jsonl`.
pub fn read(dir: &Path, set: &str, split: &str) -> anyhow_like::Result<Vec<Row>> {
    let path = dir.join(set).join(format!("{split}.jsonl"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e} (run scripts/fetch-guard-data.sh)", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// A string error is enough for a command-line example.
pub mod anyhow_like {
    /// Result with a message.
    pub type Result<T> = std::result::Result<T, String>;
}
