//! A server with only the status page (no models) on port 0, its status
//! service running on a fresh SQLite store, and an admin token.
#![allow(
    clippy::disallowed_methods,
    reason = "a test's tasks end with the test"
)]

use std::sync::Arc;
use std::time::Duration;

use orinari_server::{AppState, hash_token};
use orinari_status::StatusService;

/// The admin token the server accepts.
pub const TOKEN: &str = "test-admin-token";

/// The running server; dropping it stops the status service.
pub struct Page {
    pub base: String,
    pub http: reqwest::Client,
    _stop: tokio::sync::watch::Sender<bool>,
}

/// Start one with the `[status]` settings in `toml`.
pub async fn start(toml: &str) -> Page {
    let dir = std::env::temp_dir().join(format!(
        "orinari-srv-status-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let store = orinari_store::Store::open(&format!("sqlite://{}/s.db", dir.display()))
        .await
        .unwrap();
    let settings = orinari_config::parse(toml, "t.toml", std::iter::empty())
        .unwrap()
        .status;
    let svc = Arc::new(
        StatusService::open(store.clone(), &settings, orinari_store::now_ms())
            .await
            .unwrap(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(svc.clone().run(stopped));
    let state = AppState::new(Vec::new(), 32_000, 1 << 20)
        .with_store(store)
        .with_admin_token_hash(hash_token(TOKEN))
        .with_status(svc);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(orinari_server::serve(
        listener,
        state,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    Page {
        base,
        http: reqwest::Client::new(),
        _stop: stop,
    }
}
