//! Model backends behind one trait.
//!
//! A [`ModelBackend`] turns a [`GenerateRequest`] (chat messages plus sampling
//! options) into a [`Generation`]: the exact prompt token count and a bounded
//! stream of [`Event`]s. Dropping the `Generation` cancels the work. This crate
//! never knows about HTTP routes or axum; the server maps [`ModelError`] to
//! responses in one place.
//!
//! The embedded backend ([`local::LocalModel`]) runs a GGUF llama model with
//! candle on a dedicated thread; [`openai::OpenAiBackend`] and
//! [`anthropic::AnthropicBackend`] relay to upstream providers over pooled
//! HTTP connections, streaming chunk by chunk.

pub mod anthropic;
pub mod local;
pub mod openai;
mod sse;
mod upstream;
mod wire;

pub use orinari_api::embeddings::{Embeddings, EmbeddingsRequest};
pub use orinari_api::tools::ToolCalls;
pub use orinari_api::{
    ContentPart, Options, ResponseFormat, TokenLogprob, Tool, ToolCall, ToolCallDelta, ToolChoice,
    TopLogprob,
};
pub use orinari_telemetry::models::Outcome;
pub use upstream::{HttpBackend, HttpVersion, UpstreamConfig, UpstreamSecret};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

/// A chat message as the model sees it: a role and its text, and for
/// backends that take them, content parts (images), tool calls and the
/// call a tool result answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// `system`, `user`, `assistant`, `tool` (validated by the caller).
    pub role: String,
    /// Plain text content (text parts joined).
    pub content: String,
    /// The content as parts when it holds more than text; else empty.
    pub parts: Vec<ContentPart>,
    /// The author's `name`, when given.
    pub name: Option<String>,
    /// An assistant message's tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` message: the call it answers.
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A plain text message.
    pub fn text(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }
}

/// Sampling and stopping options for one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// 0 means greedy; default 1.
    pub temperature: f32,
    /// Nucleus sampling mass in (0, 1]; default 1.
    pub top_p: f32,
    /// Same seed, same request: same output.
    pub seed: Option<u64>,
    /// Upper bound on completion tokens; `None` means "until the context is full".
    pub max_tokens: Option<u32>,
    /// Up to four stop strings; the text stops before the first match.
    pub stop: Vec<String>,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            seed: None,
            max_tokens: None,
            stop: Vec::new(),
        }
    }
}

/// One request to a backend.
#[derive(Debug, Clone, Default)]
pub struct GenerateRequest {
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Sampling options.
    pub sampling: Sampling,
    /// Whether the client reads a stream. Upstream adapters ask their
    /// provider for a whole answer otherwise; the events are the same.
    pub stream: bool,
    /// Tools, response format and the rest beyond sampled text. A backend
    /// that cannot honour one refuses the request with
    /// [`ModelError::Unsupported`] naming it.
    pub options: Options,
}

/// Why a generation ended, in OpenAI's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-turn token or a stop sequence.
    Stop,
    /// `max_tokens` reached or the context window is full.
    Length,
    /// The model called tools and waits for their results.
    ToolCalls,
    /// The provider's content filter stopped the answer.
    ContentFilter,
}

impl FinishReason {
    /// The OpenAI wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
            Self::ContentFilter => "content_filter",
        }
    }
}

/// Token counts for one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens in the rendered prompt, counted exactly.
    pub prompt_tokens: u32,
    /// Tokens generated (including a final end-of-turn token, if any).
    pub completion_tokens: u32,
}

/// What a running generation yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// New text (never splits a UTF-8 character, never contains stop text).
    Delta(String),
    /// A piece of a tool call, as the provider streamed it (a whole
    /// answer's call is one piece). Like text, once handed on it cannot be
    /// taken back: a stream never fails over after it.
    ToolCall(ToolCallDelta),
    /// Log probabilities of tokens, sent before their text (only when the
    /// request asked for `logprobs`).
    Logprobs(Vec<TokenLogprob>),
    /// The last event of a successful generation.
    Done {
        /// Why it stopped.
        finish_reason: FinishReason,
        /// Final token counts.
        usage: Usage,
    },
}

/// A running generation. Dropping it cancels the work at the next token.
#[derive(Debug)]
pub struct Generation {
    /// Exact prompt token count, known before the first token.
    pub prompt_tokens: u32,
    /// Events in order; ends after `Event::Done` or an error.
    pub events: Events,
}

/// One event of a generation, or the error that ended it.
pub type EventResult = Result<Event, ModelError>;

/// A source of events that is polled in place, in the reader's own task:
/// an upstream body parsed as it arrives, or a wrapper that adds timeouts
/// and bookkeeping around another generation. No task and no channel sit
/// between the bytes and the reader; dropping the source cancels the work.
pub trait EventSource: Send {
    /// The next event, `Ready(None)` once the generation has ended.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<EventResult>>;
}

