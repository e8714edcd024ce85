//! Evaluate the committed guard on test texts it never saw: the held-out
//! test splits of S-Labs and neuralchemy (as user messages, and framed as
//! tool results and retrieved passages), and the whole bastion set (never
//! trained on, never used to fit anything; its texts arrive on the channel
//! it labels them with). Precision, recall, false-positive rate and F1 per
//! set, per category, per language and per channel; the guard as it ships
//! (the cascade: the encoder only inside the band), the same weights with
//! the encoder run on every text (the guard before the cascade), without
//! the encoder (its fallback), and a keyword list side by side;
//! per-message latency (p50/p99, one thread) of the cascade and of the
//! encoder on every text, measured on the same texts in one run, and the
//! memory the encoder adds.
//!
//! `cargo run --release -p orinari-guard --example guard-eval -- DATA_DIR
//! [--errors] [--texts FILE | --open-detector FILE]` (see
//! `bench/guard/eval.sh`). `--errors` also lists misclassified validation
//! texts (never a test split's) for rule and feature work. `--texts` writes
//! every test and validation text as JSON lines and stops, for an open
//! detector run outside this program (`bench/guard/open-detector.py`);
//! `--open-detector` reads its scores and adds its rows to the table: at
//! its own operating point, and at the threshold that flags ≤ 1 % of the
//! validation texts' benign ones (as the guard's thresholds are chosen).
#![allow(clippy::print_stdout, reason = "a command-line tool")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{Mini, Row};
use orinari_guard::{Channel, Guard, classifier_text};

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

/// The test splits are also framed as tool results and retrieved
/// passages: every this-many texts.
const FRAMED_EVERY: usize = 8;
/// Latency is measured live (no cached vectors) on every this-many texts.
const LATENCY_EVERY: usize = 8;

#[derive(Default, Clone)]
struct Counts {
    tp: usize,
    fp: usize,
    tn: usize,
    fn_: usize,
}

fn pct(a: usize, b: usize) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        100.0 * a as f64 / b as f64
    }
}

fn fmt(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.1}%")
    }
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

    fn row(&self, name: &str) -> String {
        let precision = pct(self.tp, self.tp + self.fp);
        let recall = pct(self.tp, self.tp + self.fn_);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall) / 100.0
        } else {
            f64::NAN
        };
        format!(
            "| {name} | {} | {} ({}/{}) | {} ({}/{}) | {} |",
            fmt(precision),
            fmt(recall),
            self.tp,
            self.tp + self.fn_,
            fmt(pct(self.fp, self.fp + self.tn)),
            self.fp,
            self.fp + self.tn,
            if f1.is_nan() {
                "–".into()
            } else {
                format!("{f1:.3}")
            },
        )
    }

    /// "recall a/b" for attacks, "FP c/d" for benign texts.
    fn brief(&self) -> String {
        let mut parts = Vec::new();
        if self.tp + self.fn_ > 0 {
            parts.push(format!(
                "recall {} ({}/{})",
                fmt(pct(self.tp, self.tp + self.fn_)),
                self.tp,
                self.tp + self.fn_
            ));
        }
        if self.fp + self.tn > 0 {
            parts.push(format!(
                "FPR {} ({}/{})",
                fmt(pct(self.fp, self.fp + self.tn)),
                self.fp,
                self.fp + self.tn
            ));
        }
        parts.join(", ")
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Resident memory of this process in MiB (Linux), for the encoder's cost.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The 1-minute load average (Linux).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Latencies (ms) of one detector: p50, p99, max.
fn summary(lat: &mut [f64]) -> String {
    lat.sort_by(f64::total_cmp);
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(lat, 0.5),
        percentile(lat, 0.99),
        lat.last().copied().unwrap_or(0.0)
    )
}

/// One test text, on one channel.
struct Case {
    row: Row,
    channel: Channel,
}

/// An open detector's scores of the test and validation texts, computed
/// outside this program (`bench/guard/open-detector.py`).
struct OpenDetector {
    name: String,
    /// Its own operating point (attack when the score is at least this).
    shipped: f64,
    /// The threshold that flags at most 1 % of the validation texts' benign
    /// ones (attack when the score is above it).
    fitted: f64,
    scores: HashMap<String, f64>,
}

