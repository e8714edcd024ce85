//! Latency of one encoder call by length, f32 against int8: `encoder_latency
//! [RUNS]` embeds one sequence of 16, 64, 128, 192 and 254 tokens RUNS
//! times (30) in each precision, alternately, after 3 warm-up calls, and
//! prints the load times and resident memory each precision adds (the
//! second sharing the first's word-embedding table, as in a server using
//! both), p50 / p99 per length and the cosine distance
//! between the two precisions' vectors (BENCHMARKS.md, "The guard's
//! encoder in int8").
#![allow(clippy::print_stdout, reason = "a benchmark prints its results")]

use std::time::Instant;

use orinari_embed::{Precision, default_model_dir};

fn percentiles(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}

/// This process's resident memory (Linux; NaN elsewhere).
fn resident_mib() -> f64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok());
    pages.map_or(f64::NAN, |p| p * 4096.0 / (1024.0 * 1024.0))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::args().nth(1).map_or(Ok(30), |a| a.parse())?;
    let dir = default_model_dir();
    let resident = [resident_mib()];
    let started = Instant::now();
    // As a server using both loads them: the second shares the first's
    // word-embedding table.
    let f32 = orinari_embed::shared(&dir, Precision::F32)?;
    let loaded = started.elapsed();
    let resident = [resident[0], resident_mib()];
    let int8 = orinari_embed::shared(&dir, Precision::Int8)?;
    println!(
        "load: f32 {:.0} ms, int8 beside it {:.0} ms",
        loaded.as_secs_f64() * 1000.0,
        (started.elapsed() - loaded).as_secs_f64() * 1000.0
    );
    println!(
        "resident memory added: f32 {:.0} MiB, int8 beside it {:.0} MiB",
        resident[1] - resident[0],
        resident_mib() - resident[1]
    );
    println!("tokens   f32 p50 / p99 (ms)   int8 p50 / p99 (ms)   cosine distance");
    for len in [16usize, 64, 128, 192, 254] {
        // [CLS], ordinary word pieces, [SEP].
        let mut ids = vec![101u32];
        ids.extend((0..len - 2).map(|i| 2000 + (i as u32 * 37) % 20000));
        ids.push(102);
        let one = [ids];
        for _ in 0..3 {
            f32.embed_tokens(&one)?;
            int8.embed_tokens(&one)?;
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            for (encoder, times) in [(&f32, &mut a), (&int8, &mut b)] {
                let t = Instant::now();
                encoder.embed_tokens(&one)?;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let x = f32.embed_tokens(&one)?.remove(0);
        let y = int8.embed_tokens(&one)?.remove(0);
        let cosine: f32 = x.iter().zip(&y).map(|(p, q)| p * q).sum();
        let ((a50, a99), (b50, b99)) = (percentiles(a), percentiles(b));
        println!(
            "{len:>6}   {a50:7.2} / {a99:7.2}      {b50:7.2} / {b99:7.2}       {:.5}",
            1.0 - cosine
        );
    }
    Ok(())
}
