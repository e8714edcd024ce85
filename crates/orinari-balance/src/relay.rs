//! After the first token: hand the answer on while enforcing the idle and
//! total timeouts, and record how it ended (passive health, tokens, metrics).
//!
//! A failure here can no longer fail over for a stream (the client has its
//! first chunk): the error travels on as the stream's last event, and the
//! server ends the SSE stream with an error event and `[DONE]`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use orinari_models::{
    Event, EventResult, EventSource, Events, Generation, ModelError, Outcome, Usage,
};

use crate::config::Timeouts;
use crate::member::InFlight;

/// Timeouts are capped here so deadline arithmetic never overflows (the
/// config takes any number of milliseconds).
const LONGEST: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn done_usage(e: &Event) -> Option<Usage> {
    match e {
        Event::Done { usage, .. } => Some(*usage),
        Event::Delta(_) | Event::ToolCall(_) | Event::Logprobs(_) => None,
    }
}

/// Relay a stream after its first event. The returned [`Generation`] is
/// polled in the reader's own task (no relay task, no channel): it ends with
/// the answer or on a timeout, and dropping it drops the upstream's
/// generation, which cancels it, and records the request as cancelled.
pub fn stream(
    guard: InFlight,
    upstream: Generation,
    first: Event,
    timeouts: Timeouts,
    started: Instant,
) -> Generation {
    let prompt_tokens = upstream.prompt_tokens;
    let total = timeouts.total.min(LONGEST);
    let mut relay = Relay {
        upstream: Some(upstream.events),
        first: None,
        guard: Some(guard),
        idle: timeouts.idle.min(LONGEST),
        total,
        end: started + total,
        last: Instant::now(),
        timer: None,
    };
    if let Some(u) = done_usage(&first) {
        relay.finish(Outcome::Success, Some(u));
    }
    relay.first = Some(first);
    Generation {
        prompt_tokens,
        events: Events::polled(relay),
    }
}

/// A stream being handed on (see [`stream`]).
struct Relay {
    /// `None` once the answer has ended.
    upstream: Option<Events>,
    /// The first event, already read by the pool; handed on first.
    first: Option<Event>,
    /// `Some` while the request is in flight; its end is recorded once.
    guard: Option<InFlight>,
    idle: Duration,
    total: Duration,
    /// The total deadline.
    end: Instant,
    /// When the last event was handed on: the idle clock starts there.
    last: Instant,
    /// Wakes the reader at the earlier of the idle and total deadlines. It
    /// is armed only while the upstream keeps the reader waiting, and moved
    /// only when it fires, so a busy stream costs no timer operations.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Relay {
    /// Record how the request ended and let the upstream go.
    fn finish(&mut self, outcome: Outcome, usage: Option<Usage>) {
        self.upstream = None;
        self.timer = None;
        if let Some(guard) = self.guard.take() {
            if let Some(u) = usage {
                guard.0.tokens(u.prompt_tokens, u.completion_tokens);
            }
            guard.0.finish(outcome, Instant::now());
        }
    }

    /// The event ending the stream on a timeout, if one has passed.
    fn timed_out(&self, now: Instant) -> Option<ModelError> {
        if now >= self.end {
            Some(ModelError::Timeout(format!(
                "the answer took longer than {} ms",
                self.total.as_millis()
            )))
        } else if now >= self.last + self.idle {
            Some(ModelError::Timeout(format!(
                "no token for {} ms",
                self.idle.as_millis()
            )))
        } else {
            None
        }
    }

    /// Pass an upstream event on, recording the end of the answer.
    fn hand_on(&mut self, event: Option<EventResult>) -> EventResult {
        let event = event.unwrap_or_else(|| {
            Err(ModelError::Upstream(
                "the answer ended before it finished".into(),
            ))
        });
        match &event {
            Ok(Event::Delta(_) | Event::ToolCall(_) | Event::Logprobs(_)) => {}
            Ok(Event::Done { usage, .. }) => self.finish(Outcome::Success, Some(*usage)),
            Err(e) => self.finish(e.outcome(), None),
        }
        event
    }
}

impl EventSource for Relay {
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<EventResult>> {
        if let Some(first) = self.first.take() {
            self.last = Instant::now();
            return Poll::Ready(Some(Ok(first)));
        }
        let Some(upstream) = self.upstream.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(event) = upstream.poll_recv(cx) {
            let now = Instant::now();
            // A stream that never pauses still ends at the total deadline.
            if now >= self.end {
                let e = self.timed_out(now);
                return Poll::Ready(Some(self.hand_on(e.map(Err))));
            }
            self.last = now;
            return Poll::Ready(Some(self.hand_on(event)));
        }
        // The upstream keeps us waiting: arm (or re-arm) the timer.
        loop {
            let now = Instant::now();
            if let Some(e) = self.timed_out(now) {
                return Poll::Ready(Some(self.hand_on(Some(Err(e)))));
            }
            let deadline = tokio::time::Instant::from_std((self.last + self.idle).min(self.end));
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            // Deadlines only move later, so an early wake-up is harmless:
            // re-arm only a timer that has fired.
            if timer.is_elapsed() {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The reader went away before the answer ended.
        self.finish(Outcome::Cancelled, None);
    }
}

/// Collect a whole answer before anything reaches the client, so any failure
/// can still fail over; hand it on as a finished generation.
pub async fn whole(
    guard: InFlight,
    mut upstream: Generation,
    first: Event,
    started: Instant,
    total: Duration,
) -> Result<Generation, ModelError> {
    let deadline = started + total.min(LONGEST);
    let member = guard.0.clone();
    let mut events = vec![first];
    let result = tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), async {
        while done_usage(events.last().unwrap_or(&Event::Delta(String::new()))).is_none() {
            match upstream.events.recv().await {
                Some(Ok(e)) => events.push(e),
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(ModelError::Upstream(
                        "the answer ended before it finished".into(),
                    ));
                }
            }
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|_| {
        Err(ModelError::Timeout(format!(
            "the answer took longer than {} ms",
            total.as_millis()
        )))
    });
    drop(guard);
    if let Err(e) = result {
        member.finish(e.outcome(), Instant::now());
        return Err(e);
    }
    if let Some(u) = events.last().and_then(done_usage) {
        member.tokens(u.prompt_tokens, u.completion_tokens);
    }
    member.finish(Outcome::Success, Instant::now());
    Ok(Generation {
        prompt_tokens: upstream.prompt_tokens,
        events: Events::ready(events.into_iter().map(Ok).collect()),
    })
}
