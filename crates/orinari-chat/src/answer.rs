//! [`Answer`]: a running answer that owns what admitting it took — the
//! model's queue permit and the caller's token reservation — and gives them
//! back when it ends: the reservation is settled with the real usage when
//! the last event arrives (or with the estimate, or nothing, when it ends
//! another way), and the permit is freed when the answer is dropped (for a
//! stream, when its response body is). A model served by one backend of
//! its own also records its per-model metrics here. A grounded answer's
//! text passes through its [`Citer`]: markers that cite nothing are removed
//! on the way, and the kept ones become annotations.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use orinari_api::grounded::{Annotation, Grounding};
use orinari_limits::queue::Permit;
use orinari_limits::{Limiter, Policy, Window};
use orinari_models::{Event, EventResult, Generation, ModelError, Outcome};

use crate::cache::Recorder;
use crate::cite::Citer;
use crate::meter::Meter;

/// A token reservation and a queue slot, held until the answer ends.
pub(crate) struct Held {
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) subject: String,
    pub(crate) policy: Policy,
    pub(crate) estimate: u32,
    pub(crate) permit: Option<Permit>,
}

impl Held {
    /// Settle the reservation: `actual` tokens were used. Without I/O when
    /// it can (memory limiter); a Redis round trip, under its timeout, must
    /// not hold the answer: a task of its own.
    pub(crate) fn settle(&mut self, actual: u32) {
        if self
            .limiter
            .settle_now(&self.subject, self.policy, self.estimate, actual)
        {
            return;
        }
        // An answer dropped while the runtime shuts down has nothing to settle.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let limiter = self.limiter.clone();
        let subject = std::mem::take(&mut self.subject);
        let (policy, estimate) = (self.policy, self.estimate);
        #[expect(
            clippy::disallowed_methods,
            reason = "bounded: one Redis settle under the limiter's own timeout; a lost settle only leaves the reservation to expire with its window"
        )]
        runtime.spawn(async move {
            limiter.settle(&subject, policy, estimate, actual).await;
        });
    }
}

/// Metrics of one answer from a single-backend model.
pub(crate) struct Metered {
    pub(crate) meter: Meter,
    /// When the backend was asked.
    pub(crate) started: Instant,
    pub(crate) first_seen: bool,
}

/// What a grounded answer was given, and its citations so far.
pub(crate) struct Cited {
    grounding: Grounding,
    citer: Citer,
    /// The last event, held while the text held back by the citer goes first.
    pending: Option<EventResult>,
}

impl Cited {
    pub(crate) fn new(grounding: Grounding, refs: Vec<(String, Option<String>)>) -> Self {
        Self {
            grounding,
            citer: Citer::new(refs),
            pending: None,
        }
    }
}

/// A whole answer with what grounded it.
#[derive(Debug)]
pub struct Collected {
    /// The answer (markers checked).
    pub answer: orinari_models::Answer,
    /// For a grounded answer: its sources, each source's outcome, and the
    /// annotations of its markers.
    pub grounding: Option<(Grounding, Vec<Annotation>)>,
}

/// A running answer. Read it with [`Answer::poll_event`] (a stream) or
/// [`Answer::collect`] (a whole answer); dropping it cancels the work in
/// the backend and frees the queue slot.
pub struct Answer {
    generation: Generation,
    model: String,
    /// Screening flagged the request: the guard's score.
    flagged: Option<f32>,
    stream: bool,
    tokens: Window,
    held: Option<Held>,
    metered: Option<Metered>,
    /// The settlement ran (the last event came, or an error).
    ended: bool,
    /// A grounded answer's sources and citations.
    cited: Option<Cited>,
    /// Recording for the response cache, until the answer is stored or
    /// turns out not storable.
    recorder: Option<Recorder>,
    /// Replayed from the response cache.
    cached: bool,
}

impl Answer {
    pub(crate) fn new(
        generation: Generation,
        model: String,
        flagged: Option<f32>,
        stream: bool,
        tokens: Window,
        held: Held,
        metered: Option<Metered>,
    ) -> Self {
        Self {
            generation,
            model,
            flagged,
            stream,
            tokens,
            held: Some(held),
            metered,
            ended: false,
            cited: None,
            recorder: None,
            cached: false,
        }
    }

    /// The same, its events recorded for the response cache.
    pub(crate) fn recording(mut self, recorder: Option<Recorder>) -> Self {
        self.recorder = recorder;
        self
    }

    /// The same, marked as replayed from the response cache.
    pub(crate) fn replayed(mut self) -> Self {
        self.cached = true;
        self
    }

    /// Whether the answer is replayed from the response cache (for the
    /// `x-orinari-cache: hit` header).
    pub fn cache_hit(&self) -> bool {
        self.cached
    }

    /// The same as a grounded answer (`None`: not grounded).
    pub(crate) fn grounded(mut self, cited: Option<Cited>) -> Self {
        self.cited = cited;
        self
    }

    /// An answer that holds no queue slot or reservation and records no
    /// metrics: a generation read as an answer (tests of the surfaces,
    /// tools).
    pub fn unadmitted(generation: Generation, model: String, stream: bool) -> Self {
        Self {
            generation,
            model,
            flagged: None,
            stream,
            tokens: Window {
                limit: 0,
                remaining: 0,
                reset: std::time::Duration::ZERO,
            },
            held: None,
            metered: None,
            ended: false,
            cited: None,
            recorder: None,
            cached: false,
        }
    }

    /// Whether the client reads it as a stream.
    pub fn stream(&self) -> bool {
        self.stream
    }