/// The events of a [`Generation`], from wherever they come.
pub struct Events(Source);

enum Source {
    /// Another thread produces them (the embedded model's engine).
    Channel(mpsc::Receiver<EventResult>),
    /// Produced when polled (upstream adapters, the balancer's relay).
    Polled(Box<dyn EventSource>),
    /// Already known (a whole answer read before anything is handed on).
    Ready(std::vec::IntoIter<EventResult>),
}

impl Events {
    /// Events produced on demand by `source`, in the reader's task.
    pub fn polled(source: impl EventSource + 'static) -> Self {
        Self(Source::Polled(Box::new(source)))
    }

    /// Events that are all known already.
    pub fn ready(events: Vec<EventResult>) -> Self {
        Self(Source::Ready(events.into_iter()))
    }

    /// Poll for the next event; `Ready(None)` once the generation has ended.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<EventResult>> {
        match &mut self.0 {
            Source::Channel(rx) => rx.poll_recv(cx),
            Source::Polled(source) => source.poll_event(cx),
            Source::Ready(events) => Poll::Ready(events.next()),
        }
    }

    /// The next event; `None` once the generation has ended.
    pub async fn recv(&mut self) -> Option<EventResult> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl From<mpsc::Receiver<EventResult>> for Events {
    fn from(rx: mpsc::Receiver<EventResult>) -> Self {
        Self(Source::Channel(rx))
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Source::Channel(_) => "Events::Channel",
            Source::Polled(_) => "Events::Polled",
            Source::Ready(_) => "Events::Ready",
        })
    }
}

/// A whole answer, collected from a [`Generation`].
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The text.
    pub text: String,
    /// The tool calls the model made, in order.
    pub tool_calls: Vec<ToolCall>,
    /// The output tokens' log probabilities, when asked for.
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Final token counts.
    pub usage: Usage,
}

impl Generation {
    /// Wait for the whole answer. A stream that ends without `Event::Done`
    /// is an error, never a silently truncated answer.
    pub async fn collect(mut self) -> Result<Answer, ModelError> {
        let mut answer = Collector::default();
        while let Some(event) = self.events.recv().await {
            if let Some(done) = answer.push(event?) {
                return Ok(done);
            }
        }
        Err(ModelError::Internal(
            "the model stopped without finishing its answer".into(),
        ))
    }
}

/// Builds an [`Answer`] from events, one at a time.
#[derive(Debug, Default)]
pub struct Collector {
    text: String,
    calls: ToolCalls,
    logprobs: Option<Vec<TokenLogprob>>,
}

impl Collector {
    /// Add one event; the whole answer once it was the last.
    pub fn push(&mut self, event: Event) -> Option<Answer> {
        match event {
            Event::Delta(t) => self.text.push_str(&t),
            Event::ToolCall(d) => self.calls.push(&d),
            Event::Logprobs(l) => self.logprobs.get_or_insert_default().extend(l),
            Event::Done {
                finish_reason,
                usage,
            } => {
                return Some(Answer {
                    text: std::mem::take(&mut self.text),
                    tool_calls: std::mem::take(&mut self.calls).into_vec(),
                    logprobs: self.logprobs.take(),
                    finish_reason,
                    usage,
                });
            }
        }
        None
    }
}

/// Static facts about a served model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Context window in tokens (prompt plus completion).
    pub context_window: u32,
    /// Who provides it (`orinari` for the embedded model).
    pub owned_by: String,
}

/// Errors at the model boundary, classified once.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    /// The prompt plus requested completion does not fit the context window.
    #[error(
        "this model's maximum context length is {context_window} tokens; the messages use {prompt_tokens} tokens{}",
        requested_note(.requested)
    )]
    ContextOverflow {
        /// The window.
        context_window: u32,
        /// Tokens in the prompt.
        prompt_tokens: u32,
        /// Completion tokens asked for, if any.
        requested: Option<u32>,
    },
    /// Too many requests are waiting for this backend.
    #[error("the model is overloaded; try again shortly")]
    Overloaded,
    /// The backend is shutting down.
    #[error("the model is shutting down")]
    ShuttingDown,
    /// The backend failed; the message is safe to show (no paths, no secrets).
    #[error("the model failed: {0}")]
    Internal(String),
    /// An upstream provider failed (connection, 5xx, 429, broken stream).
    #[error("the upstream failed: {0}")]
    Upstream(String),
    /// An upstream provider did not answer in time.
    #[error("the upstream timed out: {0}")]
    Timeout(String),
    /// An upstream provider refused the request itself (a 4xx about the
    /// request, not about the backend): another backend would refuse it too.
    #[error("the upstream rejected the request: {0}")]
    Rejected(String),
    /// A field's value cannot be honoured as given (a schema the embedded
    /// model cannot enforce, a `logit_bias` key outside its vocabulary).
    #[error("`{param}` {message}")]
    Invalid {
        /// The request field at fault.
        param: String,
        /// Why, in words that follow the field name.
        message: String,
    },
    /// No backend of this model can take requests now (all down or open).
    #[error("no backend of this model is available")]
    Unavailable,
    /// The request asks for something this backend cannot do (tools of
    /// the embedded model, log probabilities of Anthropic, …).
    #[error("`{param}` is not supported by {backend}")]
    Unsupported {
        /// The request field at fault.
        param: String,
        /// Which backend, in words (`the embedded model orinari-small`).
        backend: String,
    },
}

