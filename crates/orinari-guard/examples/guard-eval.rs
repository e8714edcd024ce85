//! Evaluate the guard on the held-out test splits of the S-Labs and
//! neuralchemy sets: precision, recall, false-positive rate, F1 and per-text
//! latency (p50/p99), side by side with a keyword-list detector.
//!
//! `cargo run --release -p orinari-guard --example guard-eval -- DATA_DIR`
//! (see `bench/guard/eval.sh`). `--errors` also lists misclassified
//! validation texts (never the test split's) for rule and feature work.
#![allow(clippy::print_stdout, reason = "a command-line tool")]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use orinari_guard::{Guard, normalize};

/// A keyword-list detector: the common phrases of public injection
/// blocklists, matched on lower-cased text (no normalization).
const KEYWORDS: &[&str] = &[
    "ignore previous instructions",
    "ignore all previous instructions",
    "ignore the above",
    "ignore your instructions",
    "disregard previous",
    "disregard all previous",
    "forget your instructions",
    "forget all previous",
    "system prompt",
    "you are now",
    "jailbreak",
    "developer mode",
    "do anything now",
    "dan mode",
    "override your",
    "bypass your",
    "reveal your instructions",
    "new instructions",
    "act as an unrestricted",
    "without any restrictions",
];

#[derive(Default)]
struct Counts {
    tp: usize,
    fp: usize,
    tn: usize,
    fn_: usize,
}

impl Counts {
    fn add(&mut self, attack: bool, predicted: bool) {
        match (attack, predicted) {
            (true, true) => self.tp += 1,
            (true, false) => self.fn_ += 1,
            (false, true) => self.fp += 1,
            (false, false) => self.tn += 1,
        }
    }

    fn row(&self, name: &str, p50_us: f64, p99_us: f64) -> String {
        let pct = |a: usize, b: usize| {
            if b == 0 {
                0.0
            } else {
                100.0 * a as f64 / b as f64
            }
        };
        let precision = pct(self.tp, self.tp + self.fp);
        let recall = pct(self.tp, self.tp + self.fn_);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        format!(
            "| {name} | {precision:.2}% | {recall:.2}% ({}/{}) | {:.2}% ({}/{}) | {:.3} | {p50_us:.0} µs | {p99_us:.0} µs |",
            self.tp,
            self.tp + self.fn_,
            pct(self.fp, self.fp + self.tn),
            self.fp,
            self.fp + self.tn,
            f1 / 100.0,
        )
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: guard-eval DATA_DIR [--errors]")?);
    let show_errors = args.next().as_deref() == Some("--errors");
    let guard = Guard::new().map_err(|e| e.to_string())?;
    println!(
        "| test set | detector | precision | recall (attacks) | false positives (benign) | F1 | p50 | p99 |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut all_lat = Vec::new();
    for set in common::SETS {
        let rows = common::read(&dir, set, "test")?;
        let (mut ours, mut keywords) = (Counts::default(), Counts::default());
        let mut lat = Vec::with_capacity(rows.len());
        let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
        let mut by_category: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for r in &rows {
            let t = Instant::now();
            let v = guard.screen(&r.text);
            lat.push(t.elapsed().as_secs_f64() * 1e6);
            ours.add(r.label == 1, v.attack);
            if let Some(rule) = v.rule {
                *by_rule.entry(rule).or_default() += 1;
            }
            if r.label == 1 && !r.category.is_empty() {
                let c = by_category.entry(r.category.clone()).or_default();
                c.0 += usize::from(v.attack);
                c.1 += 1;
            }
            let lower = r.text.to_lowercase();
            keywords.add(r.label == 1, KEYWORDS.iter().any(|k| lower.contains(k)));
        }
        lat.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
        all_lat.extend_from_slice(&lat);
        println!("{}", ours.row(&format!("{set} | orinari-guard"), p50, p99));
        println!(
            "{}",
            keywords.row(&format!("{set} | keyword list"), 0.0, 0.0)
        );
        println!("<!-- {set}: verdicts by rule {by_rule:?} -->");
        if !by_category.is_empty() {
            let cats: Vec<String> = by_category
                .iter()
                .map(|(c, (hit, n))| format!("{c} {hit}/{n}"))
                .collect();
            println!(
                "<!-- {set}: recall by attack category: {} -->",
                cats.join(", ")
            );
        }
    }
    all_lat.sort_by(f64::total_cmp);
    println!(
        "\nlatency over every test text: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs (one thread)",
        percentile(&all_lat, 0.5),
        percentile(&all_lat, 0.99),
        all_lat.last().copied().unwrap_or(0.0)
    );
    let long = "Please summarize the following report for the board. ".repeat(600);
    let t = Instant::now();
    let v = guard.screen(&long);
    println!(
        "a {}-character message: {:.2} ms (attack: {})",
        long.chars().count(),
        t.elapsed().as_secs_f64() * 1e3,
        v.attack
    );
    if show_errors {
        for set in common::SETS {
            for r in common::read(&dir, set, "validation")? {
                let v = guard.screen(&r.text);
                if v.attack != (r.label == 1) {
                    println!(
                        "{set} label={} score={:.3} rule={:?}: {}",
                        r.label,
                        v.score,
                        v.rule,
                        normalize(&r.text).text
                    );
                }
            }
        }
    }
    Ok(())
}
