//! Dense retrieval benchmark (bench/sources/dense.sh), with the real model
//! (all-MiniLM-L6-v2, `make model`):
//!
//! 1. query embedding latency (the encoder alone, one short query at a time);
//! 2. indexing throughput of the dense side: a `retrieval = "dense"` files
//!    source over English-like documents, chunks embedded per second from
//!    the model's load to the last vector (BM25 indexing is not counted);
//! 3. the exact dense top-50 over 100k unit vectors (the scan alone);
//! 4. hybrid retrieval through `Sources::retrieve` over the ~100k-chunk
//!    corpus of `bench_sources` (query embedding, BM25 top-50, dense top-50,
//!    chunk reads, fusion): its vectors are seeded into the cache as random
//!    unit vectors (embedding 100k chunks here would take most of an hour;
//!    the scan costs the same whatever the vectors hold), then a hybrid
//!    source starts on that cache and embeds nothing.
//!
//! `cargo run -p orinari-sources --example bench_dense -- [DOCS] [QUERIES] [EMBED_DOCS]`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark prints and fails loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Rng, ms, percentile};
use orinari_embed::{DIMENSIONS, Input};
use orinari_sources::{Outcome, Setup, Sources};

/// A random unit vector of the embedding's width.
fn vector(rng: &mut Rng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIMENSIONS).map(|_| rng.centered()).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// Common English words: queries and documents that tokenize as real text does.
const WORDS: &[&str] = &[
    "account",
    "address",
    "after",
    "answer",
    "apply",
    "area",
    "backup",
    "balance",
    "before",
    "billing",
    "board",
    "budget",
    "build",
    "cache",
    "change",
    "check",
    "client",
    "cluster",
    "company",
    "config",
    "contract",
    "cost",
    "customer",
    "data",
    "database",
    "deadline",
    "delete",
    "deploy",
    "design",
    "device",
    "disk",
    "document",
    "error",
    "event",
    "expense",
    "export",
    "file",
    "folder",
    "form",
    "guide",
    "holiday",
    "import",
    "incident",
    "install",
    "invoice",
    "issue",
    "key",
    "laptop",
    "leave",
    "license",
    "limit",
    "log",
    "manager",
    "meeting",
    "memory",
    "message",
    "migrate",
    "model",
    "monitor",
    "network",
    "office",
    "onboarding",
    "order",
    "owner",
    "password",
    "payment",
    "payroll",
    "permission",
    "policy",
    "printer",
    "privacy",
    "process",
    "project",
    "quota",
    "refund",
    "release",
    "remote",
    "report",
    "request",
    "reset",
    "restore",
    "review",
    "role",
    "salary",
    "schedule",
    "search",
    "secure",
    "server",
    "service",
    "setting",
    "storage",
    "support",
    "team",
    "ticket",
    "token",
    "training",
    "travel",
    "update",
    "upgrade",
    "user",
    "vacation",
    "vendor",
    "version",
    "wiki",
    "window",
    "workflow",
];

