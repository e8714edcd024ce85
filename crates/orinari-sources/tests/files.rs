//! A files source end to end: a real folder, the real index on disk, the
//! real watcher. Edits are searchable within 5 s, deletions disappear,
//! changes made while stopped are found at the next start.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::path::Path;
use std::time::{Duration, Instant};

use orinari_sources::{Outcome, Retrieval, Setup, Sources};

const BUDGET: Duration = Duration::from_secs(2);

fn config(folder: &Path, rescan: &str) -> Vec<orinari_config::sources::SourceConfig> {
    let text = format!(
        "[[sources]]\nname = \"handbook\"\nkind = \"files\"\npath = {:?}\nchunk_tokens = 16\nrescan_interval = \"{rescan}\"\n",
        folder.display().to_string()
    );
    orinari_config::parse(&text, "test.toml", [])
        .unwrap()
        .sources
}

async fn ask(s: &Sources, q: &str) -> Retrieval {
    let r = s.retrieve(&["handbook"], q, 10, BUDGET).await;
    assert_eq!(r.outcomes[0].outcome, Outcome::Ok, "{:?}", r.outcomes);
    r
}

/// Poll until `check` holds, for at most `within`; returns how long it took.
async fn eventually(
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within {within:?}");
}

fn documents(r: &Retrieval) -> Vec<String> {
    r.hits.iter().map(|h| h.hit.document.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_is_indexed_and_follows_edits_and_deletions() {
    let docs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let d = docs.path();
    std::fs::create_dir(d.join("guide")).unwrap();
    std::fs::write(
        d.join("guide/setup.md"),
        "# Setup\n\nInstall the frobnicator with the package manager.\n\n## Tuning\n\nSet the wobble factor to seven for best results.\n",
    )
    .unwrap();
    std::fs::write(
        d.join("notes.txt"),
        "Lunch is served at noon in the atrium.",
    )
    .unwrap();
    std::fs::write(
        d.join("billing.html"),
        "<html><head><title>Billing FAQ</title></head><body><h1>Invoices</h1><p>Invoices are emailed monthly.</p></body></html>",
    )
    .unwrap();
    std::fs::write(d.join(".draft.md"), "frobnicator secrets").unwrap();
    std::fs::write(d.join("image.png"), "frobnicator").unwrap();

    let (sources, indexer) = Sources::new(&config(d, "1h"), Setup::new(data.path()));
    eventually(Duration::from_secs(10), "first index", async || {
        !ask(&sources, "lunch").await.hits.is_empty()
    })
    .await;

    // Stemming: "installing frobnicators" finds "Install the frobnicator".
    let r = ask(&sources, "installing frobnicators?").await;
    assert_eq!(
        documents(&r),
        ["guide/setup.md"],
        "hidden and unsupported files are not indexed"
    );
    assert_eq!(r.hits[0].hit.title, "Setup");
    assert_eq!(r.hits[0].hit.locator, "Setup");
    let r = ask(&sources, "wobble factor").await;
    assert_eq!(r.hits[0].hit.locator, "Setup › Tuning");
    let r = ask(&sources, "when are invoices sent").await;
    assert_eq!(r.hits[0].hit.document, "billing.html");
    assert_eq!(r.hits[0].hit.title, "Billing FAQ");
    assert_eq!(r.hits[0].hit.locator, "Invoices");
    // Query syntax is just text here.
    assert!(ask(&sources, "title:\"((AND OR NOT*").await.hits.is_empty());

    let status = &sources.status()[0];
    assert_eq!(
        (status.kind, status.documents, status.error.as_deref()),
        ("files", Some(3), None)
    );
    assert!(status.chunks.unwrap() >= 4 && status.index_bytes.unwrap() > 0);
    assert!(status.last_sync.is_some());

    // An edit is searchable within 5 s, and the old text is gone.
    std::fs::write(
        d.join("guide/setup.md"),
        "# Setup\n\nBoard the zeppelin at gate nine.\n",
    )
    .unwrap();
    let took = eventually(Duration::from_secs(5), "edit searchable", async || {
        documents(&ask(&sources, "zeppelin").await) == ["guide/setup.md"]
    })
    .await;
    assert!(ask(&sources, "frobnicator").await.hits.is_empty());
    eprintln!("edit searchable after {took:?}");

    // A new file in a new folder, and a deletion.
    std::fs::create_dir(d.join("more")).unwrap();
    std::fs::write(d.join("more/new.md"), "Quokkas are friendly.").unwrap();
    std::fs::remove_file(d.join("notes.txt")).unwrap();
    eventually(
        Duration::from_secs(5),
        "new file and deletion",
        async || {
            documents(&ask(&sources, "quokka").await) == ["more/new.md"]
                && ask(&sources, "lunch").await.hits.is_empty()
        },
    )
    .await;

    // A removed folder takes its files with it.
    std::fs::remove_dir_all(d.join("more")).unwrap();
    eventually(Duration::from_secs(5), "folder removal", async || {
        ask(&sources, "quokka").await.hits.is_empty()
    })
    .await;
    eventually(Duration::from_secs(2), "counts", async || {
        sources.status()[0].documents == Some(2)
    })
    .await;
    tokio::task::spawn_blocking(move || indexer.shutdown())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_stopped_are_found_at_the_next_start() {
    let docs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let d = docs.path();
    std::fs::write(d.join("a.md"), "Alpacas graze.").unwrap();
    std::fs::write(d.join("b.md"), "Bison roam.").unwrap();
    let cfg = config(d, "1h");
    {
        let (sources, indexer) = Sources::new(&cfg, Setup::new(data.path()));
        eventually(Duration::from_secs(10), "first index", async || {
            ask(&sources, "bison").await.hits.len() == 1
        })
        .await;
        tokio::task::spawn_blocking(move || indexer.shutdown())
            .await
            .unwrap();
    }
    std::fs::remove_file(d.join("b.md")).unwrap();
    std::fs::write(d.join("a.md"), "Alpacas hum.").unwrap();
    std::fs::write(d.join("c.md"), "Camels spit.").unwrap();
    let (sources, indexer) = Sources::new(&cfg, Setup::new(data.path()));
    // The index from before is searchable at once (it was kept on disk).
    assert_eq!(ask(&sources, "alpaca").await.hits.len(), 1);
    eventually(Duration::from_secs(10), "resync", async || {
        ask(&sources, "camel").await.hits.len() == 1
            && ask(&sources, "bison").await.hits.is_empty()
            && ask(&sources, "hum").await.hits.len() == 1
    })
    .await;
    assert!(indexer.reindex("handbook"));
    assert!(!indexer.reindex("nope"));
    // A reindex replaces chunks file by file: searches keep answering.
    for _ in 0..10 {
        assert_eq!(ask(&sources, "camel").await.hits.len(), 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually(Duration::from_secs(10), "reindex", async || {
        ask(&sources, "camel").await.hits.len() == 1 && sources.status()[0].documents == Some(2)
    })
    .await;
    tokio::task::spawn_blocking(move || indexer.shutdown())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_folder_is_an_error_in_status_not_a_failure() {
    let data = tempfile::tempdir().unwrap();
    let (sources, indexer) = Sources::new(
        &config(Path::new("/nonexistent/orinari-docs"), "1h"),
        Setup::new(data.path()),
    );
    eventually(Duration::from_secs(5), "error reported", async || {
        sources.status()[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("not there"))
    })
    .await;
    let r = sources.retrieve(&["handbook"], "anything", 5, BUDGET).await;
    assert_eq!(r.outcomes[0].outcome, Outcome::Ok);
    assert!(r.hits.is_empty());
    tokio::task::spawn_blocking(move || indexer.shutdown())
        .await
        .unwrap();
}

/// A one-page PDF with one line of text in a standard font.
fn tiny_pdf(line: &str) -> Vec<u8> {
    let content = format!("BT /F1 12 Tf 72 720 Td ({line}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_string(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdf_pages_are_indexed_and_a_broken_pdf_is_reported() {
    let docs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        docs.path().join("report.pdf"),
        tiny_pdf("Quarterly revenue grew strongly"),
    )
    .unwrap();
    std::fs::write(docs.path().join("broken.pdf"), b"%PDF-1.4 not really").unwrap();
    let (sources, indexer) = Sources::new(&config(docs.path(), "1h"), Setup::new(data.path()));
    eventually(Duration::from_secs(10), "pdf indexed", async || {
        !ask(&sources, "revenue").await.hits.is_empty()
    })
    .await;
    let r = ask(&sources, "quarterly revenue").await;
    assert_eq!(r.hits[0].hit.document, "report.pdf");
    assert_eq!(r.hits[0].hit.locator, "page 1");
    let status = &sources.status()[0];
    assert_eq!((status.documents, status.failed_documents), (Some(1), 1));
    tokio::task::spawn_blocking(move || indexer.shutdown())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_on_the_same_index_takes_over_when_the_first_stops() {
    let docs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let d = docs.path();
    std::fs::write(d.join("a.md"), "Alpacas graze.").unwrap();
    let cfg = config(d, "1h");
    let (first, first_indexer) = Sources::new(&cfg, Setup::new(data.path()));
    eventually(Duration::from_secs(10), "first index", async || {
        ask(&first, "alpaca").await.hits.len() == 1
    })
    .await;
    // As on a configuration reload: new sources before the old indexer ends.
    let (second, second_indexer) = Sources::new(&cfg, Setup::new(data.path()));
    assert_eq!(
        ask(&second, "alpaca").await.hits.len(),
        1,
        "it searches at once"
    );
    tokio::task::spawn_blocking(move || first_indexer.shutdown())
        .await
        .unwrap();
    std::fs::write(d.join("b.md"), "Bison roam.").unwrap();
    eventually(
        Duration::from_secs(5),
        "the second indexer took over",
        async || ask(&second, "bison").await.hits.len() == 1 && second.status()[0].error.is_none(),
    )
    .await;
    tokio::task::spawn_blocking(move || second_indexer.shutdown())
        .await
        .unwrap();
}
