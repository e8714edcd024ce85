//! Embedded-model benchmark through the public `ModelBackend` API: prompt
//! processing (~200 and ~512 token prompts), generation (128 greedy tokens),
//! time to first token (200-token prompt), turn 10 of a conversation with
//! ~1,500 tokens of history (with the prefix cache, and cold), and memory.
//! Prints one JSON line.
//!
//! ```text
//! cargo build --release -p orinari-models --example bench_local
//! target/release/examples/bench_local [--requantize true|false] [--reps N] [--gen N]
//!     [--weights packed|q8_0|q4k|q6k] [--prefix-cache-mib N] [--concurrent 1,4,8]
//!     [--single true|false] [--long USERS,TOKENS]
//! ```
//!
//! `--long 8,2000`: last, on a fresh engine without the prefix cache, the
//! peak resident memory while 8 sequences of ~2,000 prompt tokens each run
//! at once (16 tokens generated each; the peak is reset first through
//! `/proc/self/clear_refs`).
//!
//! Each figure is the median of `--reps` runs (default 3) after one warm-up
//! request. Prompt processing is measured as prompt tokens / time to the first
//! event with `max_tokens = 1`, so it includes tokenization, the engine's
//! 128-token prefill chunking and one sampling step: what a client sees.
//!
//! The conversation: turn 1 hands over a ~800-token text, turns 2–9 ask
//! short questions, each answered by the model itself (greedy, at most 64
//! tokens) and sent back as history, as a chat client does; turn 10's time
//! to first token is measured on that model (`turn10_ttft_ms`, the prefix
//! cache holding turn 9) and on a second instance with the cache off
//! (`turn10_cold_ms`). Each rep is a new conversation (its text is numbered),
//! so nothing carries over between reps but the system prompt.
//!
//! Concurrent users (`--concurrent 1,4,8`): that many greedy generations of
//! `--gen` tokens, each with its own prompt, started together on an engine
//! with eight active slots; aggregate tok/s (completion tokens of all of them
//! over the time until the last finishes) and the p50 / p99 gap between
//! consecutive text events of a stream (inter-token latency), for continuous
//! batching (the default engine) and for the one-forward-per-sequence path
//! (`EngineOptions::batch = false`), measured alternately in the same run.
//! `--single false` skips the single-user and conversation figures.
//! `bench/model.sh` runs this side by side with llama.cpp.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, bail};

use orinari_models::local::{
    EngineOptions, LocalConfig, LocalModel, Requantized, default_model_path, load_vocab,
    packed_kernel_available,
};
use orinari_models::{Event, GenerateRequest, Message, ModelBackend, Sampling};

/// Varied prose, repeated to the length needed.
const PROSE: &str = "The harbour town woke slowly. Fishing boats returned with the tide, \
and the market filled with voices arguing over prices of cod, crab and mackerel. \
A baker on the corner sold warm rolls to sailors, while children ran between the \
stalls chasing a dog that had stolen a sausage. By noon the sun burned off the fog \
and the old lighthouse keeper climbed his hill to read the weather in the clouds. ";

/// The conversation's questions: turns 2–10.
const QUESTIONS: [&str; 9] = [
    "Who sold warm rolls, and to whom?",
    "What did the children chase?",
    "What happened at noon?",
    "Where did the lighthouse keeper go?",
    "Which fish were people arguing about?",
    "Describe the mood of the market in a few sentences.",
    "What time of day did the town wake?",
    "Give the text a title.",
    "List three things a visitor would smell there.",
];

