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
        // Retrieval knows nothing of the chat format, the model's tokenizer
        // (it takes a token-count function) or HTTP serving.
        (
            "orinari-sources",
            &[
                "orinari-api",
                "orinari-models",
                "orinari-chat",
                "tokenizers",
                "axum",
                "tower",
                "tower-http",
            ],
        ),
        // The embedding model is computation on a thread of its own: no
        // HTTP, no SQL, and nothing of the chat models.
        (
            "orinari-embed",
            &["axum", "hyper", "reqwest", "sqlx", "orinari-models"],
        ),
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

/// Every crate in one layer of the workspace; a crate depends only on
/// crates in layers below its own, so a request's path reads in one
/// direction (server → chat → balance → models → upstream).
const LAYERS: &[&[&str]] = &[
    // The int8 kernels: arithmetic only (the chat model's and the guard's
    // encoder's dense products).
    &["orinari-kernels"],
    // Leaves: no orinari dependency but the kernels.
    &[
        "orinari-api",
        "orinari-config",
        "orinari-guard",
        "orinari-telemetry",
        "orinari-upstream",
        "orinari-store",
        "orinari-fake-upstream",
        "orinari-embed",
    ],
    // orinari-sources reads its config types from orinari-config and
    // knows nothing of the chat format; the chat domain calls it.
    &[
        "orinari-models",
        "orinari-limits",
        "orinari-status",
        "orinari-sources",
    ],
    &["orinari-balance"],
    &["orinari-chat"],
    &["orinari-server"],
    &["orinari"],
];

#[test]
fn no_crate_depends_on_one_above_it() {
    let layer_of = |name: &str| LAYERS.iter().position(|l| l.contains(&name));
    let mut wrong = Vec::new();
    for krate in crates() {
        let name = krate.file_name().unwrap().to_str().unwrap().to_string();
        let Some(own) = layer_of(&name) else {
            wrong.push(format!("{name} is in no layer of tidy.rs's LAYERS: add it"));
            continue;
        };
        let manifest = fs::read_to_string(krate.join("Cargo.toml")).unwrap();
        let deps = manifest.split("[dependencies]").nth(1).unwrap_or("");
        let deps = deps.split("\n[").next().unwrap_or("");
        for dep in deps.lines().filter_map(|l| {
            let d = l.trim_start().split(['.', ' ', '=']).next()?;
            d.starts_with("orinari").then(|| d.to_string())
        }) {
            match layer_of(&dep) {
                Some(l) if l < own => {}
                _ => wrong.push(format!("{name} depends on {dep}, which is not below it")),
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The server's route, page and layer modules each point down to shared
/// modules (`http.rs`, the state, the domain crates), never to a module of
/// another of those kinds.
#[test]
fn routes_pages_and_layers_do_not_import_each_other() {
    let kinds = ["routes", "pages", "layers"];
    let src = root().join("crates/orinari-server/src");
    let mut wrong = Vec::new();
    for kind in kinds {
        let mut files = Vec::new();
        rust_files(&src.join(kind), &mut files);
        for f in files {
            let text = fs::read_to_string(&f).unwrap();
            for other in kinds.iter().filter(|k| **k != kind) {
                for pattern in [format!("crate::{other}"), format!("super::super::{other}")] {
                    if text.contains(&pattern) {
                        wrong.push(format!("{}: {pattern}", f.display()));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// No task is spawned without an owner: `tokio::spawn` (and a runtime
/// handle's `spawn`) is denied by clippy.toml, and each remaining use says
/// what owns the task in an `#[expect(clippy::disallowed_methods, reason)]`
/// right above it. Checked here as text too, so the rule holds even where
/// clippy does not run (code behind `cfg`). Tests are exempt.
#[test]
fn no_bare_spawn_in_shipped_code() {
    let mut bare = Vec::new();
    for krate in crates() {
        let mut files = Vec::new();
        rust_files(&krate.join("src"), &mut files);
        for f in files {
            let text = fs::read_to_string(&f).unwrap();
            let shipped = text.split("#[cfg(test)]").next().unwrap_or("");
            let lines: Vec<&str> = shipped.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if !(code.contains("tokio::spawn(") || code.contains("runtime.spawn(")) {
                    continue;
                }
                let above: String = lines[i.saturating_sub(6)..i]
                    .concat()
                    .split_whitespace()
                    .collect();
                let owned = above.contains("#[expect(clippy::disallowed_methods");
                if !owned {
                    bare.push(format!("{}:{}", f.display(), i + 1));
                }
            }
        }
    }
    assert!(bare.is_empty(), "spawns without an owner: {bare:#?}");
}
