//! Dense and hybrid retrieval of a files source with the real model
//! (all-MiniLM-L6-v2, `make model`), the real index and the real vector
//! cache on disk: a paraphrase sharing no word with its document is found
//! by vectors and not by BM25; vectors survive a restart without being
//! computed again; an edited file's old vectors go; another model's id
//! makes everything embedded again; a source whose model is missing
//! answers with BM25 and says so.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use orinari_sources::{DenseStatus, Outcome, Retrieval, Setup, Sources};

const BUDGET: Duration = Duration::from_secs(10);
/// A record of the vector cache: a key and 384 f32.
const RECORD: u64 = 8 + 4 * 384;

fn model_dir() -> PathBuf {
    let dir = orinari_embed::default_model_dir();
    assert!(
        orinari_embed::FILES.iter().all(|f| dir.join(f).is_file()),
        "run scripts/fetch-embed-model.sh (make model) first"
    );
    dir
}

/// One files source per `(name, retrieval)` over `folder`.
fn config(folder: &Path, sources: &[(&str, &str)]) -> Vec<orinari_config::sources::SourceConfig> {
    let text: String = sources
        .iter()
        .map(|(name, retrieval)| {
            format!(
                "[[sources]]\nname = \"{name}\"\nkind = \"files\"\npath = {:?}\nretrieval = \"{retrieval}\"\nrescan_interval = \"1h\"\ntimeout_ms = 10000\n",
                folder.display().to_string()
            )
        })
        .collect();
    orinari_config::parse(&text, "test.toml", [])
        .unwrap()
        .sources
}

fn start(
    folder: &Path,
    data: &Path,
    model: &Path,
    sources: &[(&str, &str)],
) -> (Sources, orinari_sources::Indexer) {
    Sources::new(
        &config(folder, sources),
        Setup {
            embed_model: model.to_path_buf(),
            ..Setup::new(data)
        },
    )
}

async fn ask(s: &Sources, name: &str, q: &str) -> Retrieval {
    let r = s.retrieve(&[name], q, 5, BUDGET).await;
    assert_eq!(r.outcomes[0].outcome, Outcome::Ok, "{:?}", r.outcomes);
    r
}

fn documents(r: &Retrieval) -> Vec<String> {
    r.hits.iter().map(|h| h.hit.document.clone()).collect()
}

fn dense(s: &Sources, name: &str) -> (DenseStatus, u64) {
    let st = s.status().into_iter().find(|x| x.name == name).unwrap();
    (st.dense.unwrap(), st.chunks.unwrap_or(0))
}