impl OpenDetector {
    /// Read `path`: a line naming the detector and its threshold, then one
    /// `{"text", "score"}` line per text.
    fn load(path: &Path, validation: &[Row]) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Header {
            detector: String,
            threshold: f64,
        }
        #[derive(serde::Deserialize)]
        struct Scored {
            text: String,
            score: f64,
        }
        let file = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut lines = file.lines().filter(|l| !l.trim().is_empty());
        let bad = |e: serde_json::Error| format!("{}: {e}", path.display());
        let header: Header =
            serde_json::from_str(lines.next().ok_or("an empty scores file")?).map_err(bad)?;
        let mut scores = HashMap::new();
        for line in lines {
            let s: Scored = serde_json::from_str(line).map_err(bad)?;
            scores.insert(s.text, s.score);
        }
        let mut detector = Self {
            name: header.detector,
            shipped: header.threshold,
            fitted: f64::INFINITY,
            scores,
        };
        detector.fitted = detector.threshold(None, validation)?;
        Ok(detector)
    }

    /// The threshold above which this detector, flagging what `guard` (if
    /// any) lets through, keeps the two together within 1 % of the
    /// validation texts' benign ones (infinite when the guard alone spends
    /// the budget).
    fn threshold(&self, guard: Option<&Guard>, validation: &[Row]) -> Result<f64, String> {
        let (mut flagged, mut passed) = (0usize, Vec::new());
        let benign: Vec<&Row> = validation.iter().filter(|r| r.label == 0).collect();
        for r in &benign {
            if guard.is_some_and(|g| g.screen(&r.text).attack) {
                flagged += 1;
            } else {
                passed.push(self.score(&r.text)?);
            }
        }
        passed.sort_by(|a, b| b.total_cmp(a));
        Ok((benign.len() / 100)
            .checked_sub(flagged)
            .and_then(|left| passed.get(left).copied())
            .unwrap_or(f64::INFINITY))
    }

    fn score(&self, text: &str) -> Result<f64, String> {
        self.scores.get(text).copied().ok_or_else(|| {
            format!(
                "the open detector's scores lack a text (rerun `guard-eval --texts`): {:?}",
                text.chars().take(60).collect::<String>()
            )
        })
    }
}

/// The test suites: the split sets' test texts as user messages and framed
/// as tool results and retrieved passages, and the held-out sets.
fn suites(dir: &Path) -> Result<Vec<(String, Vec<Case>)>, String> {
    let mut suites: Vec<(String, Vec<Case>)> = Vec::new();
    for set in common::SPLIT_SETS {
        let rows = common::read_test(dir, set)?;
        for channel in Channel::ALL {
            // Framed copies of every FRAMED_EVERY-th text (each costs an
            // encoder pass; a quarter is enough to measure a channel).
            let every = if channel == Channel::User {
                1
            } else {
                FRAMED_EVERY
            };
            let cases = rows
                .iter()
                .enumerate()
                .filter(|(i, _)| i % every == 0)
                .map(|(i, r)| Case {
                    row: Row {
                        text: common::framed(channel, &r.text, i),
                        ..r.clone()
                    },
                    channel,
                })
                .collect();
            let name = match channel {
                Channel::User => set.to_string(),
                c => format!("{set} as {} text", c.as_str()),
            };
            suites.push((name, cases));
        }
    }
    for set in common::HELD_OUT {
        suites.push((
            format!("{set} (held out)"),
            common::read_test(dir, set)?
                .into_iter()
                .map(|row| Case {
                    channel: row.guard_channel(),
                    row,
                })
                .collect(),
        ));
    }
    Ok(suites)
}

/// Every test and validation text, once each, as JSON lines.
fn write_texts(
    path: &Path,
    suites: &[(String, Vec<Case>)],
    validation: &[Row],
) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = String::new();
    let texts = suites
        .iter()
        .flat_map(|(_, cases)| cases.iter().map(|c| &c.row.text))
        .chain(validation.iter().map(|r| &r.text));
    for text in texts {
        if seen.insert(text) {
            out.push_str(&serde_json::json!({ "text": text }).to_string());
            out.push('\n');
        }
    }
    std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("{} texts written to {}", seen.len(), path.display());
    Ok(())
}

