//! Traffic per rollout group (blue/green/canary): set at once, or stepped
//! with an automatic halt and rollback when a group that is gaining traffic
//! fails too often; instant rollback to the weights before the last rollout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::BalanceError;
use crate::member::Member;
use crate::pool::Pool;

/// Weight of a group nobody has set.
pub const DEFAULT_GROUP_WEIGHT: u32 = 100;
/// Largest weight accepted for a group.
pub const MAX_GROUP_WEIGHT: u32 = 10_000;
/// A stepped rollout judges a group only after this many requests in a step.
pub const MIN_REQUESTS_TO_JUDGE: u64 = 3;
/// Time between steps when the request names none.
pub const DEFAULT_STEP_INTERVAL: Duration = Duration::from_secs(30);

/// Current and previous group weights.
#[derive(Debug, Clone)]
pub struct Groups {
    current: BTreeMap<String, u32>,
    previous: Option<BTreeMap<String, u32>>,
}

impl Groups {
    pub(crate) fn new(initial: &BTreeMap<String, u32>, members: &[Arc<Member>]) -> Self {
        let current = members
            .iter()
            .map(|m| {
                let g = m.spec.group.clone();
                let w = initial.get(&g).copied().unwrap_or(DEFAULT_GROUP_WEIGHT);
                (g, w)
            })
            .collect();
        Self {
            current,
            previous: None,
        }
    }

    /// A group's weight.
    pub fn weight(&self, group: &str) -> u32 {
        self.current
            .get(group)
            .copied()
            .unwrap_or(DEFAULT_GROUP_WEIGHT)
    }

    /// Every group and its weight.
    pub fn current(&self) -> &BTreeMap<String, u32> {
        &self.current
    }

    /// The weights a rollback would restore.
    pub fn previous(&self) -> Option<&BTreeMap<String, u32>> {
        self.previous.as_ref()
    }
}

/// A rollout request (`POST /admin/v1/models/{name}/rollout`).
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutRequest {
    /// Target weight per group; groups not named keep theirs.
    pub weights: BTreeMap<String, u32>,
    /// Steps to reach the target (1 = at once).
    pub steps: u32,
    /// Time each step runs before the next.
    pub step_interval: Duration,
    /// Halt and roll back when a gaining group's error rate in a step exceeds this.
    pub max_error_rate: Option<f64>,
}

/// Where the last rollout stands.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RolloutStatus {
    /// `none`, `running`, `completed`, `rolled_back` (by itself) or `reverted` (by an operator).
    pub state: &'static str,
    /// Steps applied so far.
    pub step: u32,
    /// Steps in total.
    pub steps: u32,
    /// The target weights.
    pub target: BTreeMap<String, u32>,
    /// Why it rolled back, if it did.
    pub reason: Option<String>,
}

