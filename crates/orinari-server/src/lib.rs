//! The HTTP server: the tower layer stack (composed once, in [`stack`]),
//! routes and thin handlers, and graceful shutdown.
//!
//! Handlers extract, call one domain function, and map the result; errors
//! become responses only in [`error`].

pub mod edge;
pub mod error;
pub mod guard;
mod layers;
mod listener;
mod pages;
mod routes;
mod stack;
mod state;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use state::{AppState, ServedModel, hash_token};

/// Build the full application (routes inside the layer stack).
pub fn app(state: AppState) -> axum::Router {
    stack::wrap(
        routes::v1(state.clone()),
        routes::router(state.clone()),
        routes::admin(state.clone()),
        routes::pages(state.clone()),
        &state,
    )
}

/// Serve until `shutdown` resolves, then drain: stop accepting, mark the
/// instance not ready, let in-flight requests and streams finish, and return
/// once they have or when `drain_timeout` has passed, whichever is first.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain_timeout: Duration,
) -> std::io::Result<()> {
    let (tx, rx) = watch::channel(false);
    let accept = listener::accept(listener, app(state.clone()), state.clone(), rx);
    tokio::pin!(accept);
    let graceful = tokio::select! {
        g = &mut accept => g,
        () = shutdown => {
            state.begin_drain();
            tracing::info!(timeout_ms = drain_timeout.as_millis() as u64, "draining");
            let _ = tx.send(true);
            accept.await
        }
    };
    // Idle connections close now; busy ones once their answer is done.
    let drain = graceful.shutdown();
    tokio::pin!(drain);
    if tokio::time::timeout(drain_timeout, &mut drain)
        .await
        .is_ok()
    {
        return Ok(());
    }
    // Deadline passed: end the remaining answers with an error event (streams)
    // or a 503 (whole answers), which lets their connections close.
    tracing::warn!("drain deadline passed; ending the remaining answers");
    state.abort_in_flight();
    if tokio::time::timeout(ABORT_GRACE, &mut drain).await.is_err() {
        tracing::warn!("connections still open after the abort; leaving them");
    }
    Ok(())
}

/// How long aborted answers get to reach their clients.
const ABORT_GRACE: Duration = Duration::from_secs(1);