    /// The model's name, as the client asked for it.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Screening found an attack and its action is `flag`: the answer goes
    /// out marked.
    pub fn flagged(&self) -> bool {
        self.flagged.is_some()
    }

    /// The guard's score (attack probability, 0 to 1) when the answer is
    /// flagged (for the `x-orinari-guard-score` header).
    pub fn guard_score(&self) -> Option<f32> {
        self.flagged
    }

    /// The caller's token limit after this answer's reservation (for the
    /// `x-ratelimit-*-tokens` headers).
    pub fn tokens(&self) -> Window {
        self.tokens
    }

    /// Exact prompt token count, known before the first token.
    pub fn prompt_tokens(&self) -> u32 {
        self.generation.prompt_tokens
    }

    /// A grounded answer's sources and each source's outcome (known
    /// before the first token); `None` when the answer is not grounded.
    pub fn grounding(&self) -> Option<&Grounding> {
        self.cited.as_ref().map(|c| &c.grounding)
    }

    /// The annotations of the markers passed on so far (all of them once
    /// the last event has been read); empty when not grounded.
    pub fn annotations(&self) -> &[Annotation] {
        self.cited
            .as_ref()
            .map_or(&[][..], |c| c.citer.annotations())
    }

    /// The next event; `Ready(None)` once the answer has ended.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<EventResult>> {
        loop {
            if let Some(event) = self.cited.as_mut().and_then(|c| c.pending.take()) {
                return Poll::Ready(Some(event));
            }
            let event = std::task::ready!(self.generation.events.poll_recv(cx));
            if let Some(r) = &mut self.recorder
                && !r.observe(event.as_ref())
            {
                self.recorder = None;
            }
            if !self.ended {
                self.observe(event.as_ref());
            }
            let Some(cited) = self.cited.as_mut() else {
                return Poll::Ready(event);
            };
            match event {
                Some(Ok(Event::Delta(text))) => {
                    let text = cited.citer.push(&text);
                    if !text.is_empty() {
                        return Poll::Ready(Some(Ok(Event::Delta(text))));
                    }
                }
                Some(Ok(done @ Event::Done { .. })) => {
                    let tail = cited.citer.finish();
                    let (kept, removed) = cited.citer.counts();
                    tracing::debug!(
                        markers_kept = kept,
                        markers_removed = removed,
                        "citations checked"
                    );
                    if tail.is_empty() {
                        return Poll::Ready(Some(Ok(done)));
                    }
                    cited.pending = Some(Ok(done));
                    return Poll::Ready(Some(Ok(Event::Delta(tail))));
                }
                other => return Poll::Ready(other),
            }
        }
    }

    /// The next event; `None` once the answer has ended.
    pub async fn recv(&mut self) -> Option<EventResult> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Wait for the whole answer. An answer that ends without its last
    /// event is an error, never a silently truncated answer.
    pub async fn collect(self) -> Result<orinari_models::Answer, ModelError> {
        self.collect_grounded().await.map(|c| c.answer)
    }

    /// Wait for the whole answer, with what grounded it.
    pub async fn collect_grounded(mut self) -> Result<Collected, ModelError> {
        let mut answer = orinari_models::Collector::default();
        while let Some(event) = self.recv().await {
            if let Some(done) = answer.push(event?) {
                let grounding = self.cited.take().map(|c| {
                    let annotations = c.citer.annotations().to_vec();
                    (c.grounding, annotations)
                });
                return Ok(Collected {
                    answer: done,
                    grounding,
                });
            }
        }
        Err(ModelError::Internal(
            "the model stopped without finishing its answer".into(),
        ))
    }

    /// Bookkeeping for one event (`None`: the events ended).
    fn observe(&mut self, event: Option<&EventResult>) {
        if let Some(m) = &mut self.metered
            && !m.first_seen
            && event.is_some()
        {
            m.first_seen = true;
            m.meter.first_token(m.started.elapsed());
        }
        let (outcome, actual) = match event {
            Some(Ok(Event::Delta(_) | Event::ToolCall(_) | Event::Logprobs(_))) => return,
            Some(Ok(Event::Done { usage, .. })) => {
                if let Some(m) = &self.metered {
                    m.meter.tokens(usage.prompt_tokens, usage.completion_tokens);
                }
                let used = u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens);
                (Outcome::Success, u32::try_from(used).unwrap_or(u32::MAX))
            }
            Some(Err(e)) => (e.outcome(), self.unfinished()),
            None => (Outcome::Error, self.unfinished()),
        };
        self.end(outcome, actual);
    }

    /// Tokens charged for an answer that did not finish: a stream has
    /// already sent what it generated (the estimate stands); a whole
    /// answer that failed generated nothing for the client (nothing).
    fn unfinished(&self) -> u32 {
        match (&self.held, self.stream) {
            (Some(h), true) => h.estimate,
            _ => 0,
        }
    }

    fn end(&mut self, outcome: Outcome, actual: u32) {
        self.ended = true;
        if let Some(m) = &self.metered {
            m.meter.finish(outcome);
        }
        if let Some(held) = &mut self.held {
            // The permit stays until the drop.
            held.settle(actual);
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if !self.ended {
            // The client went away first (or the answer was never read to
            // its end): what was reserved stands.
            let estimate = self.held.as_ref().map_or(0, |h| h.estimate);
            self.end(Outcome::Cancelled, estimate);
        }
    }
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("model", &self.model)
            .field("flagged", &self.flagged)
            .field("stream", &self.stream)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}
