//! `GET /openapi.json` against the code: every route the routers register
//! (read from their source, where they are composed) is in the document
//! with the same methods, and every path in it is registered; the served
//! document is the file; every parameterless GET in it answers (no 404 or
//! 405). Its validity as OpenAPI 3.1 is checked by the clients stage
//! (`openapi-spec-validator`, with real answers validated against its
//! schemas).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "a test's tasks end with the test"
)]

use std::collections::BTreeSet;
use std::time::Duration;

use orinari_server::AppState;
use serde_json::Value;

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// `(path, method)` for every `.route("PATH", method(..).method(..))` in
/// a router's source.
fn registered(source: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for piece in source.split(".route(").skip(1) {
        let piece = piece.trim_start();
        let Some(rest) = piece.strip_prefix('"') else {
            continue;
        };
        let (path, rest) = rest.split_once('"').unwrap();
        // The handlers run up to the next builder call on the router.
        let end = [
            ".route(",
            ".with_state(",
            ".fallback(",
            ".method_not_allowed",
        ]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()
        .unwrap_or(rest.len());
        let handlers = &rest[..end];
        for m in METHODS {
            let needle = format!("{m}(");
            let found = handlers
                .match_indices(&needle)
                .any(|(i, _)| i == 0 || !handlers.as_bytes()[i - 1].is_ascii_alphanumeric());
            if found {
                out.insert((path.to_string(), (*m).to_string()));
            }
        }
    }
    out
}

fn source(file: &str) -> String {
    std::fs::read_to_string(format!("{}/src/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn document() -> Value {
    serde_json::from_str(&source("openapi.json")).unwrap()
}

#[test]
fn the_document_lists_exactly_the_registered_routes() {
    let mut code = registered(&source("routes/mod.rs"));
    code.extend(registered(&source("pages/mod.rs")));
    assert!(code.len() > 40, "the route parser found {code:?}");
    assert!(code.contains(&("/v1/chat/completions".into(), "post".into())));
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if METHODS.contains(&method.as_str()) {
                documented.insert((path.clone(), method.clone()));
            }
        }
    }
    let missing: Vec<_> = code.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&code).collect();
    assert!(
        missing.is_empty(),
        "registered but not documented: {missing:?}"
    );
    assert!(extra.is_empty(), "documented but not registered: {extra:?}");
}

#[test]
fn every_v1_operation_documents_the_error_envelope() {
    let doc = document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            for (status, r) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorResponse",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn the_served_document_is_the_file_and_every_listed_get_answers() {
    let state = AppState::new(Vec::new(), 32_000, 1 << 20);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(orinari_server::serve(
        listener,
        state,
        async move {
            let _ = rx.await;
        },
        Duration::from_secs(1),
    ));
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let served: Value = r.json().await.unwrap();
    assert_eq!(served, document());

    for (path, item) in served["paths"].as_object().unwrap() {
        if path.contains('{') || item.get("get").is_none() {
            continue;
        }
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        let status = r.status().as_u16();
        assert!(
            status != 404 && status != 405,
            "GET {path} is documented but answers {status}"
        );
    }
    drop(tx);
}
