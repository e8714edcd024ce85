//! `orinari backup now|list|verify|restore` against real files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_orinari");
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "orinari-backup-cli-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(dir: &Path, args: &[&str], key: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("ORINARI_") {
            cmd.env_remove(&k);
        }
    }
    if let Some(k) = key {
        cmd.env("ORINARI_BACKUP_KEY", k);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn backup_commands_end_to_end() {
    let dir = scratch();
    // No [backup] section: a clear runtime error.
    let o = run(&dir, &["backup", "now"], Some(KEY));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no backups configured"), "{}", text(&o));

    std::fs::write(
        dir.join("orinari.toml"),
        format!(
            "[storage]\nurl = \"sqlite://{0}/data/orinari.db\"\n[backup]\ndestinations = [\"file://{0}/a\", \"file://{0}/b\"]\n",
            dir.display()
        ),
    )
    .unwrap();
    // No key: refused, naming the variable.
    let o = run(&dir, &["backup", "now"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("ORINARI_BACKUP_KEY"), "{}", text(&o));
    let o = run(&dir, &["backup", "now"], Some("short"));
    assert_eq!(o.status.code(), Some(2));

    let o = run(&dir, &["backup", "now"], Some(KEY));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2 destination(s)"));
    let o = run(&dir, &["backup", "list"], Some(KEY));
    assert!(o.status.success(), "{}", text(&o));
    let listing = text(&o);
    assert_eq!(listing.matches("snapshot ").count(), 2, "{listing}");
    assert!(listing.contains("newest restorable point"));
    let o = run(&dir, &["backup", "verify"], Some(KEY));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("integrity check passed"));
    let snap = std::fs::read_dir(dir.join("a/snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let o = run(
        &dir,
        &["backup", "verify", snap.to_str().unwrap()],
        Some(KEY),
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&dir, &["backup", "verify", "nope.snap"], Some(KEY));
    assert_eq!(o.status.code(), Some(2));

    let target = dir.join("restored.db");
    let now = "2999-01-01T00:00:00Z";
    let o = run(
        &dir,
        &[
            "backup",
            "restore",
            "--at",
            now,
            "--to",
            target.to_str().unwrap(),
        ],
        Some(KEY),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(target.is_file());
    // Never over an existing file, never over the live database.
    let o = run(
        &dir,
        &[
            "backup",
            "restore",
            "--at",
            now,
            "--to",
            target.to_str().unwrap(),
        ],
        Some(KEY),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("already exists"));
    let live = dir.join("data/orinari.db");
    let o = run(
        &dir,
        &[
            "backup",
            "restore",
            "--at",
            now,
            "--to",
            live.to_str().unwrap(),
        ],
        Some(KEY),
    );
    assert_eq!(o.status.code(), Some(2));
    // A bad time names the flag; offsets are understood.
    let o = run(
        &dir,
        &["backup", "restore", "--at", "yesterday", "--to", "x.db"],
        Some(KEY),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--at"), "{}", text(&o));
    let o = run(
        &dir,
        &[
            "backup",
            "restore",
            "--at",
            "2999-01-01T00:00:00+02:00",
            "--to",
            "y.db",
        ],
        Some(KEY),
    );
    assert!(o.status.success(), "{}", text(&o));
    // Missing arguments are usage errors.
    let o = run(&dir, &["backup", "restore", "--to", "z.db"], Some(KEY));
    assert_eq!(o.status.code(), Some(1));
    std::fs::remove_dir_all(&dir).unwrap();
}
