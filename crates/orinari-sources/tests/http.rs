//! An http source against real local HTTP servers: the field mapping, the
//! question kept to the query string or body, auth from the environment,
//! a hanging server reported as `timeout` within the budget, no redirect
//! to another host, answers over the size cap refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "a test's servers end with the test"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use orinari_sources::{Outcome, Setup, Sources};
use serde_json::{Value, json};

#[derive(Default)]
struct Seen {
    requests: Vec<(String, HashMap<String, String>, Option<String>)>,
}

type Log = Arc<Mutex<Seen>>;

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn search_api(log: Log) -> SocketAddr {
    let app = axum::Router::new()
        .route(
            "/search",
            get(
                |State(log): State<Log>, uri: Uri, headers: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                    let auth = headers
                        .get("x-api-key")
                        .map(|v| v.to_str().unwrap().to_string());
                    log.lock().unwrap().requests.push((uri.path().to_string(), q.clone(), auth));
                    let question = q.get("q").cloned().unwrap_or_default();
                    Json(json!({"data": {"results": [
                        {"name": "Echo", "body": format!("you asked: {question}"), "link": "https://docs.example/echo"},
                        {"name": "Second", "body": "another passage", "link": "https://docs.example/2"},
                    ]}}))
                },
            ),
        )
        .route(
            "/find",
            post(|Json(body): Json<Value>| async move {
                Json(json!([{ "title": "Body", "text": body["query"].as_str().unwrap_or("?"), "size": body["size"] }]))
            }),
        )
        .route("/hang", get(std::future::pending::<String>))
        .route("/big", get(|| async { "x".repeat(2_000_000) }))
        .route("/fail", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }))
        .with_state(log);
    serve(app).await
}

fn sources(toml: &str, env: &'static [(&str, &str)]) -> Sources {
    let cfg = orinari_config::parse(toml, "test.toml", []).unwrap();
    let data = std::env::temp_dir();
    let lookup = move |k: &str| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    let (s, _indexer) = Sources::new(
        &cfg.sources,
        Setup {
            env: &lookup,
            ..Setup::new(&data)
        },
    );
    s
}

#[tokio::test]
async fn hits_are_mapped_and_the_question_stays_in_the_query_string() {
    let log = Log::default();
    let addr = search_api(log.clone()).await;
    let s = sources(
        &format!(
            r#"[[sources]]
name = "api"
kind = "http"
url = "http://{addr}/search?q={{query}}&lang=en"
auth_header = "X-Api-Key"
auth_header_env = "TEST_SEARCH_KEY"
fields = {{ hits = "data.results", title = "name", text = "body", url = "link" }}
"#
        ),
        &[("TEST_SEARCH_KEY", "k3y")],
    );
    let nasty = "what is 1+1 & lang=xx/../../admin?#frag %41";
    let r = s.retrieve(&["api"], nasty, 5, Duration::from_secs(2)).await;
    assert_eq!(r.outcomes[0].outcome, Outcome::Ok, "{:?}", r.outcomes);
    assert_eq!(r.hits.len(), 2);
    let h = &r.hits[0].hit;
    assert_eq!(h.title, "Echo");
    assert_eq!(
        h.text,
        format!("you asked: {nasty}"),
        "the question arrives intact"
    );
    assert_eq!(h.url.as_deref(), Some("https://docs.example/echo"));
    assert_eq!(h.document, "https://docs.example/echo");
    let seen = log.lock().unwrap();
    let (path, params, auth) = &seen.requests[0];
    assert_eq!(path, "/search", "the path is the template's");
    assert_eq!(
        params.get("lang").map(String::as_str),
        Some("en"),
        "no parameter was injected"
    );
    assert_eq!(params.len(), 2);
    assert_eq!(auth.as_deref(), Some("k3y"));
}

#[tokio::test]
async fn a_body_template_gets_the_question_as_one_json_string() {
    let addr = search_api(Log::default()).await;
    let s = sources(
        &format!(
            r#"[[sources]]
name = "api"
kind = "http"
url = "http://{addr}/find"
body = '{{"query": {{query}}, "size": 5}}'
fields = {{ title = "title", text = "text" }}
"#
        ),
        &[],
    );
    let q = "quote \" brace } \\ end";
    let r = s.retrieve(&["api"], q, 5, Duration::from_secs(2)).await;
    assert_eq!(r.outcomes[0].outcome, Outcome::Ok, "{:?}", r.outcomes);
    assert_eq!(r.hits[0].hit.text, q);
}

