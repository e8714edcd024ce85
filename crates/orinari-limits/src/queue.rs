//! The admission queue: at most `max_concurrent` requests run at once (per
//! model); the rest wait in a bounded queue, and when a slot frees the next
//! request is picked
//!
//! 1. from the highest priority that has an eligible waiter,
//! 2. round-robin across keys within that priority (one heavy key cannot
//!    starve the others: each key gets a turn per round, however many
//!    requests it has queued),
//! 3. skipping keys already at their own concurrency cap.
//!
//! A full queue refuses at once ([`Refused::Full`], load shedding) and a
//! waiter gives up after the queue timeout ([`Refused::Timeout`]); a waiter
//! whose caller goes away leaves the queue. Nothing here can grow without
//! bound.
//!
//! Shedding is fair too: when the queue is full, a request from a subject
//! with fewer waiters than the heaviest one (at its priority or below)
//! takes the place of the heaviest subject's newest waiter, which is
//! refused as [`Refused::Full`] — so a key flooding the queue cannot crowd
//! the others out of it, as fq_codel drops from the fattest flow.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The queue is full: shed at once.
    #[error("the queue is full")]
    Full,
    /// Waited for the whole queue timeout.
    #[error("timed out in the queue")]
    Timeout,
}

/// Who is asking: their key (or client IP), priority and concurrency cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Subject (API key id, or client IP).
    pub subject: String,
    /// Higher is served first.
    pub priority: i32,
    /// How many of this subject's requests may run at once.
    pub max_concurrent: usize,
}

struct Waiter {
    id: u64,
    cap: usize,
    /// `Ok` grants a slot; `Err` refuses (shed to make room for another subject).
    tx: oneshot::Sender<Result<(), Refused>>,
}

#[derive(Default)]
struct Level {
    /// Subjects with waiters, in turn order.
    ring: VecDeque<String>,
    queues: HashMap<String, VecDeque<Waiter>>,
}

#[derive(Default)]
struct State {
    running: usize,
    per_subject: HashMap<String, usize>,
    waiting: usize,
    next_id: u64,
    /// Keyed by negated priority, so iteration goes highest first.
    levels: BTreeMap<i64, Level>,
}

struct Shared {
    state: Mutex<State>,
    max_concurrent: usize,
    max_waiting: usize,
    timeout: Duration,
}

/// One model's admission queue; cheap to clone.
#[derive(Clone)]
pub struct Admission {
    shared: Arc<Shared>,
}

/// A running slot; dropping it frees the slot for the next waiter.
pub struct Permit {
    shared: Arc<Shared>,
    subject: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.running = st.running.saturating_sub(1);
        if let Some(n) = st.per_subject.get_mut(&self.subject) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.per_subject.remove(&self.subject);
            }
        }
        self.shared.dispatch(&mut st);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Grant free slots to waiters, by priority then round-robin.
    fn dispatch(&self, st: &mut State) {
        while st.running < self.max_concurrent {
            let Some(waiter) = next_waiter(st) else {
                return;
            };
            let (subject, w) = waiter;
            st.waiting = st.waiting.saturating_sub(1);
            if w.tx.send(Ok(())).is_ok() {
                st.running += 1;
                *st.per_subject.entry(subject).or_default() += 1;
            }
        }
    }

    /// A full queue and a request from `subject`: refuse the newest waiter
    /// of the subject with the most waiters at `priority` or below, if it
    /// has at least two more than `subject` has. True when a place was made.
    fn shed_heaviest(&self, st: &mut State, subject: &str, priority: i32) -> bool {
        let mine = st
            .levels
            .get(&-i64::from(priority))
            .and_then(|l| l.queues.get(subject))
            .map_or(0, VecDeque::len);
        let heaviest = st
            .levels
            .range(-i64::from(priority)..)
            .flat_map(|(key, level)| level.queues.iter().map(move |(s, q)| (*key, s, q.len())))
            .filter(|(_, s, len)| s.as_str() != subject && *len > mine + 1)
            .max_by_key(|(key, _, len)| (*len, *key))
            .map(|(key, s, _)| (key, s.clone()));
        let Some((key, victim)) = heaviest else {
            return false;
        };
        let Some(level) = st.levels.get_mut(&key) else {
            return false;
        };
        let Some(w) = level.queues.get_mut(&victim).and_then(VecDeque::pop_back) else {
            return false;
        };
        if level.queues.get(&victim).is_some_and(VecDeque::is_empty) {
            level.queues.remove(&victim);
            level.ring.retain(|s| *s != victim);
        }
        if level.queues.is_empty() {
            st.levels.remove(&key);
        }
        st.waiting = st.waiting.saturating_sub(1);
        // Its caller may have gone already; either way the place is free.
        let _ = w.tx.send(Err(Refused::Full));
        true
    }

    /// Remove a waiter that gave up; true when it was still queued.
    fn remove(&self, st: &mut State, subject: &str, priority: i32, id: u64) -> bool {
        let key = -i64::from(priority);
        let Some(level) = st.levels.get_mut(&key) else {
            return false;
        };
        let Some(q) = level.queues.get_mut(subject) else {
            return false;
        };
        let Some(pos) = q.iter().position(|w| w.id == id) else {
            return false;
        };
        q.remove(pos);
        if q.is_empty() {
            level.queues.remove(subject);
            level.ring.retain(|s| s != subject);
        }
        if level.queues.is_empty() {
            st.levels.remove(&key);
        }
        st.waiting = st.waiting.saturating_sub(1);
        true
    }
}