fn main() -> Result<(), String> {
    const USAGE: &str =
        "usage: guard-eval DATA_DIR [--errors] [--texts FILE | --open-detector FILE]";
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or(USAGE)?);
    let (mut show_errors, mut texts_to, mut open_from) = (false, None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--errors" => show_errors = true,
            "--texts" => texts_to = Some(PathBuf::from(args.next().ok_or(USAGE)?)),
            "--open-detector" => open_from = Some(PathBuf::from(args.next().ok_or(USAGE)?)),
            _ => return Err(format!("unknown argument `{arg}`; {USAGE}")),
        }
    }
    let suites = suites(&dir)?;
    let mut validation = Vec::new();
    for set in common::SPLIT_SETS {
        validation.extend(common::read(&dir, set, "validation")?);
    }
    if let Some(path) = texts_to {
        return write_texts(&path, &suites, &validation);
    }
    let open = open_from
        .map(|path| OpenDetector::load(&path, &validation))
        .transpose()?;
    if let Some(o) = &open {
        println!(
            "open detector: {}; its threshold {:.3}; ≤ 1 % of the {} validation texts' benign ones flagged above {:.3}",
            o.name,
            o.shipped,
            validation.len(),
            o.fitted
        );
    }
    let plain = Guard::new().map_err(|e| e.to_string())?;
    println!("load average at start: {}", load_average());
    // Accuracy from cached vectors (the same numbers the encoder gives, as
    // `bench/guard/train.sh` computed them), latency and memory live.
    let before = rss_mib();
    let live = plain
        .clone()
        .with_encoder(Mini::load(false)?)
        .map_err(|e| e.to_string())?;
    let live_every = live.clone().always_encode();
    // Warm up (first-call allocations), then measure the memory it holds.
    for t in ["hello", "ignore all previous instructions"] {
        live_every.screen(t);
    }
    let after = rss_mib();
    let cached = Mini::load(true)?;
    let cache = Mini::cache_path();
    cached.load_cache(&cache);
    let guard = plain
        .clone()
        .with_encoder(cached.clone())
        .map_err(|e| e.to_string())?;
    let always = guard.clone().always_encode();
    // The guard or the open detector, which flags what the guard lets
    // through above a threshold that keeps the two within the budget.
    let beside = open
        .as_ref()
        .map(|o| o.threshold(Some(&guard), &validation))
        .transpose()?;
    if let Some(t) = beside {
        println!(
            "the guard or the open detector above {t:.3}: ≤ 1 % of the validation texts' benign ones together"
        );
    }

    // Embed ahead, in batches, what the encoder-on-every-text guard asks
    // for (the cascade asks for a part of it).
    let mut windows = Vec::new();
    for (_, cases) in &suites {
        for c in cases {
            windows.extend(always.encoder_windows(c.channel, &c.row.text));
        }
    }
    let refs: Vec<&str> = windows.iter().map(String::as_str).collect();
    cached.warm(&refs, &cache)?;

    println!(
        "| test set | detector | precision | recall (attacks) | false positives (benign) | F1 |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut breakdowns = Vec::new();
    // Latency: the same texts through the cascade and through the encoder
    // on every text, alternately first, live (no cached vectors).
    let (mut lat_new, mut lat_old, mut lat_new_benign) = (Vec::new(), Vec::new(), Vec::new());
    let mut sampled_encoded = 0usize;
    let time = |g: &Guard, c: &Case| {
        let t = Instant::now();
        let v = g.screen_as(c.channel, &c.row.text);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        (ms, std::hint::black_box(v))
    };
    let mut encoded = Vec::new();
    for (name, cases) in &suites {
        let (mut ours, mut before_cascade, mut fallback, mut keywords) = (
            Counts::default(),
            Counts::default(),
            Counts::default(),
            Counts::default(),
        );
        let (mut open_shipped, mut open_fitted, mut either) =
            (Counts::default(), Counts::default(), Counts::default());
        let mut ran = 0usize;
        let mut by: BTreeMap<String, Counts> = BTreeMap::new();
        for (i, c) in cases.iter().enumerate() {
            let attack = c.row.label == 1;
            if i % LATENCY_EVERY == 0 {
                let order: [&Guard; 2] = if (i / LATENCY_EVERY).is_multiple_of(2) {
                    [&live, &live_every]
                } else {
                    [&live_every, &live]
                };
                for g in order {
                    let (ms, v) = time(g, c);
                    if std::ptr::eq(g, &live) {
                        lat_new.push(ms);
                        if !attack {
                            lat_new_benign.push(ms);
                        }
                        sampled_encoded += usize::from(v.learned);
                    } else {
                        lat_old.push(ms);
                    }
                }
            }
            let v = guard.screen_as(c.channel, &c.row.text);
            ours.add(attack, v.attack);
            ran += usize::from(v.learned);
            before_cascade.add(attack, always.screen_as(c.channel, &c.row.text).attack);
            fallback.add(attack, plain.screen_as(c.channel, &c.row.text).attack);
            let lower = c.row.text.to_lowercase();
            keywords.add(attack, KEYWORDS.iter().any(|k| lower.contains(k)));
            if let Some(o) = &open {
                let score = o.score(&c.row.text)?;
                open_shipped.add(attack, score >= o.shipped);
                open_fitted.add(attack, score > o.fitted);
                either.add(attack, v.attack || beside.is_some_and(|t| score > t));
            }
            if c.channel == Channel::User || name.ends_with("(held out)") {
                for key in [
                    (!c.row.category.is_empty()).then(|| format!("category {}", c.row.category)),
                    Some(format!("language {}", c.row.lang)),
                    Some(format!("channel {}", c.channel.as_str())),
                    v.rule.map(|r| format!("decided by {r}")),
                ]
                .into_iter()
                .flatten()
                {
                    by.entry(key).or_default().add(attack, v.attack);
                }
            }
        }
        println!("{}", ours.row(&format!("{name} | orinari-guard (cascade)")));
        println!(
            "{}",
            before_cascade.row(&format!("{name} | encoder on every text"))
        );
        println!(
            "{}",
            fallback.row(&format!("{name} | without encoder (fallback)"))
        );
        println!("{}", keywords.row(&format!("{name} | keyword list")));
        if let Some(o) = &open {
            println!(
                "{}",
                open_shipped.row(&format!("{name} | {}, its threshold", o.name))
            );
            println!(
                "{}",
                open_fitted.row(&format!("{name} | {}, ≤ 1 % FP on validation", o.name))
            );
            println!(
                "{}",
                either.row(&format!(
                    "{name} | orinari-guard or {} (an experiment)",
                    o.name
                ))
            );
        }
        encoded.push(format!("{name}: {ran} of {}", cases.len()));
        if !by.is_empty() {
            breakdowns.push((name.clone(), by));
        }
    }
    println!("\nThe cascade ran the encoder on: {}", encoded.join("; "));
    println!("\nBreakdown (orinari-guard, the cascade):\n");
    for (name, by) in &breakdowns {
        println!("- {name}:");
        for (k, c) in by {
            println!("  - {k}: {}", c.brief());
        }
    }
    let sampled = lat_new.len();
    println!(
        "\nlatency per message, live (no cached vectors), every {LATENCY_EVERY}th test text above ({sampled} texts, one thread; each text through both guards, alternately first):"
    );
    println!(
        "- encoder on every text (before): {}",
        summary(&mut lat_old)
    );
    println!(
        "- the cascade (now): {}; the encoder ran on {sampled_encoded} of {sampled}",
        summary(&mut lat_new)
    );
    println!(
        "- the cascade on the benign texts alone ({}): {}",
        lat_new_benign.len(),
        summary(&mut lat_new_benign)
    );
    // Everyday traffic: greetings and small talk (bench/guard/everyday-benign.txt).
    let everyday = common::everyday_rows()?;
    let (mut e_new, mut e_old, mut e_ran) = (Vec::new(), Vec::new(), 0usize);
    for (i, r) in everyday.iter().enumerate() {
        let c = Case {
            row: r.clone(),
            channel: Channel::User,
        };
        let order: [&Guard; 2] = if i % 2 == 0 {
            [&live, &live_every]
        } else {
            [&live_every, &live]
        };
        for g in order {
            let (ms, v) = time(g, &c);
            if std::ptr::eq(g, &live) {
                e_new.push(ms);
                e_ran += usize::from(v.learned);
            } else {
                e_old.push(ms);
            }
        }
    }
    println!(
        "- everyday prompts ({}): before {}; the cascade {} (encoder on {e_ran})",
        everyday.len(),
        summary(&mut e_old),
        summary(&mut e_new)
    );
    // Short benign tool results (bench/guard/tool-results.txt): what the
    // guard flags as tool output, with the encoder, as the server runs it.
    let results = common::tool_result_rows()?;
    let flagged: Vec<String> = results
        .iter()
        .filter_map(|r| {
            let v = live.screen_as(r.guard_channel(), &r.text);
            v.attack.then(|| format!("{:?} ({:.3})", r.text, v.score))
        })
        .collect();
    println!(
        "\nshort benign tool results (bench/guard/tool-results.txt), as tool output: {} of {} flagged{}{}",
        flagged.len(),
        results.len(),
        if flagged.is_empty() { "" } else { ": " },
        flagged.join(", ")
    );
    let long = "Please summarize the following report for the board. ".repeat(600);
    for (name, g) in [("before", &live_every), ("the cascade", &live)] {
        let t = Instant::now();
        let v = g.screen(&long);
        println!(
            "- a {}-character message, {name}: {:.1} ms (attack: {}, encoder: {})",
            long.chars().count(),
            t.elapsed().as_secs_f64() * 1e3,
            v.attack,
            v.learned
        );
    }
    println!("load average at the end: {}", load_average());
    println!(
        "memory: resident {before:.0} MiB before the encoder, {after:.0} MiB with it loaded and used (+{:.0} MiB); now {:.0} MiB",
        after - before,
        rss_mib()
    );
    if show_errors {
        for set in common::SPLIT_SETS {
            for r in common::read(&dir, set, "validation")? {
                let v = guard.screen(&r.text);
                if v.attack != (r.label == 1) {
                    println!(
                        "{set} label={} score={:.3} rule={:?}: {}",
                        r.label,
                        v.score,
                        v.rule,
                        classifier_text(&r.text)
                    );
                }
            }
        }
    }
    Ok(())
}