#[tokio::test]
async fn a_hanging_source_is_a_timeout_and_the_others_still_answer() {
    let addr = search_api(Log::default()).await;
    let s = sources(
        &format!(
            r#"[[sources]]
name = "hang"
kind = "http"
url = "http://{addr}/hang?q={{query}}"
timeout_ms = 60000
fields = {{ text = "text" }}

[[sources]]
name = "ok"
kind = "http"
url = "http://{addr}/search?q={{query}}"
fields = {{ hits = "/data/results", title = "name", text = "body" }}

[[sources]]
name = "down"
kind = "http"
url = "http://{addr}/fail?q={{query}}"
fields = {{ text = "text" }}
"#
        ),
        &[],
    );
    let budget = Duration::from_millis(300);
    let start = Instant::now();
    let r = s
        .retrieve(&["hang", "ok", "down"], "question", 5, budget)
        .await;
    let took = start.elapsed();
    // The hanging source never answers: ending anywhere near the budget
    // (with room for a loaded machine) shows the deadline fired.
    assert!(took < budget + Duration::from_secs(2), "{took:?}");
    let outcomes: Vec<(&str, Outcome)> =
        r.outcomes.iter().map(|o| (&*o.source, o.outcome)).collect();
    assert_eq!(
        outcomes,
        [
            ("hang", Outcome::Timeout),
            ("ok", Outcome::Ok),
            ("down", Outcome::Error)
        ]
    );
    assert_eq!(
        r.outcomes[2].error.as_deref(),
        Some("answered 503 Service Unavailable")
    );
    assert_eq!(r.hits.len(), 2);
}

#[tokio::test]
async fn redirects_to_another_host_are_not_followed_and_big_answers_are_refused() {
    let other_log = Log::default();
    let other = search_api(other_log.clone()).await;
    let target = format!("http://localhost:{}/search?q=x", other.port());
    let redirector = serve(axum::Router::new().route(
        "/r",
        get(move || {
            let t = target.clone();
            async move { Redirect::temporary(&t).into_response() }
        }),
    ))
    .await;
    let addr = search_api(Log::default()).await;
    let s = sources(
        &format!(
            r#"[[sources]]
name = "redirect"
kind = "http"
url = "http://{redirector}/r?q={{query}}"
fields = {{ text = "body" }}

[[sources]]
name = "big"
kind = "http"
url = "http://{addr}/big?q={{query}}"
max_response_bytes = 100000
fields = {{ text = "body" }}
"#
        ),
        &[],
    );
    let r = s
        .retrieve(&["redirect", "big"], "q", 5, Duration::from_secs(2))
        .await;
    assert_eq!(r.outcomes[0].outcome, Outcome::Error);
    assert!(
        r.outcomes[0].error.as_deref().unwrap().contains("redirect"),
        "{:?}",
        r.outcomes[0]
    );
    assert!(
        other_log.lock().unwrap().requests.is_empty(),
        "the other host was never asked"
    );
    assert_eq!(r.outcomes[1].outcome, Outcome::Error);
    assert!(
        r.outcomes[1]
            .error
            .as_deref()
            .unwrap()
            .contains("larger than 100000")
    );
}

#[tokio::test]
async fn an_unset_auth_variable_leaves_the_source_unavailable() {
    let s = sources(
        r#"[[sources]]
name = "api"
kind = "http"
url = "http://127.0.0.1:9/search?q={query}"
auth_header_env = "ORINARI_TEST_UNSET_KEY"
fields = { text = "body" }
"#,
        &[],
    );
    let status = &s.status()[0];
    assert_eq!(status.kind, "http");
    assert!(
        status
            .error
            .as_deref()
            .unwrap()
            .contains("ORINARI_TEST_UNSET_KEY")
    );
    let r = s.retrieve(&["api"], "q", 5, Duration::from_secs(1)).await;
    assert_eq!(r.outcomes[0].outcome, Outcome::Error);
}

#[test]
fn the_placeholder_may_not_reach_host_or_path() {
    for (url, body) in [
        ("http://{query}.example/s", None),
        ("http://example/{query}/s", None),
        ("http://example/s#{query}", None),
        ("http://example/s?q=x", None),
        ("http://example/s", Some("{\"q\": \"{query}\"}")),
        ("ftp://example/s?q={query}", None),
    ] {
        let body = body.map(|b| format!("body = '{b}'\n")).unwrap_or_default();
        let toml = format!(
            "[[sources]]\nname = \"a\"\nkind = \"http\"\nurl = \"{url}\"\n{body}fields = {{ text = \"t\" }}\n"
        );
        let e = orinari_config::parse(&toml, "t.toml", []).unwrap_err();
        assert!(e.0.contains("sources[0]"), "{url}: {e}");
    }
}
