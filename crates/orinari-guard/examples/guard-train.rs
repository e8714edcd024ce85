//! Train the prompt-injection classifier on the train splits of the S-Labs
//! and neuralchemy sets, pick its threshold on their validation splits (never
//! the test splits), and write `model/prompt-injection.bin`.
//!
//! `cargo run --release -p orinari-guard --example guard-train -- DATA_DIR OUT`
//! (DATA_DIR from `scripts/fetch-guard-data.sh`; see `bench/guard/train.sh`).
#![allow(clippy::print_stdout, reason = "a command-line tool")]

mod common;

use std::collections::HashSet;
use std::path::PathBuf;

use orinari_guard::train::{self, Settings};
use orinari_guard::{Guard, normalize};

/// Target false-positive rate on each validation set.
const MAX_FPR: f64 = 0.01;
/// How many times the everyday benign prompts enter training (a weight).
const EVERYDAY_REPEAT: usize = 3;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: guard-train DATA_DIR OUT")?);
    let out = PathBuf::from(args.next().ok_or("usage: guard-train DATA_DIR OUT")?);
    let mut examples = Vec::new();
    for set in common::SETS {
        for row in common::read(&dir, set, "train")? {
            examples.push((normalize(&row.text).text, row.label == 1));
        }
    }
    let everyday = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../bench/guard/everyday-benign.txt"
    );
    let everyday = std::fs::read_to_string(everyday).map_err(|e| format!("{everyday}: {e}"))?;
    let lines: Vec<&str> = everyday
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for _ in 0..EVERYDAY_REPEAT {
        examples.extend(lines.iter().map(|l| (normalize(l).text, false)));
    }
    let seen: HashSet<&str> = examples.iter().map(|(t, _)| t.as_str()).collect();
    for set in common::SETS {
        let test = common::read(&dir, set, "test")?;
        let dup = test
            .iter()
            .filter(|r| seen.contains(normalize(&r.text).text.as_str()))
            .count();
        println!(
            "{set}: {dup} of {} test texts also appear in train (after normalization)",
            test.len()
        );
    }
    let env = |k: &str| std::env::var(k).ok();
    let d = Settings::default();
    let settings = Settings {
        log2_buckets: env("GUARD_LOG2_BUCKETS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(d.log2_buckets),
        epochs: env("GUARD_EPOCHS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(d.epochs),
        learning_rate: env("GUARD_LEARNING_RATE")
            .and_then(|v| v.parse().ok())
            .unwrap_or(d.learning_rate),
        l2: env("GUARD_L2").and_then(|v| v.parse().ok()).unwrap_or(d.l2),
        seed: d.seed,
    };
    let max_fpr: f64 = env("GUARD_MAX_FPR")
        .and_then(|v| v.parse().ok())
        .unwrap_or(MAX_FPR);
    println!("training on {} examples, {settings:?}", examples.len());
    let mut model = train::fit(&examples, settings);
    // Quantize first, so the threshold is picked on the weights that ship.
    model = orinari_guard::Model::from_bytes(&model.to_bytes()).map_err(|e| e.to_string())?;
    let mut benign = Vec::new();
    for set in common::SETS {
        let rows = common::read(&dir, set, "validation")?;
        let scores = rows
            .iter()
            .filter(|r| r.label == 0)
            .map(|r| model.probability(&normalize(&r.text).text))
            .collect::<Vec<f32>>();
        benign.push(scores);
    }
    model.threshold = train::pick_threshold(&benign, max_fpr);
    println!(
        "threshold {:.4} (validation FPR <= {max_fpr} per set)",
        model.threshold
    );
    let guard = Guard::with_model(model.clone()).map_err(|e| e.to_string())?;
    for set in common::SETS {
        let rows = common::read(&dir, set, "validation")?;
        let (mut tp, mut fp, mut pos, mut neg) = (0, 0, 0, 0);
        for r in &rows {
            let v = guard.screen(&r.text);
            if r.label == 1 {
                pos += 1;
                tp += usize::from(v.attack);
            } else {
                neg += 1;
                fp += usize::from(v.attack);
            }
        }
        println!(
            "{set} validation: recall {:.2}% ({tp}/{pos}), FPR {:.2}% ({fp}/{neg})",
            100.0 * tp as f64 / pos as f64,
            100.0 * fp as f64 / neg as f64
        );
    }
    std::fs::write(&out, model.to_bytes()).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}