/// The status plus the task running a stepped rollout.
#[derive(Debug, Default)]
pub struct RolloutState {
    pub(crate) status: RolloutStatus,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RolloutState {
    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Pool {
    fn set_groups(&self, weights: BTreeMap<String, u32>, remember: bool) {
        if let Ok(mut g) = self.groups.write() {
            if remember {
                g.previous = Some(g.current.clone());
            }
            g.current = weights;
        }
        self.apply_weights();
    }

    fn counts(&self) -> BTreeMap<String, (u64, u64)> {
        let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for m in &self.members {
            let e = out.entry(m.spec.group.clone()).or_default();
            e.0 += m.requests.load(Ordering::Relaxed);
            e.1 += m.failures.load(Ordering::Relaxed);
        }
        out
    }

    fn with_rollout<T>(&self, f: impl FnOnce(&mut RolloutState) -> T) -> Option<T> {
        self.rollout.lock().ok().map(|mut r| f(&mut r))
    }

    /// The last rollout's status.
    pub fn rollout_status(&self) -> RolloutStatus {
        self.with_rollout(|r| r.status.clone()).unwrap_or_default()
    }

    /// Start a rollout: at once (`steps` ≤ 1) or stepped in a task this pool owns.
    pub fn rollout(self: &Arc<Self>, req: RolloutRequest) -> Result<(), BalanceError> {
        let from = self
            .groups
            .read()
            .map(|g| g.current.clone())
            .map_err(|_| BalanceError::Internal)?;
        if req.weights.is_empty() {
            return Err(BalanceError::invalid(
                "weights",
                "must name at least one group",
            ));
        }
        let mut to = from.clone();
        for (group, w) in &req.weights {
            if !from.contains_key(group) {
                return Err(BalanceError::invalid(
                    "weights",
                    format!(
                        "unknown group `{group}`; this model has {}",
                        from.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            if *w > MAX_GROUP_WEIGHT {
                return Err(BalanceError::invalid(
                    "weights",
                    format!("`{group}` is {w}; the most is {MAX_GROUP_WEIGHT}"),
                ));
            }
            to.insert(group.clone(), *w);
        }
        if to.values().all(|w| *w == 0) {
            return Err(BalanceError::invalid(
                "weights",
                "every group would get 0: the model would receive no traffic",
            ));
        }
        if let Some(r) = req.max_error_rate
            && !(0.0..=1.0).contains(&r)
        {
            return Err(BalanceError::invalid(
                "max_error_rate",
                "must be between 0 and 1",
            ));
        }
        let steps = req.steps.max(1);
        self.with_rollout(|r| {
            r.stop();
            r.status = RolloutStatus {
                state: if steps == 1 { "completed" } else { "running" },
                step: u32::from(steps == 1),
                steps,
                target: to.clone(),
                reason: None,
            };
        });
        if steps == 1 {
            self.set_groups(to, true);
            tracing::info!(model = %self.config.name, "rollout applied");
            return Ok(());
        }
        // Remember where we started, so a rollback restores it.
        if let Ok(mut g) = self.groups.write() {
            g.previous = Some(from.clone());
        }
        self.apply_step(&from, &to, 1, steps);
        let pool = Arc::clone(self);
        #[expect(
            clippy::disallowed_methods,
            reason = "owned by the pool's rollout state: a new rollout, a rollback or the pool's retirement aborts it"
        )]
        let task = tokio::spawn(async move { pool.stepped(from, to, steps, req).await });
        self.with_rollout(|r| r.task = Some(task));
        Ok(())
    }

    async fn stepped(
        self: Arc<Self>,
        from: BTreeMap<String, u32>,
        to: BTreeMap<String, u32>,
        steps: u32,
        req: RolloutRequest,
    ) {
        for k in 1..=steps {
            // Step 1 was applied before this task started.
            if k > 1 {
                self.apply_step(&from, &to, k, steps);
            }
            let before = self.counts();
            tokio::time::sleep(req.step_interval).await;
            let Some(max) = req.max_error_rate else {
                continue;
            };
            let after = self.counts();
            for (group, &target) in &to {
                if target <= from.get(group).copied().unwrap_or(0) {
                    continue;
                }
                let (r0, f0) = before.get(group).copied().unwrap_or_default();
                let (r1, f1) = after.get(group).copied().unwrap_or_default();
                let (requests, failures) = (r1.saturating_sub(r0), f1.saturating_sub(f0));
                if requests < MIN_REQUESTS_TO_JUDGE {
                    continue;
                }
                let rate = failures as f64 / requests as f64;
                if rate > max {
                    self.set_groups(from.clone(), false);
                    let reason = format!(
                        "group `{group}` failed {failures} of {requests} requests ({:.1}%) in step {k}, over the limit of {:.1}%",
                        rate * 100.0,
                        max * 100.0
                    );
                    tracing::warn!(model = %self.config.name, %reason, "rollout halted and rolled back");
                    self.with_rollout(|r| {
                        r.status.state = "rolled_back";
                        r.status.reason = Some(reason);
                    });
                    return;
                }
            }
        }
        self.with_rollout(|r| r.status.state = "completed");
    }

    fn apply_step(
        &self,
        from: &BTreeMap<String, u32>,
        to: &BTreeMap<String, u32>,
        k: u32,
        steps: u32,
    ) {
        let weights: BTreeMap<String, u32> = to
            .iter()
            .map(|(g, &t)| {
                let f = i64::from(from.get(g).copied().unwrap_or(t));
                let w = f + (i64::from(t) - f) * i64::from(k) / i64::from(steps);
                (g.clone(), w.max(0) as u32)
            })
            .collect();
        self.set_groups(weights, false);
        self.with_rollout(|r| r.status.step = k);
        tracing::info!(model = %self.config.name, step = k, steps, "rollout step");
    }

    /// Restore the weights before the last rollout, at once.
    pub fn rollback(&self) -> Result<(), BalanceError> {
        self.with_rollout(RolloutState::stop);
        let previous = self
            .groups
            .write()
            .map_err(|_| BalanceError::Internal)?
            .previous
            .take()
            .ok_or_else(|| BalanceError::invalid("rollback", "there is no rollout to roll back"))?;
        self.set_groups(previous, false);
        self.with_rollout(|r| {
            r.status.state = "reverted";
            r.status.reason = Some("rolled back by an operator".into());
        });
        tracing::info!(model = %self.config.name, "rolled back");
        Ok(())
    }

    /// Stop a running stepped rollout (shutdown).
    pub(crate) fn stop_rollout(&self) {
        self.with_rollout(RolloutState::stop);
    }
}
