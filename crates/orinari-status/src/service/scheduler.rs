//! The scheduler: every background task of the status service, started by
//! [`StatusService::run`] and owned by one [`Scheduler`] until shutdown.
//!
//! It holds the leader election, one probe loop per check and the
//! notification delivery in a `JoinSet` (nothing else in the service spawns;
//! the delivery task joins its own per-subscriber sends in `notify.rs`), and
//! runs the 1 s clock itself. When a reload changes the checks it starts a
//! loop for each new or changed check and stops the loops of the changed
//! and removed ones (each loop has its own stop signal); the loops of
//! unchanged checks run on. Leader-only jobs (probes,
//! moving maintenances on time, reminders, pruning) run only while this
//! instance leads; every instance evaluates its alert rules and refreshes its
//! snapshot from the store. At shutdown the clock stops, every task sees the
//! same `stop` signal, and the scheduler waits for each to end; dropping it
//! instead aborts them (the `JoinSet` is dropped with it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::StatusService;
use super::probes::{Check, Probes};

/// How often maintenances are moved on time and other instances' writes read.
const TICK: Duration = Duration::from_secs(1);
/// How often the snapshot is rebuilt without a change (uptime moves on).
const REFRESH_EVERY: u32 = 15;
/// Probe history is pruned at start and then every this many ticks (hourly).
const PRUNE_EVERY: u32 = 3600;
/// Alert rules are evaluated every this many ticks.
const ALERTS_EVERY: u32 = 5;

/// The background tasks of one instance and the clock that drives the rest.
struct Scheduler {
    svc: Arc<StatusService>,
    stop: watch::Receiver<bool>,
    tasks: JoinSet<()>,
    /// The configured checks (changed by a reload).
    probes: watch::Receiver<Arc<Probes>>,
    /// The probe loops running, by check id: what each probes and its stop.
    running: HashMap<String, (Arc<Check>, watch::Sender<bool>)>,
}

impl StatusService {
    /// Run the probes, move maintenances on time and refresh the snapshot
    /// until `stop` turns true; owns every task it starts and delivers the
    /// notifications queue. With several instances on one PostgreSQL store,
    /// only the elected leader ([`StatusService::is_leader`]) probes, moves
    /// maintenances, sends reminders and prunes; every instance refreshes
    /// its snapshot from the store and delivers the notifications of the
    /// changes it made itself (each decided once across instances).
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let mut scheduler = Scheduler::start(self, stop);
        scheduler.clock().await;
        scheduler.shutdown().await;
    }
}

impl Scheduler {
    /// Start the owned tasks: the leader election (PostgreSQL), one probe
    /// loop per check, and the notification delivery (once).
    fn start(svc: Arc<StatusService>, stop: watch::Receiver<bool>) -> Self {
        let mut tasks = JoinSet::new();
        let lock = svc.lock.lock().ok().and_then(|mut l| l.take());
        if let Some(lock) = lock {
            let leader = svc.leader.clone();
            let stop = stop.clone();
            tasks.spawn(async move {
                crate::leader::run(
                    "singleton jobs",
                    lock,
                    leader,
                    crate::leader::ELECTION_EVERY,
                    stop,
                )
                .await;
            });
        }
        if let Some(queue) = svc.notifier.take_queue() {
            let notifier = svc.notifier.clone();
            let stop = stop.clone();
            tasks.spawn(async move { notifier.deliver(queue, stop).await });
        }
        let probes = svc.probes.subscribe();
        let mut scheduler = Self {
            svc,
            stop,
            tasks,
            probes,
            running: HashMap::new(),
        };
        scheduler.follow_checks();
        scheduler
    }

    /// Run one probe loop per configured check: start the new and changed
    /// ones, stop the changed and removed ones, leave the rest running.
    fn follow_checks(&mut self) {
        let probes = self.probes.borrow_and_update().clone();
        self.running.retain(|id, (running, stop)| {
            let same = probes
                .checks
                .iter()
                .any(|c| &c.id == id && c.settings == running.settings);
            if !same {
                let _ = stop.send(true);
            }
            same
        });
        for c in &probes.checks {
            if self.running.contains_key(&c.id) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            let svc = self.svc.clone();
            let check = c.clone();
            self.tasks
                .spawn(async move { svc.probe_loop(check, stopped).await });
            self.running.insert(c.id.clone(), (c.clone(), stop));
        }
        // Reap the loops that stopped.
        while self.tasks.try_join_next().is_some() {}
    }

    /// Every [`TICK`] until `stop` turns true: the leader's jobs, then every
    /// instance's.
    async fn clock(&mut self) {
        let mut n = 0u32;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut reloaded = false;
            tokio::select! {
                _ = tick.tick() => {}
                Ok(()) = self.probes.changed() => reloaded = true,
                _ = self.stop.wait_for(|s| *s) => break,
            }
            if reloaded {
                self.follow_checks();
                continue;
            }
            let now = orinari_store::now_ms();
            n += 1;
            if self.svc.is_leader() {
                self.lead(n, now).await;
            }
            self.follow(n, now).await;
        }
    }

    /// The singleton jobs: move maintenances on time (and send reminders),
    /// and prune probe history.
    async fn lead(&self, n: u32, now: i64) {
        let svc = &self.svc;
        if let Err(e) = svc.tick(now).await {
            tracing::warn!(error = %e, "status tick failed");
        }
        // Raw probe results are kept 14 days (daily rollups 400): pruned
        // at start and hourly.
        if n % PRUNE_EVERY == 1
            && let Err(e) = svc
                .store
                .prune(now, orinari_store::Retention::default())
                .await
        {
            tracing::warn!(error = %e, "probe history pruning failed");
        }
    }

    /// What every instance does: evaluate its alert rules, and refresh its
    /// snapshot from the store (uptime moves on; other instances wrote).
    async fn follow(&self, n: u32, now: i64) {
        let svc = &self.svc;
        if !svc.alerts.rules().is_empty()
            && n.is_multiple_of(ALERTS_EVERY)
            && let Err(e) = svc.evaluate_alerts(now).await
        {
            tracing::warn!(error = %e, "alert evaluation failed");
        }
        if n.is_multiple_of(REFRESH_EVERY)
            && let Err(e) = svc.reconcile(now, None).await
        {
            tracing::warn!(error = %e, "status refresh failed");
        }
    }

    /// Wait for every owned task to see `stop` and end.
    async fn shutdown(mut self) {
        for (_, (_, stop)) in self.running.drain() {
            let _ = stop.send(true);
        }
        while self.tasks.join_next().await.is_some() {}
    }
}