fn text(rng: &mut Rng, words: usize) -> String {
    (0..words)
        .map(|_| WORDS[(rng.next() % WORDS.len() as u64) as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

fn report(what: &str, mut t: Vec<Duration>) {
    t.sort();
    println!(
        "{what}: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} runs)",
        ms(percentile(&t, 0.50)),
        ms(percentile(&t, 0.95)),
        ms(percentile(&t, 0.99)),
        ms(*t.last().unwrap()),
        t.len()
    );
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(3600), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let docs: usize = args.next().map_or(10_800, |a| a.parse().unwrap());
    let queries: usize = args.next().map_or(1_000, |a| a.parse().unwrap());
    let embed_docs: usize = args.next().map_or(100, |a| a.parse().unwrap());
    let model = orinari_embed::default_model_dir();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);

    // 1. Query embedding.
    let loaded = Instant::now();
    let encoder = orinari_embed::shared(&model, orinari_embed::Precision::F32)
        .expect("run scripts/fetch-embed-model.sh first");
    println!(
        "model {} loaded in {:.0} ms",
        encoder.id(),
        ms(loaded.elapsed())
    );
    let qs: Vec<String> = (0..queries)
        .map(|_| {
            let n = 4 + (rng.next() % 9) as usize;
            text(&mut rng, n)
        })
        .collect();
    for q in qs.iter().take(20) {
        encoder.embed(&[Input::Text(q.clone())]).unwrap();
    }
    let mut t = Vec::with_capacity(qs.len());
    for q in &qs {
        let s = Instant::now();
        std::hint::black_box(encoder.embed(&[Input::Text(q.clone())]).unwrap());
        t.push(s.elapsed());
    }
    report("query embedding (4-12 words)", t);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // 2. Embedding throughput of the dense indexer.
    {
        let folder = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        for d in 0..embed_docs {
            let mut body = format!("# {}\n\n", text(&mut rng, 5));
            for s in 0..4 {
                body.push_str(&format!("## Section {s} {}\n\n", text(&mut rng, 3)));
                for _ in 0..2 {
                    body.push_str(&text(&mut rng, 40));
                    body.push_str(".\n\n");
                }
            }
            std::fs::write(folder.path().join(format!("doc{d}.md")), body).unwrap();
        }
        let toml = format!(
            "[[sources]]\nname = \"embed\"\nkind = \"files\"\npath = {:?}\nchunk_tokens = 128\nrescan_interval = \"1h\"\nretrieval = \"dense\"\n",
            folder.path().display().to_string()
        );
        let cfg = orinari_config::parse(&toml, "bench.toml", []).unwrap();
        let start = Instant::now();
        let (sources, indexer) = Sources::new(&cfg.sources, Setup::new(data.path()));
        wait_for("dense indexing", || {
            let st = &sources.status()[0];
            let d = st.dense.as_ref().unwrap();
            st.last_sync.is_some()
                && d.pending == 0
                && d.vectors > 0
                && d.vectors == st.chunks.unwrap_or(0)
        });
        let took = start.elapsed();
        let st = &sources.status()[0];
        let d = st.dense.as_ref().unwrap();
        println!(
            "dense indexing: {embed_docs} documents, {} chunks embedded in {:.1} s = {:.1} chunks/s (BM25 indexing and model load included); cache {:.1} MB",
            d.embedded,
            took.as_secs_f64(),
            d.embedded as f64 / took.as_secs_f64(),
            d.cache_bytes as f64 / 1e6
        );
        indexer.shutdown();
    }

    // 3. The scan alone over 100k vectors.
    let n = 100_000;
    let keys: Vec<u64> = (0..n as u64).collect();
    let mut data = Vec::with_capacity(n * DIMENSIONS);
    for _ in 0..n {
        data.extend(vector(&mut rng));
    }
    let mut t = Vec::with_capacity(queries);
    for _ in 0..queries {
        let q = vector(&mut rng);
        let s = Instant::now();
        std::hint::black_box(orinari_sources::bench::top_k(&keys, &data, &q, 50));
        t.push(s.elapsed());
    }
    report("dense top-50 scan over 100,000 vectors", t);
    drop(data);

    // 4. Hybrid retrieval over the bench_sources corpus with seeded vectors.
    let folder = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    for d in 0..docs {
        let dir = folder.path().join(format!("d{:03}", d % 500));
        std::fs::create_dir_all(&dir).unwrap();
        let mut body = format!("# {}\n\n", text(&mut rng, 4));
        for s in 0..4 {
            body.push_str(&format!("## Section {s}: {}\n\n", text(&mut rng, 3)));
            for _ in 0..2 {
                for _ in 0..4 {
                    let w = 8 + (rng.next() % 10) as usize;
                    body.push_str(&text(&mut rng, w));
                    body.push_str(". ");
                }
                body.push_str("\n\n");
            }
        }
        std::fs::write(dir.join(format!("doc{d}.md")), body).unwrap();
    }
    let config = |retrieval: &str| {
        let toml = format!(
            "[[sources]]\nname = \"bench\"\nkind = \"files\"\npath = {:?}\nchunk_tokens = 128\nrescan_interval = \"1h\"\nretrieval = \"{retrieval}\"\ntimeout_ms = 5000\n",
            folder.path().display().to_string()
        );
        orinari_config::parse(&toml, "bench.toml", [])
            .unwrap()
            .sources
    };
    let (sources, indexer) = Sources::new(&config("bm25"), Setup::new(data.path()));
    wait_for("BM25 indexing", || {
        let st = &sources.status()[0];
        st.documents == Some(docs as u64) && st.last_sync.is_some()
    });
    indexer.shutdown();
    drop(sources);
    let seeded = orinari_sources::bench::seed_vectors(
        &data.path().join("sources/bench"),
        encoder.id(),
        &mut |_| vector(&mut rng),
    )
    .unwrap();
    let (sources, indexer) = Sources::new(&config("hybrid"), Setup::new(data.path()));
    wait_for("cached vectors loaded", || {
        let st = &sources.status()[0];
        let d = st.dense.as_ref().unwrap();
        d.ready && d.pending == 0 && d.vectors == seeded as u64
    });
    let st = &sources.status()[0];
    assert_eq!(st.dense.as_ref().unwrap().embedded, 0);
    println!(
        "hybrid source: {} chunks, {seeded} vectors from the cache (none embedded)",
        st.chunks.unwrap()
    );
    let qs: Vec<String> = (0..queries)
        .map(|_| {
            let n = 2 + (rng.next() % 3) as usize;
            text(&mut rng, n)
        })
        .collect();
    runtime.block_on(async {
        for q in qs.iter().take(20) {
            sources.retrieve(&["bench"], q, 50, Duration::from_secs(5)).await;
        }
        let mut t = Vec::with_capacity(qs.len());
        let mut hits = 0;
        for q in &qs {
            let s = Instant::now();
            let r = sources.retrieve(&["bench"], q, 50, Duration::from_secs(5)).await;
            t.push(s.elapsed());
            assert_eq!(r.outcomes[0].outcome, Outcome::Ok);
            assert_eq!(r.outcomes[0].note, None, "{:?}", r.outcomes[0]);
            hits += r.hits.len();
        }
        println!("hybrid mean hits {:.1}", hits as f64 / qs.len() as f64);
        report(
            "hybrid retrieval (query embedding + BM25 top-50 + dense top-50 + fusion) via Sources::retrieve",
            t,
        );
    });
    indexer.shutdown();
}
