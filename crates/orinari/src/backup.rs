//! `orinari backup …` and the backup scheduler's wiring: the key is resolved
//! here (environment or file, never the config), everything else is
//! `orinari_store::backup`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use orinari_config::{BackupSettings, Config, KeySource};
use orinari_store::Store;
use orinari_store::backup::{self, BackupConfig, BackupKey, Backups};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The backup subcommands.
#[derive(clap::Subcommand)]
pub enum BackupCommand {
    /// Take a snapshot now and ship the journal to every destination.
    Now,
    /// List snapshots, journal ranges and the newest restorable point per destination.
    List,
    /// Restore into a temporary place and check integrity and contents.
    Verify {
        /// A snapshot file name from `backup list` (default: the newest point).
        id: Option<String>,
    },
    /// Restore the state committed at a time into a new database file.
    Restore {
        /// The time (RFC 3339, e.g. 2026-11-25T21:30:00Z).
        #[arg(long)]
        at: String,
        /// The new database file (must not exist; never the live database).
        #[arg(long)]
        to: PathBuf,
    },
}

/// Read the key named by the settings.
pub fn key(settings: &BackupSettings) -> anyhow::Result<BackupKey> {
    let (text, source) = match &settings.key {
        KeySource::Env(var) => (
            std::env::var(var).with_context(|| format!("backups need a key: set {var} to 32 random bytes in base64 (e.g. `openssl rand -base64 32`)"))?,
            var.clone(),
        ),
        KeySource::File(path) => (
            std::fs::read_to_string(path).with_context(|| format!("cannot read the backup key file {}", path.display()))?,
            path.display().to_string(),
        ),
    };
    BackupKey::from_base64(&text).map_err(|e| anyhow::anyhow!("{source}: {e}"))
}

/// The engine's configuration from validated settings.
pub fn engine_config(settings: &BackupSettings) -> anyhow::Result<BackupConfig> {
    Ok(BackupConfig {
        destinations: settings.destinations.clone(),
        key: key(settings)?,
        retention: settings.retention,
    })
}

fn settings(config: &Config) -> anyhow::Result<&BackupSettings> {
    config
        .backup
        .as_ref()
        .context("no backups configured: set [backup] destinations = [\"file:///…\"]")
}

fn live_path(config: &Config) -> anyhow::Result<PathBuf> {
    orinari_store::sqlite_path(&config.storage_url)
        .context("built-in backups need the embedded SQLite store")
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// Run one backup subcommand.
pub async fn command(config: &Config, cmd: BackupCommand) -> anyhow::Result<()> {
    let settings = settings(config)?;
    let cfg = engine_config(settings)?;
    match cmd {
        BackupCommand::Now => {
            let store = Store::open(&config.storage_url).await?;
            let engine = Backups::new(store.clone(), live_path(config)?, cfg)?;
            let shipped = engine.ship().await?;
            let snap = engine.snapshot().await?;
            engine.apply_retention(orinari_store::now_ms())?;
            store.close().await;
            println!(
                "snapshot {} (journal position {}, {} bytes sealed) written to {} destination(s); {shipped} journal entries shipped",
                snap.name,
                snap.seq,
                snap.bytes,
                settings.destinations.len()
            );
        }
        BackupCommand::List => {
            for l in backup::list(&cfg)? {
                println!("{}", l.destination.display());
                for s in &l.snapshots {
                    println!(
                        "  snapshot {}  as of {}  position {}  {} bytes",
                        s.name,
                        rfc3339(s.max_at),
                        s.seq,
                        s.bytes
                    );
                }
                if let (Some(first), Some(last)) = (l.segments.first(), l.segments.last()) {
                    println!(
                        "  journal  positions {}..{} in {} segment(s), up to {}",
                        first.first,
                        last.last,
                        l.segments.len(),
                        rfc3339(last.last_at)
                    );
                }
                match l.newest_point() {
                    Some(t) => println!("  newest restorable point: {}", rfc3339(t)),
                    None => println!("  empty"),
                }
            }
        }
        BackupCommand::Verify { id } => {
            let r = backup::verify(&cfg, id.as_deref()).await?;
            println!(
                "ok: restored {} + {} journal entries from {} up to position {} ({}); integrity check passed",
                r.snapshot,
                r.replayed,
                r.destination.display(),
                r.seq,
                rfc3339(r.at)
            );
        }
        BackupCommand::Restore { at, to } => {
            let t = OffsetDateTime::parse(&at, &Rfc3339).with_context(|| {
                format!("--at {at}: not an RFC 3339 time like 2026-11-25T21:30:00Z")
            })?;
            let at_ms = i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
                .context("--at: out of range")?;
            let live = live_path(config).ok();
            if to.as_os_str().is_empty() {
                bail!("--to must name a new database file");
            }
            let r = backup::restore(&cfg, at_ms, Path::new(&to), live.as_deref()).await?;
            println!(
                "restored {} as of {} (snapshot {} + {} journal entries, from {}); point [storage] url at sqlite://{} to serve it",
                to.display(),
                rfc3339(r.at),
                r.snapshot,
                r.replayed,
                r.destination.display(),
                to.display()
            );
        }
    }
    Ok(())
}
