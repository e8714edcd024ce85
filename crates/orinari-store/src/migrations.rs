//! The schema migrations, embedded in the binary and run at start.
//!
//! sqlx's `migrate!` macro embeds the same directories, but it lives in
//! sqlx's proc-macro crate, which compiles both database drivers (SQLite's C
//! source included) a second time for the build host. The list below is
//! checked against the directories by a test, so a new file cannot be
//! forgotten; names, descriptions and checksums are what `migrate!` gives.

use std::borrow::Cow;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use crate::Backend;

/// `migrations/sqlite`: (file name, SQL).
const SQLITE: &[(&str, &str)] = &[
    (
        "0001_init.sql",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        "0002_change_log.sql",
        include_str!("../migrations/sqlite/0002_change_log.sql"),
    ),
    (
        "0003_settings.sql",
        include_str!("../migrations/sqlite/0003_settings.sql"),
    ),
    (
        "0004_key_policy.sql",
        include_str!("../migrations/sqlite/0004_key_policy.sql"),
    ),
    (
        "0005_status.sql",
        include_str!("../migrations/sqlite/0005_status.sql"),
    ),
    (
        "0006_key_guard.sql",
        include_str!("../migrations/sqlite/0006_key_guard.sql"),
    ),
    (
        "0007_status_webhooks.sql",
        include_str!("../migrations/sqlite/0007_status_webhooks.sql"),
    ),
    (
        "0008_instances.sql",
        include_str!("../migrations/sqlite/0008_instances.sql"),
    ),
    (
        "0009_acme.sql",
        include_str!("../migrations/sqlite/0009_acme.sql"),
    ),
    (
        "0010_key_sources.sql",
        include_str!("../migrations/sqlite/0010_key_sources.sql"),
    ),
];

/// `migrations/postgres`: (file name, SQL).
const POSTGRES: &[(&str, &str)] = &[
    (
        "0001_init.sql",
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        "0002_change_log.sql",
        include_str!("../migrations/postgres/0002_change_log.sql"),
    ),
    (
        "0003_settings.sql",
        include_str!("../migrations/postgres/0003_settings.sql"),
    ),
    (
        "0004_key_policy.sql",
        include_str!("../migrations/postgres/0004_key_policy.sql"),
    ),
    (
        "0005_status.sql",
        include_str!("../migrations/postgres/0005_status.sql"),
    ),
    (
        "0006_key_guard.sql",
        include_str!("../migrations/postgres/0006_key_guard.sql"),
    ),
    (
        "0007_status_webhooks.sql",
        include_str!("../migrations/postgres/0007_status_webhooks.sql"),
    ),
    (
        "0008_instances.sql",
        include_str!("../migrations/postgres/0008_instances.sql"),
    ),
    (
        "0009_acme.sql",
        include_str!("../migrations/postgres/0009_acme.sql"),
    ),
    (
        "0010_key_sources.sql",
        include_str!("../migrations/postgres/0010_key_sources.sql"),
    ),
];

/// One backend's migrations.
#[derive(Debug, Clone, Copy)]
struct Embedded(&'static [(&'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send>> {
        Box::pin(async move {
            self.0
                .iter()
                .map(|(name, sql)| migration(name, sql))
                .collect()
        })
    }
}

/// A migration from `<VERSION>_<DESCRIPTION>.sql`, as sqlx reads one.
fn migration(name: &str, sql: &'static str) -> Result<Migration, BoxDynError> {
    let (version, rest) = name
        .split_once('_')
        .ok_or_else(|| format!("migration `{name}` is not VERSION_DESCRIPTION.sql"))?;
    let description = rest
        .strip_suffix(".sql")
        .ok_or_else(|| format!("migration `{name}` does not end in .sql"))?;
    Ok(Migration::new(
        version.parse()?,
        Cow::Owned(description.replace('_', " ")),
        MigrationType::Simple,
        Cow::Borrowed(sql),
        sql.starts_with("-- no-transaction"),
    ))
}

/// The migrator for a backend.
pub(crate) async fn migrator(backend: Backend) -> Result<Migrator, sqlx::migrate::MigrateError> {
    Migrator::new(Embedded(match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    }))
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    /// Every file in the directory is embedded, with its current text, in order.
    #[test]
    fn the_embedded_lists_are_the_directories() {
        for (dir, list) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(dir);
            let mut files: Vec<(String, String)> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read_to_string(e.path()).unwrap(),
                    )
                })
                .collect();
            files.sort();
            let embedded: Vec<(String, String)> = list
                .iter()
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .collect();
            assert_eq!(embedded, files, "{dir}");
        }
    }

    /// What sqlx's own reader makes of the directory is what we embed: the
    /// checksums recorded by databases migrated with `migrate!` still match.
    #[tokio::test]
    async fn migrations_match_what_sqlx_reads_from_the_directory() {
        for (dir, backend) in [("sqlite", Backend::Sqlite), ("postgres", Backend::Postgres)] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(dir);
            let theirs = Migrator::new(path).await.unwrap();
            let ours = migrator(backend).await.unwrap();
            let key = |m: &Migration| {
                (
                    m.version,
                    m.description.to_string(),
                    m.checksum.to_vec(),
                    m.no_tx,
                )
            };
            assert_eq!(
                ours.iter().map(key).collect::<Vec<_>>(),
                theirs.iter().map(key).collect::<Vec<_>>(),
                "{dir}"
            );
        }
    }
}
