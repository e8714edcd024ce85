//! Speed and accuracy of the embedded embedding model (BENCHMARKS.md,
//! `bash bench/embeddings/run.sh`): throughput in texts/s at batch 32, the
//! latency of one short text (p50/p95/p99), and the vectors of a text file
//! written out for `bench/embeddings/reference.py` to compare.
//!
//! `cargo run -p orinari-embed --example bench_embed -- TEXTS.json OUT.json`
#![allow(clippy::print_stdout, reason = "a benchmark prints its results")]

use std::time::{Duration, Instant};

use orinari_embed::{BATCH, Encoder, Input, Precision, default_model_dir};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [texts, out] = args.as_slice() else {
        return Err("usage: bench_embed TEXTS.json OUT.json".into());
    };
    let texts: Vec<String> = serde_json::from_str(&std::fs::read_to_string(texts)?)?;
    let started = Instant::now();
    let encoder = Encoder::load(&default_model_dir(), Precision::F32)?;
    println!("load: {:.0} ms", started.elapsed().as_secs_f64() * 1000.0);

    // Accuracy: each text alone, written for the reference to compare.
    let vectors: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| {
            encoder
                .embed(&[Input::Text(t.clone())])
                .map(|e| e.vectors[0].clone())
        })
        .collect::<Result<_, _>>()?;
    std::fs::write(out, serde_json::to_string(&vectors)?)?;

    // Throughput: the texts under the 256-token cap, cycled into batches of 32.
    let short: Vec<&String> = texts.iter().filter(|t| t.len() < 1000).collect();
    let batch: Vec<Input> = (0..BATCH)
        .map(|i| Input::Text(short[i % short.len()].clone()))
        .collect();
    let tokens = encoder.embed(&batch)?.tokens;
    let rounds = 20;
    let t0 = Instant::now();
    for _ in 0..rounds {
        encoder.embed(&batch)?;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    println!(
        "batch {BATCH} ({:.1} tokens/text): {:.0} texts/s ({rounds} batches in {elapsed:.2} s)",
        f64::from(tokens) / BATCH as f64,
        (rounds * BATCH) as f64 / elapsed
    );

    // Latency of one short text.
    let one = [Input::Text(
        "How do I rotate the API keys of my server?".into(),
    )];
    for _ in 0..10 {
        encoder.embed(&one)?;
    }
    let mut times: Vec<Duration> = (0..300)
        .map(|_| {
            let t = Instant::now();
            encoder.embed(&one).map(|_| t.elapsed())
        })
        .collect::<Result<_, _>>()?;
    times.sort();
    println!(
        "one short text (12 tokens), 300 runs: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        percentile(&times, 0.99)
    );
    Ok(())
}
