//! The HTTP server: the tower layer stack (composed once, in [`stack`]),
//! routes and thin handlers, and graceful shutdown.
//!
//! Handlers extract, call one domain function (a chat answer is
//! `orinari_chat::Chat::answer`), and map the result; errors become
//! responses only in [`error`]. Routes, pages and layers never import one
//! another: what they share lives in [`http`].

pub mod acme;
pub mod error;
pub mod http;
mod ids;
mod layers;
mod listener;
mod pages;
mod routes;
mod stack;
mod state;
pub mod tls;

use std::future::Future;
use std::time::Duration;

use std::sync::Arc;
use tokio::net::TcpListener;

use tokio::sync::{Semaphore, watch};

pub use http::hash_token;
pub use orinari_chat::ServedModel;
pub use state::{AppState, Live, Reload, ReloadError, ReloadReport, SourceIndexer};

/// Build the full application (routes inside the layer stack); `secure`
/// for the HTTPS listener's.
pub fn app(state: AppState, secure: bool) -> impl stack::App {
    stack::wrap(
        routes::v1(state.clone()),
        routes::router(state.clone()),
        routes::admin(state.clone()),
        pages::router(state.clone()),
        &state,
        secure,
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
    serve_all(listener, None, state, shutdown, drain_timeout).await
}

/// [`serve`] with an HTTPS listener beside the plain one. With TLS, the
/// plain listener redirects to HTTPS except health and ACME paths.
pub async fn serve_all(
    plain: TcpListener,
    https: Option<(TcpListener, tls::Tls)>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain_timeout: Duration,
) -> std::io::Result<()> {
    let (tx, rx) = watch::channel(false);
    let max = state.edge().config().connections.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    // Caps hold across the plain and HTTPS listeners together.
    let per_ip = Arc::new(listener::PerIp::default());
    let secure_port = https
        .as_ref()
        .and_then(|(l, _)| l.local_addr().ok())
        .map(|a| a.port());
    let shared = listener::Shared {
        state: state.clone(),
        slots: slots.clone(),
        per_ip,
        stop: rx.clone(),
    };
    let mut loops = tokio::task::JoinSet::new();
    let plain_app = app(state.clone(), false);
    // Two app types (with and without the redirect), one call each.
    match secure_port {
        Some(port) => loops.spawn(listener::accept(
            plain,
            stack::redirect_to_https(plain_app, port),
            None,
            shared.clone(),
        )),
        None => loops.spawn(listener::accept(plain, plain_app, None, shared.clone())),
    };
    // Background TLS tasks (file watcher, ACME client), stopped with the drain.
    let mut tls_tasks = tokio::task::JoinSet::new();
    if let Some((l, t)) = https {
        state.set_certificates(t.certificates.clone());
        tls_tasks.spawn(t.certificates.clone().watch(rx.clone()));
        if let Some(a) = t.config.acme.clone() {
            let mut client =
                acme::Acme::new(a, state.acme_challenges().clone(), t.certificates.clone());
            if let Some(shared) = t.shared_acme.clone() {
                client = client.shared(shared);
            }
            tls_tasks.spawn(client.run(rx.clone()));
        }
        loops.spawn(listener::accept(
            l,
            app(state.clone(), true),
            Some(t.acceptor),
            shared,
        ));
    }
    shutdown.await;
    state.begin_drain();
    tracing::info!(timeout_ms = drain_timeout.as_millis() as u64, "draining");
    let _ = tx.send(true);
    while loops.join_next().await.is_some() {}
    while tls_tasks.join_next().await.is_some() {}
    // Every connection holds a slot until it has finished: all slots back
    // means every in-flight request and stream is done.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let drained = slots.acquire_many(all);
    tokio::pin!(drained);
    if tokio::time::timeout(drain_timeout, &mut drained)
        .await
        .is_ok()
    {
        return Ok(());
    }
    // Deadline passed: end the remaining answers with an error event (streams)
    // or a 503 (whole answers), which lets their connections close.
    tracing::warn!("drain deadline passed; ending the remaining answers");
    state.abort_in_flight();
    if tokio::time::timeout(ABORT_GRACE, &mut drained)
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the abort; leaving them");
    }
    Ok(())
}

/// How long aborted answers get to reach their clients.
const ABORT_GRACE: Duration = Duration::from_secs(1);
