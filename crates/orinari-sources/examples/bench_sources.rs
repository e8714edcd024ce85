//! Files-source benchmark (bench/sources/run.sh): indexing throughput
//! through the real pipeline (files on disk → extraction → chunking →
//! tantivy), then BM25 top-50 latency and retrieval + fusion + packing
//! latency over the resulting chunks.
//!
//! The corpus is synthetic and deterministic: Markdown documents whose
//! words follow a Zipf distribution over a 30,000-word pseudo-vocabulary
//! (the shape of natural-language term frequencies), each document a title
//! and four sections; queries are 2–4 words drawn from the mid-frequency
//! band, as real questions are.
//!
//! `cargo run --release -p orinari-sources --example bench_sources -- [DOCS] [QUERIES]`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark prints and fails loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Rng, ms, percentile};
use orinari_sources::{Outcome, Setup, Sources, pack};

const SYLLABLES: [&str; 24] = [
    "ka", "lo", "mi", "ner", "sta", "vo", "ri", "dan", "tel", "po", "su", "gra", "ben", "ex",
    "qui", "hor", "zan", "fel", "mu", "tra", "cos", "lin", "dor", "ap",
];

fn vocabulary(n: usize, rng: &mut Rng) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = 1 + (rng.next() % 4) as usize;
        let w: String = (0..len)
            .map(|_| SYLLABLES[(rng.next() % SYLLABLES.len() as u64) as usize])
            .collect();
        if seen.insert(w.clone()) {
            out.push(w);
        }
    }
    out
}

/// Zipf sampler (exponent 1.07) by inverse CDF over precomputed weights.
struct Zipf(Vec<f64>);
impl Zipf {
    fn new(n: usize) -> Zipf {
        let mut acc = 0.0;
        let cdf = (1..=n)
            .map(|r| {
                acc += 1.0 / (r as f64).powf(1.07);
                acc
            })
            .collect::<Vec<_>>();
        let total = acc;
        Zipf(cdf.into_iter().map(|c| c / total).collect())
    }
    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.0.partition_point(|c| *c < u).min(self.0.len() - 1)
    }
}

fn sentence(vocab: &[String], zipf: &Zipf, rng: &mut Rng, words: usize) -> String {
    let mut s: Vec<&str> = (0..words)
        .map(|_| vocab[zipf.sample(rng)].as_str())
        .collect();
    s.dedup();
    let mut out = s.join(" ");
    out.push('.');
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let docs: usize = args.next().map_or(10_800, |a| a.parse().unwrap());
    let queries: usize = args.next().map_or(1_000, |a| a.parse().unwrap());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let vocab = vocabulary(30_000, &mut rng);
    let zipf = Zipf::new(vocab.len());

    let folder = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut bytes = 0usize;
    for d in 0..docs {
        let dir = folder.path().join(format!("d{:03}", d % 500));
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = format!("# {}\n\n", sentence(&vocab, &zipf, &mut rng, 4));
        for s in 0..4 {
            text.push_str(&format!(
                "## Section {s}: {}\n\n",
                sentence(&vocab, &zipf, &mut rng, 3)
            ));
            for _ in 0..2 {
                for _ in 0..4 {
                    let n = 8 + (rng.next() % 10) as usize;
                    text.push_str(&sentence(&vocab, &zipf, &mut rng, n));
                    text.push(' ');
                }
                text.push_str("\n\n");
            }
        }
        bytes += text.len();
        std::fs::write(dir.join(format!("doc{d}.md")), text).unwrap();
    }
    println!(
        "corpus: {docs} Markdown documents, {:.1} MB, vocabulary {}",
        bytes as f64 / 1e6,
        vocab.len()
    );

    let toml = format!(
        "[[sources]]\nname = \"bench\"\nkind = \"files\"\npath = {:?}\nchunk_tokens = 128\nrescan_interval = \"1h\"\n",
        folder.path().display().to_string()
    );
    let cfg = orinari_config::parse(&toml, "bench.toml", []).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let (sources, indexer) = Sources::new(&cfg.sources, Setup::new(data.path()));
    // Indexed when the whole folder has been committed.
    loop {
        let st = &sources.status()[0];
        if st.documents == Some(docs as u64) && st.last_sync.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let indexing = start.elapsed();
    let st = &sources.status()[0];
    let chunks = st.chunks.unwrap();
    println!(
        "indexing: {docs} documents, {chunks} chunks in {:.1} s = {:.0} documents/s, {:.0} chunks/s; index {:.1} MB",
        indexing.as_secs_f64(),
        docs as f64 / indexing.as_secs_f64(),
        chunks as f64 / indexing.as_secs_f64(),
        st.index_bytes.unwrap() as f64 / 1e6
    );

    // Queries: 2-4 words from ranks 50..5000 (neither stop-word-like nor unseen).
    let qs: Vec<String> = (0..queries)
        .map(|_| {
            let n = 2 + (rng.next() % 3) as usize;
            (0..n)
                .map(|_| vocab[50 + (rng.next() % 4950) as usize].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let count = |s: &str| orinari_sources::approximate_tokens(s);
    runtime.block_on(async {
        // Warm the page cache and the searcher.
        for q in qs.iter().take(50) {
            sources.retrieve(&["bench"], q, 50, Duration::from_secs(5)).await;
        }
        let mut search = Vec::with_capacity(qs.len());
        let mut full = Vec::with_capacity(qs.len());
        let mut found = 0usize;
        for q in &qs {
            let t = Instant::now();
            let r = sources.retrieve(&["bench"], q, 50, Duration::from_secs(5)).await;
            search.push(t.elapsed());
            assert_eq!(r.outcomes[0].outcome, Outcome::Ok);
            found += r.hits.len();
            let packed = pack(&r.hits, 1500, 8, &count);
            std::hint::black_box(packed);
            full.push(t.elapsed());
        }
        search.sort();
        full.sort();
        println!(
            "BM25 top-50 via Sources::retrieve over {chunks} chunks, {} queries (mean {:.1} hits): p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            qs.len(),
            found as f64 / qs.len() as f64,
            ms(percentile(&search, 0.50)),
            ms(percentile(&search, 0.95)),
            ms(percentile(&search, 0.99)),
            ms(*search.last().unwrap())
        );
        println!(
            "retrieve + fuse + pack (1,500-token budget): p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
            ms(percentile(&full, 0.50)),
            ms(percentile(&full, 0.95)),
            ms(percentile(&full, 0.99))
        );
    });
    println!(
        "per-query rebuild (Open WebUI style) would cost the indexing time on every question: {:.1} s",
        indexing.as_secs_f64()
    );
    indexer.shutdown();
}
