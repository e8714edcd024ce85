//! Which instance runs the singleton jobs (probes, the maintenance clock and
//! its reminders, history pruning): the one holding the store's leader lock
//! ([`orinari_store::LeaderLock`]: a PostgreSQL advisory lock on a session
//! of its own; with SQLite, the only instance). The election re-checks every
//! [`ELECTION_EVERY`] and publishes the answer on a watch channel; jobs read
//! it before each run.
//!
//! Bounds: a leader whose process dies frees the lock at once, so another
//! instance leads within one period plus the grace period ([`grace`]: 6 s
//! with the defaults, 8 s in all); a leader cut off from the database
//! steps down within a period plus the check deadline, well before
//! PostgreSQL frees its lock (`idle_session_timeout`), so two instances never
//! both believe they lead while both can reach the database.

use std::time::Duration;

use orinari_store::LeaderLock;
use tokio::sync::watch;

/// How often leadership is acquired or re-checked.
pub const ELECTION_EVERY: Duration = Duration::from_secs(2);

/// How long a new lock holder waits before it leads: the old holder has
/// stepped down by then (it re-checks every [`ELECTION_EVERY`], each check
/// within [`orinari_store::leader::CHECK_TIMEOUT`]).
pub fn grace(every: Duration) -> Duration {
    every * 2 + orinari_store::leader::CHECK_TIMEOUT
}

/// Contend for leadership until `stop`, publishing it on `leader`; on stop,
/// step down first, then free the lock. `role` names the jobs in the log
/// (the ACME client in `orinari-server` contends with a lock of its own).
pub async fn run(
    role: &'static str,
    mut lock: LeaderLock,
    leader: watch::Sender<bool>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let leads = lock.check().await;
        let before = leader.send_replace(leads);
        if before != leads {
            tracing::info!(role, leader = leads, "leadership changed");
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    leader.send_replace(false);
    lock.release().await;
}