struct Args {
    requantize: bool,
    reps: usize,
    generate: u32,
    prefix_cache_mib: usize,
    requantized: Requantized,
    /// `orinari-kernels`' packed kernel where the CPU has it.
    packed: bool,
    /// Numbers of concurrent users to measure (empty: none).
    concurrent: Vec<usize>,
    /// Measure the single-user figures and the conversation.
    single: bool,
    /// Peak memory with this many sequences of about this many prompt
    /// tokens each at once (`--long 8,2000`; none by default).
    long: Option<(usize, usize)>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        requantize: true,
        reps: 3,
        generate: 128,
        prefix_cache_mib: orinari_models::local::DEFAULT_PREFIX_CACHE_MIB,
        requantized: Requantized::Q8_0,
        packed: true,
        concurrent: vec![1, 4, 8],
        single: true,
        long: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--requantize" => a.requantize = v.parse().context("--requantize true|false")?,
            "--reps" => a.reps = v.parse().context("--reps N")?,
            "--gen" => a.generate = v.parse().context("--gen N")?,
            "--weights" => {
                a.packed = v == "packed";
                a.requantized = match v.as_str() {
                    "packed" | "q8_0" => Requantized::Q8_0,
                    "q4k" => Requantized::TiledQ4K,
                    "q6k" => Requantized::TiledQ6K,
                    _ => bail!("--weights packed|q8_0|q4k|q6k"),
                }
            }
            "--prefix-cache-mib" => {
                a.prefix_cache_mib = v.parse().context("--prefix-cache-mib N")?
            }
            "--concurrent" => {
                a.concurrent = v
                    .split(',')
                    .filter(|x| !x.is_empty())
                    .map(|x| x.parse::<usize>().context("--concurrent 1,4,8"))
                    .collect::<anyhow::Result<_>>()?
            }
            "--single" => a.single = v.parse().context("--single true|false")?,
            "--long" => {
                let (users, tokens) = v.split_once(',').context("--long USERS,TOKENS")?;
                a.long = Some((
                    users.parse().context("--long USERS,TOKENS")?,
                    tokens.parse().context("--long USERS,TOKENS")?,
                ));
            }
            _ => {
                bail!(
                    "unknown argument {k} (use --requantize, --weights, --reps, --gen, --prefix-cache-mib, --concurrent, --single, --long)"
                )
            }
        }
    }
    a.reps = a.reps.max(1);
    Ok(a)
}

/// A user message whose rendered chat prompt has about `target` tokens.
fn prompt_of(
    vocab: &orinari_models::local::Vocab,
    target: usize,
) -> anyhow::Result<(Vec<Message>, usize)> {
    let words: Vec<&str> = PROSE.split_inclusive(' ').collect();
    let mut content = String::from("Summarise this text in one sentence. ");
    let mut i = 0;
    loop {
        let msgs = vec![Message::text("user", content.clone())];
        let n = vocab.encode_chat(&msgs).map_err(anyhow::Error::msg)?.len();
        if n >= target {
            return Ok((msgs, n));
        }
        content.push_str(words[i % words.len()]);
        i += 1;
    }
}

struct Timing {
    first_event_s: f64,
    /// When each text event arrived, seconds after the request.
    deltas_s: Vec<f64>,
    total_s: f64,
    completion_tokens: u32,
    prompt_tokens: u32,
    text: String,
}

/// Turn 1 of conversation `n`: a numbered text of about 800 tokens.
fn document(n: usize) -> String {
    let mut doc = format!("Document {n}. Read this text, then answer my questions about it.\n\n");
    for _ in 0..9 {
        doc.push_str(PROSE);
    }
    doc
}

/// Play turns 1–9 of conversation `n` (answers by the model itself) and
/// return the messages of turn 10.
async fn conversation(m: &LocalModel, n: usize) -> anyhow::Result<Vec<Message>> {
    let mut msgs = vec![Message::text("user", document(n))];
    for q in QUESTIONS.iter().take(QUESTIONS.len() - 1) {
        let answer = run(m, msgs.clone(), 64).await?.text;
        msgs.push(Message::text("assistant", answer));
        msgs.push(Message::text("user", *q));
    }
    let answer = run(m, msgs.clone(), 64).await?.text;
    msgs.push(Message::text("assistant", answer));
    msgs.push(Message::text("user", QUESTIONS[QUESTIONS.len() - 1]));
    Ok(msgs)
}

