//! Data sources: started by `serve` (files sources index in the
//! background, on their own threads, never on a request), and the
//! `orinari sources list|status|reindex` commands. `list` reads the
//! configuration only; `status` and `reindex` ask the running instance's
//! admin API (`/admin/v1/sources`), since the serving process owns the
//! indexes, with the admin token from the variable `server.admin_token_env`
//! names.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use orinari_config::Config;
use orinari_config::sources::SourceKind;
use orinari_sources::{Indexer, Setup, Sources};
use serde_json::Value;

/// The sources subcommands.
#[derive(clap::Subcommand)]
pub enum SourcesCommand {
    /// List the configured sources and the models grounded in each.
    List,
    /// Each source's state on the running instance (documents, chunks,
    /// index size, last sync, errors, indexing progress).
    Status {
        /// Only this source.
        name: Option<String>,
    },
    /// Read a files source's folder again, showing progress (documents
    /// done, rate, time left) until it is done; searches keep answering.
    Reindex {
        /// The source's name.
        name: String,
    },
}

/// Why a command failed: what the user asked (exit 1) or at run time (exit 2).
pub enum Failure {
    /// Bad input: the message names it.
    Usage(String),
    /// The running instance could not be reached or failed.
    Runtime(anyhow::Error),
}

/// Where files sources keep their indexes: next to the embedded SQLite
/// store (`orinari-data/` by default), or `orinari-data/` in the working
/// directory with PostgreSQL.
pub fn data_dir(config: &Config) -> PathBuf {
    orinari_store::sqlite_path(&config.storage_url)
        .and_then(|p| p.parent().map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("orinari-data"))
}

/// Start the configured sources (opening indexes is file I/O: on the
/// blocking pool). `None` when none is configured.
pub async fn start(config: &Config) -> anyhow::Result<Option<(Sources, Indexer)>> {
    if config.sources.is_empty() {
        return Ok(None);
    }
    let configs = config.sources.clone();
    let dir = data_dir(config);
    let started = std::time::Instant::now();
    let (sources, indexer) =
        tokio::task::spawn_blocking(move || Sources::new(&configs, Setup::new(&dir)))
            .await
            .context("starting [[sources]]")?;
    tracing::info!(
        sources = config.sources.len(),
        start_ms = started.elapsed().as_millis() as u64,
        "sources started (files sources index in the background)"
    );
    Ok(Some((sources, indexer)))
}

/// Stop the files sources' indexers (each commits what it has) and wait
/// for them, on the blocking pool.
pub async fn stop(indexer: Option<Indexer>) {
    if let Some(indexer) = indexer
        && tokio::task::spawn_blocking(move || indexer.shutdown())
            .await
            .is_err()
    {
        tracing::warn!("the source indexers did not stop cleanly");
    }
}

/// Run one sources command.
pub async fn command(config: &Config, command: SourcesCommand) -> Result<(), Failure> {
    match command {
        SourcesCommand::List => {
            list(config);
            Ok(())
        }
        SourcesCommand::Status { name } => {
            if let Some(n) = &name {
                known(config, n)?;
            }
            let all = Admin::new(config)?.sources().await?;
            let shown: Vec<&Value> = all
                .iter()
                .filter(|s| name.as_deref().is_none_or(|n| s["name"] == n))
                .collect();
            if shown.is_empty() {
                println!("no sources are configured");
            }
            for s in shown {
                print_status(s);
            }
            Ok(())
        }
        SourcesCommand::Reindex { name } => {
            known(config, &name)?;
            reindex(&Admin::new(config)?, &name).await
        }
    }
}

fn known(config: &Config, name: &str) -> Result<(), Failure> {
    if config.sources.iter().any(|s| s.name == name) {
        return Ok(());
    }
    let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
    Err(Failure::Usage(format!(
        "no source is named `{name}` (configured: {})",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    )))
}

fn list(config: &Config) {
    if config.sources.is_empty() {
        println!("no sources are configured ([[sources]] in the configuration)");
        return;
    }
    println!(
        "{:<20} {:<6} {:>10}  {:<40} models",
        "name", "kind", "timeout", "where"
    );
    for s in &config.sources {
        let place = match &s.kind {
            SourceKind::Files(f) => f.path.display().to_string(),
            SourceKind::Http(h) => h.url.split('?').next().unwrap_or("").to_string(),
            SourceKind::Sql(q) => q.url.split('@').next_back().unwrap_or("").to_string(),
        };
        let models: Vec<&str> = config
            .models
            .iter()
            .filter(|m| m.sources.contains(&s.name))
            .map(|m| m.name.as_str())
            .collect();
        println!(
            "{:<20} {:<6} {:>8}ms  {:<40} {}",
            s.name,
            s.kind.as_str(),
            s.timeout.as_millis(),
            place,
            if models.is_empty() {
                "-".to_string()
            } else {
                models.join(", ")
            }
        );
    }
}

