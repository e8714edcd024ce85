//! Shared set-up: a status service over a fresh SQLite store, configured
//! from TOML exactly as `orinari serve` would be.
#![allow(dead_code, reason = "each test binary uses a part")]

use orinari_status::StatusService;
use orinari_store::Store;

/// A store in a new temporary directory.
pub async fn store() -> Store {
    let dir = std::env::temp_dir().join(format!(
        "orinari-status-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    Store::open(&format!("sqlite://{}/s.db", dir.display()))
        .await
        .unwrap()
}

/// `[status]` settings from TOML text.
pub fn settings(toml: &str) -> orinari_config::StatusSettings {
    orinari_config::parse(toml, "test.toml", std::iter::empty())
        .unwrap()
        .status
}

/// A service from TOML, at `now`.
pub async fn service(toml: &str, now: i64) -> StatusService {
    StatusService::open(store().await, &settings(toml), now)
        .await
        .unwrap()
}

/// Unix ms of an RFC 3339 time.
pub fn ms(rfc3339: &str) -> i64 {
    rfc3339.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}