/// Wait until every chunk of `name` has its vector and none is pending.
async fn embedded(s: &Sources, name: &str, chunks: u64) -> DenseStatus {
    let start = Instant::now();
    loop {
        let (d, c) = dense(s, name);
        assert!(d.error.is_none(), "{d:?}");
        if d.ready && d.pending == 0 && c == chunks && d.vectors == chunks {
            return d;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{name} not embedded: {d:?}, {c} chunks"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write_corpus(d: &Path) {
    std::fs::write(
        d.join("cats.md"),
        "# Feline companions\n\nFeline companions need fresh water, a clean litter box and regular veterinary checkups.\n",
    )
    .unwrap();
    std::fs::write(
        d.join("billing.md"),
        "# Invoices\n\nInvoices are emailed monthly; payment is due within thirty days.\n",
    )
    .unwrap();
    std::fs::write(
        d.join("engine.md"),
        "# Engine oil\n\nChange the engine oil every ten thousand kilometres and check the tyre pressure.\n",
    )
    .unwrap();
    std::fs::write(
        d.join("garden.md"),
        "# Tomatoes\n\nTomatoes want full sun, deep watering and stakes once the stems grow tall.\n",
    )
    .unwrap();
}

/// No word (nor stem) in common with cats.md.
const PARAPHRASE: &str = "how should I look after my kitten";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paraphrase_is_found_by_vectors_not_by_bm25() {
    let docs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    write_corpus(docs.path());
    let (sources, indexer) = start(
        docs.path(),
        data.path(),
        &model_dir(),
        &[("words", "bm25"), ("vectors", "dense"), ("both", "hybrid")],
    );
    assert!(sources.status()[0].dense.is_none(), "bm25 keeps no vectors");
    embedded(&sources, "vectors", 4).await;
    embedded(&sources, "both", 4).await;

    let bm25 = ask(&sources, "words", PARAPHRASE).await;
    assert!(
        !documents(&bm25).contains(&"cats.md".to_string()),
        "{:?}",
        documents(&bm25)
    );
    let vectors = ask(&sources, "vectors", PARAPHRASE).await;
    assert_eq!(
        documents(&vectors)[0],
        "cats.md",
        "{:?}",
        documents(&vectors)
    );
    assert_eq!(vectors.outcomes[0].note, None);
    let both = ask(&sources, "both", PARAPHRASE).await;
    assert_eq!(documents(&both)[0], "cats.md", "{:?}", documents(&both));
    // Hybrid keeps what BM25 alone finds: an exact term.
    let exact = ask(&sources, "both", "thirty days payment").await;
    assert_eq!(documents(&exact)[0], "billing.md");
    // Cosine scores for dense hits.
    assert!(vectors.hits[0].hit.score > 0.3 && vectors.hits[0].hit.score <= 1.0001);
    tokio::task::spawn_blocking(move || indexer.shutdown())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_survive_restarts_follow_edits_and_change_with_the_model() {
    let docs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    write_corpus(docs.path());
    let model = model_dir();
    let cache = data.path().join("sources/kb/vectors.bin");
    let cache_size =
        |d: &DenseStatus| 16 + d.model.as_ref().unwrap().len() as u64 + d.vectors * RECORD;

    // First start: every chunk embedded once.
    let (sources, indexer) = start(docs.path(), data.path(), &model, &[("kb", "hybrid")]);
    let first = embedded(&sources, "kb", 4).await;
    assert_eq!(first.embedded, 4);
    let model_id = first.model.clone().unwrap();
    assert!(model_id.starts_with("all-MiniLM-L6-v2@"), "{model_id}");

    // An edit: the new chunk is embedded, the old one's vector goes.
    std::fs::write(
        docs.path().join("cats.md"),
        "# Dogs\n\nPuppies must be walked twice daily and trained with treats.\n",
    )
    .unwrap();
    let start_edit = Instant::now();
    loop {
        let (d, _) = dense(&sources, "kb");
        if d.embedded == 5 && d.pending == 0 {
            break;
        }
        assert!(start_edit.elapsed() < Duration::from_secs(30), "{d:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after_edit = embedded(&sources, "kb", 4).await;
    assert_eq!(
        after_edit.vectors, 4,
        "the edited file's old vector is gone"
    );
    let r = ask(&sources, "kb", "caring for a young canine").await;
    assert_eq!(documents(&r)[0], "cats.md");
    assert!(!r.hits.iter().any(|h| h.hit.text.contains("Feline")));
    tokio::task::spawn_blocking(move || indexer.shutdown())
        .await
        .unwrap();
    // Shut down with a stale record: the cache holds exactly the live vectors.
    assert_eq!(
        std::fs::metadata(&cache).unwrap().len(),
        cache_size(&after_edit)
    );

    // Second start: nothing is embedded again.
    let (sources, indexer) = start(docs.path(), data.path(), &model, &[("kb", "hybrid")]);
    let again = embedded(&sources, "kb", 4).await;
    assert_eq!(again.embedded, 0, "cached vectors are not computed again");
    assert_eq!(again.model.as_deref(), Some(model_id.as_str()));
    let r = ask(
        &sources,
        "kb",
        PARAPHRASE.replace("kitten", "puppy").as_str(),
    )
    .await;
    assert_eq!(documents(&r)[0], "cats.md");
    // A reindex reads every file again, and embeds nothing.
    assert!(indexer.reindex("kb"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reindexed = embedded(&sources, "kb", 4).await;
    assert_eq!(reindexed.embedded, 0);
    tokio::task::spawn_blocking(move || indexer.shutdown())
        .await
        .unwrap();

    // Another model (the same weights, another configuration file: another
    // id): every chunk is embedded again, and the old cache is replaced.
    let other = tempfile::tempdir().unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::os::unix::fs::symlink(model.join(f), other.path().join(f)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap();
    config["orinari_test"] = serde_json::json!("another model id");
    std::fs::write(other.path().join("config.json"), config.to_string()).unwrap();
    let (sources, indexer) = start(docs.path(), data.path(), other.path(), &[("kb", "hybrid")]);
    let changed = embedded(&sources, "kb", 4).await;
    assert_eq!(changed.embedded, 4, "a new model embeds everything");
    assert_ne!(changed.model, Some(model_id));
    tokio::task::spawn_blocking(move || indexer.shutdown())
        .await
        .unwrap();
    assert_eq!(
        std::fs::metadata(&cache).unwrap().len(),
        cache_size(&changed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_model_a_source_answers_with_bm25_and_says_so() {
    let docs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    write_corpus(docs.path());
    let missing = data.path().join("no-model-here");
    let (sources, indexer) = start(docs.path(), data.path(), &missing, &[("kb", "dense")]);
    let start_wait = Instant::now();
    loop {
        let r = sources.retrieve(&["kb"], "engine oil", 5, BUDGET).await;
        if !r.hits.is_empty() {
            assert_eq!(r.outcomes[0].outcome, Outcome::Ok);
            assert_eq!(r.hits[0].hit.document, "engine.md");
            let note = r.outcomes[0].note.clone().unwrap();
            assert!(note.contains("BM25 only"), "{note}");
            break;
        }
        assert!(start_wait.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start_wait = Instant::now();
    loop {
        let (d, _) = dense(&sources, "kb");
        if let Some(e) = d.error {
            assert!(e.contains("embedding model"), "{e}");
            assert!(!d.ready);
            break;
        }
        assert!(start_wait.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The status's last search carries the remark too.
    let st = &sources.status()[0];
    assert!(st.last_search.as_ref().unwrap().outcome.note.is_some());
    tokio::task::spawn_blocking(move || indexer.shutdown())
        .await
        .unwrap();
}