async fn run(m: &LocalModel, messages: Vec<Message>, max_tokens: u32) -> anyhow::Result<Timing> {
    let req = GenerateRequest {
        messages,
        sampling: Sampling {
            temperature: 0.0,
            max_tokens: Some(max_tokens),
            ..Sampling::default()
        },
        stream: true,
        ..GenerateRequest::default()
    };
    let t0 = Instant::now();
    let mut g = m.start(req).await?;
    let mut first = None;
    let mut text = String::new();
    let mut deltas_s = Vec::new();
    while let Some(ev) = g.events.recv().await {
        let at = t0.elapsed().as_secs_f64();
        first.get_or_insert(at);
        match ev? {
            Event::Delta(t) => {
                text.push_str(&t);
                deltas_s.push(at);
            }
            Event::Done { usage, .. } => {
                return Ok(Timing {
                    first_event_s: first.unwrap_or_default(),
                    deltas_s,
                    total_s: t0.elapsed().as_secs_f64(),
                    completion_tokens: usage.completion_tokens,
                    prompt_tokens: usage.prompt_tokens,
                    text,
                });
            }
            Event::ToolCall(_) | Event::Logprobs(_) => {}
        }
    }
    bail!("the stream ended without Done")
}

/// The `p`th percentile (nearest rank) of `v`; 0 when empty.
fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Subjects of the concurrent users' stories: each user its own prompt.
const SUBJECTS: [&str; 8] = [
    "a dragon who learns to bake bread",
    "a lighthouse keeper and a lost whale",
    "a robot that collects old maps",
    "two sisters crossing a frozen lake",
    "a clockmaker who can repair time",
    "a fox running a small library",
    "a sailor who forgets the sea",
    "a garden that grows at night",
];

/// `users` greedy generations of `generate` tokens started together;
/// returns (completion tokens, seconds until the last one finished, every
/// gap between consecutive text events of a stream in seconds).
async fn concurrent_run(
    m: &LocalModel,
    users: usize,
    generate: u32,
) -> anyhow::Result<(u32, f64, Vec<f64>)> {
    let t0 = Instant::now();
    let runs = futures::future::join_all((0..users).map(|u| {
        let msgs = vec![Message::text(
            "user",
            format!(
                "Write a long, detailed story about {}.",
                SUBJECTS[u % SUBJECTS.len()]
            ),
        )];
        run(m, msgs, generate)
    }))
    .await;
    let wall = t0.elapsed().as_secs_f64();
    let mut tokens = 0;
    let mut gaps = Vec::new();
    for r in runs {
        let r = r?;
        tokens += r.completion_tokens;
        gaps.extend(r.deltas_s.windows(2).map(|w| w[1] - w[0]));
    }
    Ok((tokens, wall, gaps))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `VmRSS` and `VmHWM` from /proc/self/status, in MiB (0 where unavailable).
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds this process has used (user + system, all threads), from
/// /proc/self/stat in clock ticks (100 per second on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is parenthesised and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3 (state, not numeric).
    f.get(10)
        .zip(f.get(11))
        .map_or(0.0, |(u, s)| (u + s) / 100.0)
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let started = Instant::now();
    let path = default_model_path();
    let fetch = || {
        format!(
            "cannot load {} (run scripts/fetch-model.sh)",
            path.display()
        )
    };
    let vocab = load_vocab(&path)
        .map_err(anyhow::Error::msg)
        .with_context(fetch)?;
    let t = Instant::now();
    let cfg = LocalConfig {
        path: path.clone(),
        context_size: Some(2048),
        max_active: 1,
        queue_depth: 1,
        requantize: a.requantize,
    };
    // Single requests are measured without the prefix cache (repeated
    // prompts would otherwise be served from it), as llama.cpp's are.
    let no_cache = EngineOptions {
        prefix_cache_mib: 0,
        requantized: a.requantized,
        packed: a.packed,
        ..EngineOptions::default()
    };
    let m = LocalModel::load_with(&cfg, &no_cache).with_context(fetch)?;
    let load_s = t.elapsed().as_secs_f64();
    let (rss_after_load, _) = memory_mib();

    let single = if a.single {
        Some(single_user(&a, &vocab, &cfg, &m).await?)
    } else {
        None
    };
    // Overridden by the single-user figures, measured before their
    // conversations, when those run.
    let (rss_end, hwm) = memory_mib();
    m.shutdown();
    let concurrent = concurrent_users(&a, &cfg).await?;
    let (_, hwm_all) = memory_mib();
    let long = match a.long {
        Some((users, tokens)) => Some(long_sequences(&a, &vocab, &cfg, users, tokens).await?),
        None => None,
    };
    let mut out = serde_json::json!({
        "engine": "orinari",
        "model": path.file_name().map(|f| f.to_string_lossy().into_owned()),
        "requantize": a.requantize,
        "weights": match (a.requantize, a.requantized) {
            _ if a.packed && packed_kernel_available() => "packed",
            (false, _) => "q4_1",
            (true, Requantized::Q8_0) => "q8_0",
            (true, Requantized::TiledQ4K) => "q4k-tiled",
            (true, Requantized::TiledQ6K) => "q6k-tiled",
        },
        "kernel": (a.packed && packed_kernel_available())
            .then(|| orinari_kernels::Kernel::best().name()),
        "threads": candle_core::utils::get_num_threads(),
        "candle_pool_threads": candle_core::utils::barrier_pool().n_workers() + 1,
        "reps": a.reps,
        "load_s": round(load_s, 3),
        "rss_after_load_mib": round(rss_after_load, 1),
        "rss_end_mib": round(rss_end, 1),
        "peak_rss_mib": round(hwm, 1),
        "concurrent": concurrent,
        "peak_rss_with_concurrent_mib": round(hwm_all, 1),
        "long": long,
    });
    if let (Some(single), Some(o)) = (single, out.as_object_mut()) {
        o.extend(single);
    }
    if let Some(o) = out.as_object_mut() {
        o.insert(
            "wall_s".into(),
            round(started.elapsed().as_secs_f64(), 2).into(),
        );
        o.insert("cpu_s".into(), round(cpu_seconds(), 2).into());
    }
    writeln!(std::io::stdout(), "{out}")?;
    Ok(())
}

