//! After the first token: hand the answer on while enforcing the idle and
//! total timeouts, and record how it ended (passive health, tokens, metrics).
//!
//! A failure here can no longer fail over for a stream (the client has its
//! first chunk): the error travels on as the stream's last event, and the
//! server ends the SSE stream with an error event and `[DONE]`.

use std::time::{Duration, Instant};

use orinari_models::{Event, Generation, ModelError, Usage};
use tokio::sync::mpsc;

use crate::config::Timeouts;
use crate::member::{InFlight, Outcome};

/// Events buffered between the relay and the reader.
const CHANNEL: usize = 64;

fn done_usage(e: &Event) -> Option<Usage> {
    match e {
        Event::Done { usage, .. } => Some(*usage),
        Event::Delta(_) => None,
    }
}

/// Relay a stream in a task. The task is owned by the returned
/// [`Generation`]: it ends with the answer, on a timeout, or as soon as the
/// reader drops the generation (which drops the upstream's and cancels it).
pub fn spawn(
    guard: InFlight,
    mut upstream: Generation,
    first: Event,
    timeouts: Timeouts,
    started: Instant,
) -> Generation {
    let prompt_tokens = upstream.prompt_tokens;
    let (tx, rx) = mpsc::channel(CHANNEL);
    let member = guard.0.clone();
    let first_usage = done_usage(&first);
    // The channel is empty: the first event always fits.
    let _ = tx.try_send(Ok(first));
    tokio::spawn(async move {
        let _guard = guard;
        if let Some(u) = first_usage {
            member.tokens(u.prompt_tokens, u.completion_tokens);
            member.finish(Outcome::Success, Instant::now());
            return;
        }
        let end = tokio::time::Instant::from_std(started + timeouts.total);
        loop {
            let next = tokio::select! {
                ev = tokio::time::timeout(timeouts.idle, upstream.events.recv()) => match ev {
                    Ok(ev) => ev,
                    Err(_) => Some(Err(ModelError::Timeout(format!(
                        "no token for {} ms", timeouts.idle.as_millis()
                    )))),
                },
                () = tokio::time::sleep_until(end) => Some(Err(ModelError::Timeout(format!(
                    "the answer took longer than {} ms", timeouts.total.as_millis()
                )))),
                () = tx.closed() => {
                    member.finish(Outcome::Cancelled, Instant::now());
                    return;
                }
            };
            let event = next.unwrap_or_else(|| {
                Err(ModelError::Upstream(
                    "the answer ended before it finished".into(),
                ))
            });
            let outcome = match &event {
                Ok(Event::Delta(_)) => None,
                Ok(Event::Done { usage, .. }) => {
                    member.tokens(usage.prompt_tokens, usage.completion_tokens);
                    Some(Outcome::Success)
                }
                Err(e) => Some(Outcome::of(e)),
            };
            if let Some(o) = outcome {
                member.finish(o, Instant::now());
                let _ = tx.send(event).await;
                return;
            }
            if tx.send(event).await.is_err() {
                member.finish(Outcome::Cancelled, Instant::now());
                return;
            }
        }
    });
    Generation {
        prompt_tokens,
        events: rx,
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
    let deadline = started + total;
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
        member.finish(Outcome::of(&e), Instant::now());
        return Err(e);
    }
    if let Some(u) = events.last().and_then(done_usage) {
        member.tokens(u.prompt_tokens, u.completion_tokens);
    }
    member.finish(Outcome::Success, Instant::now());
    let (tx, rx) = mpsc::channel(events.len());
    for e in events {
        let _ = tx.try_send(Ok(e));
    }
    Ok(Generation {
        prompt_tokens: upstream.prompt_tokens,
        events: rx,
    })
}