fn next_waiter(st: &mut State) -> Option<(String, Waiter)> {
    let State {
        levels,
        per_subject,
        ..
    } = st;
    let mut emptied = None;
    let mut found = None;
    for (key, level) in levels.iter_mut() {
        for _ in 0..level.ring.len() {
            let Some(subject) = level.ring.pop_front() else {
                break;
            };
            let running = per_subject.get(&subject).copied().unwrap_or(0);
            let Some(q) = level.queues.get_mut(&subject) else {
                continue;
            };
            let eligible = q.front().is_some_and(|w| running < w.cap);
            if !eligible {
                level.ring.push_back(subject);
                continue;
            }
            let Some(w) = q.pop_front() else { continue };
            if q.is_empty() {
                level.queues.remove(&subject);
            } else {
                level.ring.push_back(subject.clone());
            }
            if level.queues.is_empty() {
                emptied = Some(*key);
            }
            found = Some((subject, w));
            break;
        }
        if found.is_some() {
            break;
        }
    }
    if let Some(k) = emptied {
        levels.remove(&k);
    }
    found
}

impl Admission {
    /// A queue running at most `max_concurrent` at once with at most
    /// `max_waiting` waiting for at most `timeout` each.
    pub fn new(max_concurrent: usize, max_waiting: usize, timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                max_concurrent: max_concurrent.max(1),
                max_waiting,
                timeout,
            }),
        }
    }

    /// Its settings: `(max_concurrent, max_waiting, timeout)`.
    pub fn settings(&self) -> (usize, usize, Duration) {
        (
            self.shared.max_concurrent,
            self.shared.max_waiting,
            self.shared.timeout,
        )
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.shared.lock().waiting
    }

    /// Requests running now.
    pub fn running(&self) -> usize {
        self.shared.lock().running
    }

    /// Wait for a slot (or be refused). Dropping the future leaves the queue.
    pub async fn acquire(&self, ticket: &Ticket) -> Result<Permit, Refused> {
        let cap = ticket.max_concurrent.max(1);
        let (id, rx) = {
            let mut st = self.shared.lock();
            let mine = st.per_subject.get(&ticket.subject).copied().unwrap_or(0);
            if st.waiting == 0 && st.running < self.shared.max_concurrent && mine < cap {
                st.running += 1;
                *st.per_subject.entry(ticket.subject.clone()).or_default() += 1;
                return Ok(self.permit(&ticket.subject));
            }
            if st.waiting >= self.shared.max_waiting
                && !self
                    .shared
                    .shed_heaviest(&mut st, &ticket.subject, ticket.priority)
            {
                return Err(Refused::Full);
            }
            let (tx, rx) = oneshot::channel();
            st.next_id += 1;
            let id = st.next_id;
            st.waiting += 1;
            let level = st.levels.entry(-i64::from(ticket.priority)).or_default();
            let q = level.queues.entry(ticket.subject.clone()).or_default();
            if q.is_empty() {
                level.ring.push_back(ticket.subject.clone());
            }
            q.push_back(Waiter { id, cap, tx });
            // A slot may be free while a capped subject waits.
            self.shared.dispatch(&mut st);
            (id, rx)
        };
        let mut wait = Wait {
            shared: &self.shared,
            subject: &ticket.subject,
            priority: ticket.priority,
            id,
            rx,
            done: false,
        };
        let outcome = tokio::time::timeout(self.shared.timeout, &mut wait.rx).await;
        wait.done = true;
        match outcome {
            Ok(Ok(Ok(()))) => Ok(self.permit(&ticket.subject)),
            Ok(Ok(Err(refused))) => Err(refused),
            Ok(Err(_)) => Err(Refused::Timeout),
            Err(_) => {
                let mut st = self.shared.lock();
                if self
                    .shared
                    .remove(&mut st, &ticket.subject, ticket.priority, id)
                {
                    return Err(Refused::Timeout);
                }
                // Not queued any more: granted at the last moment (grants
                // happen under the lock, so the reply is already there).
                let granted = wait.rx.try_recv();
                drop(st);
                match granted {
                    Ok(Ok(())) => Ok(self.permit(&ticket.subject)),
                    Ok(Err(refused)) => Err(refused),
                    Err(_) => Err(Refused::Timeout),
                }
            }
        }
    }

    fn permit(&self, subject: &str) -> Permit {
        Permit {
            shared: self.shared.clone(),
            subject: subject.to_string(),
        }
    }
}

/// A queued waiter. When its caller goes away mid-wait, it leaves the
/// queue; if it was granted a slot meanwhile, it gives the slot back.
struct Wait<'a> {
    shared: &'a Arc<Shared>,
    subject: &'a str,
    priority: i32,
    id: u64,
    rx: oneshot::Receiver<Result<(), Refused>>,
    done: bool,
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut st = self.shared.lock();
        if self
            .shared
            .remove(&mut st, self.subject, self.priority, self.id)
        {
            return;
        }
        // Grants are sent under the lock: if ours was sent, it is here now.
        let granted = matches!(self.rx.try_recv(), Ok(Ok(())));
        drop(st);
        if granted {
            drop(Permit {
                shared: self.shared.clone(),
                subject: self.subject.to_string(),
            });
        }
    }
}