/// Peak resident memory while `users` sequences of about `tokens` prompt
/// tokens each run at once, on a fresh engine without the prefix cache.
async fn long_sequences(
    a: &Args,
    vocab: &orinari_models::local::Vocab,
    cfg: &LocalConfig,
    users: usize,
    tokens: usize,
) -> anyhow::Result<serde_json::Value> {
    let cfg = LocalConfig {
        max_active: users,
        queue_depth: users,
        context_size: Some(tokens + 64),
        ..cfg.clone()
    };
    let opts = EngineOptions {
        prefix_cache_mib: 0,
        requantized: a.requantized,
        packed: a.packed,
        ..EngineOptions::default()
    };
    let m = LocalModel::load_with(&cfg, &opts)?;
    let (prompt, n) = prompt_of(vocab, tokens)?;
    let (before, _) = memory_mib();
    // Resets VmHWM to the current RSS (Linux).
    std::fs::write("/proc/self/clear_refs", "5").context("resetting the peak RSS")?;
    let t = Instant::now();
    let runs = futures::future::join_all((0..users).map(|_| run(&m, prompt.clone(), 16))).await;
    for r in runs {
        r?;
    }
    let (_, peak) = memory_mib();
    m.shutdown();
    Ok(serde_json::json!({
        "users": users,
        "prompt_tokens": n,
        "rss_before_mib": round(before, 1),
        "peak_rss_mib": round(peak, 1),
        "wall_s": round(t.elapsed().as_secs_f64(), 2),
    }))
}

