//! Project rules that are cheap to check mechanically (see ARCHITECTURE.md).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn crates() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_module_has_a_doc_comment() {
    let mut missing = Vec::new();
    for krate in crates() {
        let mut files = Vec::new();
        rust_files(&krate.join("src"), &mut files);
        for f in files {
            let text = fs::read_to_string(&f).unwrap();
            if !text.trim_start().starts_with("//!") {
                missing.push(f.display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "modules without a `//!` doc comment: {missing:#?}"
    );
}

#[test]
fn no_stubs_in_shipped_code() {
    let mut found = Vec::new();
    for krate in crates() {
        let mut files = Vec::new();
        rust_files(&krate.join("src"), &mut files);
        for f in files {
            let text = fs::read_to_string(&f).unwrap();
            for needle in ["todo!(", "unimplemented!("] {
                if text.contains(needle) {
                    found.push(format!("{}: {needle}", f.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

/// Crate boundaries from DESIGN.md, stated as absences.
#[test]
fn crate_boundaries_hold() {
    let deps = |name: &str| {
        fs::read_to_string(root().join("crates").join(name).join("Cargo.toml")).unwrap()
    };
    let forbidden: &[(&str, &[&str])] = &[
        // The model layer knows nothing of HTTP routing or serving; its
        // HTTP client is orinari-upstream.
        (
            "orinari-models",
            &[
                "axum",
                "tower",
                "tower-http",
                "hyper",
                "hyper-util",
                "reqwest",
            ],
        ),
        // The transport knows nothing of models or serving (hyper's server
        // side is checked below).
        ("orinari-upstream", &["axum", "tower", "tower-http", "sqlx"]),
        // Wire types do no I/O.
        ("orinari-api", &["tokio", "axum", "reqwest", "hyper"]),
        // Configuration is pure parsing and validation.
        ("orinari-config", &["tokio", "axum"]),
        // The guard is pure computation: no network, no HTTP, no runtime.
        (
            "orinari-guard",
            &[
                "reqwest", "hyper", "axum", "tokio", "tower", "sqlx", "redis",
            ],
        ),
        // The balancer knows nothing of HTTP routes or transports.
        (
            "orinari-balance",
            &["axum", "tower", "hyper", "reqwest", "sqlx"],
        ),
        // All SQL lives in orinari-store.
        ("orinari-server", &["sqlx"]),
        // Limits know nothing of models, HTTP or SQL.
        (
            "orinari-limits",
            &["orinari-models", "axum", "hyper", "tower", "sqlx"],
        ),
        ("orinari-models", &["sqlx"]),
        ("orinari-api", &["sqlx"]),
        ("orinari", &["sqlx"]),
        // The status model never renders HTML (pages live in orinari-server)
        // and reaches SQL only through orinari-store.
        ("orinari-status", &["askama", "axum", "sqlx"]),
    ];
    for (krate, banned) in forbidden {
        let manifest = deps(krate);
        let deps_section = manifest.split("[dependencies]").nth(1).unwrap_or("");
        let deps_section = deps_section.split("\n[").next().unwrap_or("");
        for b in *banned {
            assert!(
                !deps_section
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{b} "))
                        || l.trim_start().starts_with(&format!("{b}."))),
                "{krate} must not depend on {b}"
            );
        }
    }
    let upstream = deps("orinari-upstream");
    assert!(
        !upstream
            .lines()
            .any(|l| l.trim_start().starts_with("hyper") && l.contains("server")),
        "orinari-upstream uses hyper as a client only"
    );
    assert!(
        !upstream
            .lines()
            .any(|l| l.trim_start().starts_with("orinari-")),
        "orinari-upstream is a leaf: it depends on no orinari crate"
    );
}