fn print_status(s: &Value) {
    let num = |k: &str| s[k].as_u64().map_or("-".to_string(), |n| n.to_string());
    println!(
        "{} ({})",
        s["name"].as_str().unwrap_or("?"),
        s["kind"].as_str().unwrap_or("?")
    );
    if s["kind"] == "files" {
        println!(
            "  documents {}  chunks {}  index {} bytes  failed documents {}",
            num("documents"),
            num("chunks"),
            num("index_bytes"),
            num("failed_documents")
        );
        match s["last_sync_ms"].as_u64() {
            Some(ms) => println!("  last sync {}", rfc3339(ms)),
            None => println!("  not synced yet"),
        }
    }
    if let Some(p) = s["indexing"].as_object() {
        println!("  indexing {}", progress(p));
    }
    if let Some(d) = s["dense"].as_object() {
        let n = |k: &str| d.get(k).and_then(Value::as_u64).unwrap_or(0);
        println!(
            "  {}: vectors {}  pending {}  embedded since start {}  model {}",
            d.get("retrieval").and_then(Value::as_str).unwrap_or("?"),
            n("vectors"),
            n("pending"),
            n("embedded"),
            d.get("model")
                .and_then(Value::as_str)
                .unwrap_or("not loaded (BM25 only meanwhile)"),
        );
        if let Some(e) = d.get("error").and_then(Value::as_str) {
            println!("  dense error: {e}");
        }
    }
    if let Some(l) = s["last_search"].as_object() {
        println!(
            "  last search {}: {} ({} hits, {} ms)",
            l.get("at_ms")
                .and_then(Value::as_u64)
                .map_or("-".into(), rfc3339),
            l.get("outcome").and_then(Value::as_str).unwrap_or("?"),
            l.get("hits").and_then(Value::as_u64).unwrap_or(0),
            l.get("latency_ms").and_then(Value::as_u64).unwrap_or(0),
        );
        if let Some(note) = l.get("note").and_then(Value::as_str) {
            println!("  note: {note}");
        }
    }
    if let Some(e) = s["error"].as_str() {
        println!("  error: {e}");
    }
}

fn progress(p: &serde_json::Map<String, Value>) -> String {
    let get = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
    let rate = p
        .get("rate_per_second")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let left = p
        .get("seconds_left")
        .and_then(Value::as_u64)
        .map_or("unknown".to_string(), |s| format!("{s} s"));
    format!(
        "{}/{} documents, {rate:.1}/s, time left {left}",
        get("done"),
        get("total")
    )
}

fn rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// Ask for a reindex, then show progress until the source has synced again.
async fn reindex(admin: &Admin, name: &str) -> Result<(), Failure> {
    let before = admin.source(name).await?;
    let synced_before = before["last_sync_ms"].as_u64();
    admin.post_reindex(name).await?;
    println!("reindexing {name}");
    let started = std::time::Instant::now();
    let mut seen_progress = false;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = admin.source(name).await?;
        if let Some(p) = s["indexing"].as_object() {
            seen_progress = true;
            println!("  {}", progress(p));
            continue;
        }
        let synced = s["last_sync_ms"].as_u64();
        // A source that cannot sync (its folder gone) never finishes: say why.
        if let Some(e) = s["error"].as_str()
            && !seen_progress
            && synced == synced_before
            && started.elapsed() > Duration::from_secs(5)
        {
            return Err(Failure::Runtime(anyhow::anyhow!(
                "{name} did not reindex: {e}"
            )));
        }
        if synced.is_some() && (synced != synced_before || seen_progress) {
            println!(
                "done in {:.1} s: {} documents, {} chunks",
                started.elapsed().as_secs_f64(),
                s["documents"].as_u64().unwrap_or(0),
                s["chunks"].as_u64().unwrap_or(0)
            );
            if let Some(e) = s["error"].as_str() {
                println!("  error: {e}");
            }
            return Ok(());
        }
    }
}

/// The running instance's admin API.
struct Admin {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Admin {
    fn new(config: &Config) -> Result<Self, Failure> {
        let env = &config.server.admin_token_env;
        let token = std::env::var(env)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Failure::Usage(format!(
                    "set {env} to the admin token: `sources status` and `sources reindex` ask the running instance"
                ))
            })?;
        let mut addr = config.server.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Failure::Runtime(e.into()))?;
        Ok(Self {
            base: format!("http://{addr}"),
            token,
            client,
        })
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| {
                format!(
                    "no orinari instance answers at {} (is `orinari serve` running?)",
                    self.base
                )
            })
            .map_err(Failure::Runtime)?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .context("the instance's answer is not JSON")
            .map_err(Failure::Runtime)?;
        if !status.is_success() {
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or("no reason given");
            return Err(Failure::Runtime(anyhow::anyhow!("{status}: {message}")));
        }
        Ok(body)
    }

    async fn sources(&self) -> Result<Vec<Value>, Failure> {
        let body = self
            .call(self.client.get(format!("{}/admin/v1/sources", self.base)))
            .await?;
        Ok(body["data"].as_array().cloned().unwrap_or_default())
    }

    async fn source(&self, name: &str) -> Result<Value, Failure> {
        self.sources()
            .await?
            .into_iter()
            .find(|s| s["name"] == name)
            .ok_or_else(|| {
                Failure::Runtime(anyhow::anyhow!(
                    "the running instance has no source `{name}` (restart it after adding one)"
                ))
            })
    }

    async fn post_reindex(&self, name: &str) -> Result<(), Failure> {
        self.call(
            self.client
                .post(format!("{}/admin/v1/sources/{name}/reindex", self.base)),
        )
        .await
        .map(|_| ())
    }
}

/// The retrieval of a configuration: its sources, budget and grounded models.
pub fn retrieval(
    config: &Config,
    sources: Sources,
    metrics: &orinari_telemetry::Metrics,
) -> orinari_chat::Retrieval {
    orinari_chat::Retrieval::new(
        sources,
        config.retrieval_budget,
        config
            .models
            .iter()
            .map(|m| (m.name.clone(), m.sources.clone())),
        metrics.retrieval.clone(),
    )
}

/// A shared handle on the indexers (the admin API asks them to reindex).
pub fn shared(indexer: Indexer) -> orinari_server::SourceIndexer {
    Arc::new(std::sync::Mutex::new(Some(indexer)))
}