/// Prompt processing, generation, time to first token and turn 10 of a
/// conversation, one request at a time; as JSON fields.
async fn single_user(
    a: &Args,
    vocab: &orinari_models::local::Vocab,
    cfg: &LocalConfig,
    m: &LocalModel,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let (p200, n200) = prompt_of(vocab, 200)?;
    let (p512, n512) = prompt_of(vocab, 512)?;
    let generate_prompt = vec![Message::text(
        "user",
        "Write a long, detailed story about a dragon who learns to bake bread.",
    )];

    // Warm-up: first-use allocations, weight repacking, page faults.
    run(m, p512.clone(), 2).await?;

    let mut ttft200 = Vec::new();
    let mut pp512 = Vec::new();
    let mut gen_rate = Vec::new();
    let mut gen_tokens = Vec::new();
    for _ in 0..a.reps {
        ttft200.push(run(m, p200.clone(), 1).await?.first_event_s);
        pp512.push(run(m, p512.clone(), 1).await?.first_event_s);
        let g = run(m, generate_prompt.clone(), a.generate).await?;
        // Decoding rate: tokens after the first over the time after the first event.
        let decoded = g.completion_tokens.saturating_sub(1) as f64;
        gen_rate.push(decoded / (g.total_s - g.first_event_s).max(1e-9));
        gen_tokens.push(g.completion_tokens);
    }
    let (rss_end, hwm) = memory_mib();

    // Conversations on a second instance with the prefix cache; turn 10
    // again, cold, on the first.
    let cached = LocalModel::load_with(
        cfg,
        &EngineOptions {
            prefix_cache_mib: a.prefix_cache_mib,
            requantized: a.requantized,
            packed: a.packed,
            ..EngineOptions::default()
        },
    )?;
    run(&cached, p512.clone(), 2).await?;
    let mut turn10 = Vec::new();
    let mut turn10_cold = Vec::new();
    let mut turn10_tokens = 0;
    for rep in 0..a.reps {
        let msgs = conversation(&cached, rep + 1).await?;
        let t = run(&cached, msgs.clone(), 1).await?;
        turn10.push(t.first_event_s);
        turn10_tokens = t.prompt_tokens;
        turn10_cold.push(run(m, msgs, 1).await?.first_event_s);
    }
    let stats = cached.prefix_cache_stats();
    cached.shutdown();
    let ttft = median(ttft200);
    let pp512_s = median(pp512);
    let out = serde_json::json!({
        "pp200_tokens": n200,
        "pp200_tok_s": round(n200 as f64 / ttft, 1),
        "pp512_tokens": n512,
        "pp512_tok_s": round(n512 as f64 / pp512_s, 1),
        "ttft200_ms": round(ttft * 1e3, 1),
        "gen_tokens": gen_tokens.iter().min(),
        "gen_tok_s": round(median(gen_rate), 1),
        "prefix_cache_mib": a.prefix_cache_mib,
        "turn10_prompt_tokens": turn10_tokens,
        "turn10_ttft_ms": round(median(turn10) * 1e3, 1),
        "turn10_cold_ms": round(median(turn10_cold) * 1e3, 1),
        "prefix_cache_hits": stats.hits,
        "prefix_cache_reused_tokens": stats.reused_tokens,
        "prefix_cache_held_mib": round(stats.bytes as f64 / 1048576.0, 1),
        "rss_end_mib": round(rss_end, 1),
        "peak_rss_mib": round(hwm, 1),
    });
    Ok(match out {
        serde_json::Value::Object(o) => o,
        _ => serde_json::Map::new(),
    })
}

/// Each number of users of `--concurrent`, with and without batching
/// (alternately, on two engines loaded side by side), as JSON rows.
async fn concurrent_users(a: &Args, cfg: &LocalConfig) -> anyhow::Result<Vec<serde_json::Value>> {
    if a.concurrent.is_empty() {
        return Ok(Vec::new());
    }
    let slots = a.concurrent.iter().copied().max().unwrap_or(1);
    let cfg = LocalConfig {
        max_active: slots,
        queue_depth: slots,
        ..cfg.clone()
    };
    let mut engines = Vec::new();
    for batch in [false, true] {
        let opts = EngineOptions {
            prefix_cache_mib: 0,
            requantized: a.requantized,
            packed: a.packed,
            batch,
        };
        let m = LocalModel::load_with(&cfg, &opts)?;
        // Warm-up at full width: first-use allocations and page faults.
        concurrent_run(&m, slots, 4).await?;
        engines.push((batch, m));
    }
    let mut rows = Vec::new();
    for &users in &a.concurrent {
        for (batch, m) in &engines {
            let mut rates = Vec::new();
            let mut gaps = Vec::new();
            let mut tokens = u32::MAX;
            for _ in 0..a.reps {
                let (n, wall, g) = concurrent_run(m, users, a.generate).await?;
                rates.push(f64::from(n) / wall.max(1e-9));
                gaps.extend(g);
                tokens = tokens.min(n);
            }
            rows.push(serde_json::json!({
                "users": users,
                "batch": batch,
                "completion_tokens": tokens,
                "agg_tok_s": round(median(rates), 1),
                "itl_p50_ms": round(percentile(gaps.clone(), 50.0) * 1e3, 1),
                "itl_p99_ms": round(percentile(gaps, 99.0) * 1e3, 1),
                "largest_batch": m.largest_batch(),
            }));
        }
    }
    for (_, m) in &engines {
        m.shutdown();
    }
    Ok(rows)
}