impl ModelError {
    /// Whether another backend may succeed where this one failed.
    pub fn retryable(&self) -> bool {
        !matches!(
            self,
            Self::ContextOverflow { .. }
                | Self::Rejected(_)
                | Self::Unsupported { .. }
                | Self::Invalid { .. }
        )
    }

    /// Whether this error counts against the backend's health (the circuit
    /// breaker). Refusals and back-pressure are not faults.
    pub fn is_backend_fault(&self) -> bool {
        matches!(
            self,
            Self::Internal(_) | Self::Upstream(_) | Self::Timeout(_)
        )
    }

    /// The `outcome` label of a request that ended with this error.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Timeout(_) => Outcome::Timeout,
            e if e.is_backend_fault() => Outcome::Error,
            _ => Outcome::Rejected,
        }
    }
}

fn requested_note(requested: &Option<u32>) -> String {
    match requested {
        Some(n) => format!(" and {n} more were requested for the completion"),
        None => String::new(),
    }
}

/// The refusal of a backend that does not embed (the embedded chat model,
/// Anthropic): `model` is the field at fault.
pub fn does_not_embed() -> ModelError {
    ModelError::Unsupported {
        param: "model".into(),
        backend: "a backend that does not embed".into(),
    }
}

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source of completions: the embedded model or a remote provider.
///
/// Every implementation has the same shape: `start` admits the request (or
/// refuses it with a client-visible reason) and returns a live [`Generation`].
pub trait ModelBackend: Send + Sync + 'static {
    /// Static facts about the model.
    fn info(&self) -> &ModelInfo;

    /// Admit a request and start generating.
    fn start(&self, request: GenerateRequest) -> BoxFuture<'_, Result<Generation, ModelError>>;

    /// Whether the backend can take requests now.
    fn ready(&self) -> bool;

    /// Embed the request's inputs (`POST /v1/embeddings`). Backends that
    /// embed override it (OpenAI-compatible upstreams and pools of them);
    /// the default refuses with [`does_not_embed`].
    fn embed(&self, request: EmbeddingsRequest) -> BoxFuture<'_, Result<Embeddings, ModelError>> {
        drop(request);
        Box::pin(std::future::ready(Err(does_not_embed())))
    }

    /// An active health check. The default reports [`ModelBackend::ready`];
    /// upstream adapters ask their provider.
    fn probe(&self) -> BoxFuture<'_, Result<(), ModelError>> {
        let ready = self.ready();
        Box::pin(async move {
            if ready {
                Ok(())
            } else {
                Err(ModelError::Unavailable)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    fn generation(events: Vec<Result<Event, ModelError>>) -> Generation {
        let (tx, rx) = mpsc::channel(events.len().max(1));
        for e in events {
            tx.try_send(e).unwrap();
        }
        Generation {
            prompt_tokens: 3,
            events: rx.into(),
        }
    }

    #[tokio::test]
    async fn collect_joins_deltas_until_done() {
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 2,
        };
        let g = generation(vec![
            Ok(Event::Delta("Hel".into())),
            Ok(Event::Delta("lo".into())),
            Ok(Event::Done {
                finish_reason: FinishReason::Length,
                usage,
            }),
        ]);
        let a = g.collect().await.unwrap();
        assert_eq!(a.text, "Hello");
        assert_eq!(a.finish_reason, FinishReason::Length);
        assert_eq!(a.usage, usage);
    }

    #[tokio::test]
    async fn collect_never_returns_a_truncated_answer() {
        let cut = generation(vec![Ok(Event::Delta("Hel".into()))]);
        assert!(matches!(cut.collect().await, Err(ModelError::Internal(_))));
        let failed = generation(vec![
            Ok(Event::Delta("Hel".into())),
            Err(ModelError::Overloaded),
        ]);
        assert_eq!(failed.collect().await.unwrap_err(), ModelError::Overloaded);
    }
}
