//! Active health checks: each backend is probed every `interval`; a failed
//! or slow probe takes it out of selection until a probe passes again. The
//! exported circuit gauge is refreshed on the same beat (an open circuit
//! turns half-open by time alone).

use std::sync::Arc;
use std::time::Instant;

use crate::config::HealthConfig;
use crate::member::Member;

/// Probe one backend forever (the gateway owns and aborts the task).
pub async fn run(model: String, member: Arc<Member>, config: HealthConfig) {
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = matches!(
            tokio::time::timeout(config.timeout, member.backend().probe()).await,
            Ok(Ok(()))
        );
        if member.set_up(ok) {
            if ok {
                tracing::info!(%model, backend = %member.spec.name, "backend is up");
            } else {
                tracing::warn!(%model, backend = %member.spec.name, "backend failed its health check");
            }
        }
        member.export_circuit(Instant::now());
    }
}
