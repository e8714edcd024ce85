//! The chat domain: the one path every answer takes, whichever surface
//! asked for it (the API, whole or streamed; the no-JS chat page; any later
//! API). [`Chat::answer`] runs, in order:
//!
//! 1. **model lookup** — a model the caller may not use is 403
//!    `model_not_allowed`, one that is not served 404 `model_not_found`;
//! 2. **validation limits** — the input's characters against
//!    `[limits] max_input_chars`;
//! 3. **prompt screening** — `[guard] prompt_injection` or the caller's own
//!    policy ([`screen`]);
//! 4. **retrieval** — for a grounded model, its sources (narrowed by the
//!    request's `orinari.sources` and the caller's allowed sources) are
//!    searched for the last user message under the retrieval budget, and
//!    the passages that fit join the prompt fenced as data, screened as
//!    indirect injection and numbered for citations ([`retrieve`]); the
//!    answer's `[n]` markers are checked against them as it streams
//!    ([`cite`]); then the **exact response cache** for a model that opted
//!    in: a deterministic request answered before is replayed from it
//!    (its recorded usage still charged to the token budget, no queue slot,
//!    no backend), and a miss is recorded as it streams and stored once it
//!    ends normally ([`cache`]);
//! 5. **token estimate and reservation** — a quarter of the request's bytes
//!    plus its `max_tokens` (or the configured default), no more than the
//!    model's window, reserved against the caller's token budget (429);
//! 6. **queue permit** — a slot in the model's fair admission queue (503
//!    when full or after the queue timeout);
//! 7. **backend start** — the embedded model or a balancer pool, both a
//!    `ModelBackend`;
//! 8. **metrics** — a model served by one backend of its own records
//!    `orinari_model_*` here ([`meter`]); a pool records them per member.
//!
//! [`Chat::embed`] (`embed.rs`) takes steps 1, 2, 5 and 6 too
//! ([`admit`]'s), for vectors instead of an answer.
//!
//! The [`Answer`] it returns owns the permit and the reservation and
//! settles them from the final usage when it ends or is dropped.
//!
//! This crate knows no HTTP: the server reads the request, resolves the
//! [`Caller`] and limits the request rate at its edge, and maps an
//! [`Answer`] or a [`ChatError`] to a response.

mod admit;
mod answer;
pub mod cache;
mod cite;
mod embed;
mod error;
pub mod meter;
pub mod retrieve;
pub mod screen;

use std::sync::Arc;
use std::time::Instant;

use orinari_api::{ApiError, ChatMessage, Options, Role, ValidationLimits};
use orinari_limits::{Caller, Edge};
use orinari_models::{Events, GenerateRequest, Generation, Message, ModelBackend, Sampling};
use orinari_telemetry::Metrics;

pub use answer::{Answer, Collected};
pub use cache::ResponseCache;
pub use embed::Vectors;
pub use error::ChatError;
pub use retrieve::Retrieval;
pub use screen::Screening;

use answer::Metered;
use meter::Meter;

/// A model name and the backend that serves it.
#[derive(Clone)]
pub struct ServedModel {
    /// The name clients ask for.
    pub name: String,
    /// The backend.
    pub backend: Arc<dyn ModelBackend>,
}

/// A served model and, when it is served by one backend of its own (the
/// embedded model), its metric handles.
#[derive(Clone)]
struct Model {
    served: ServedModel,
    meter: Option<Meter>,
}

/// One chat request, from whichever surface.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The model name asked for.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Sampling and stopping options.
    pub sampling: Sampling,
    /// Whether the client reads a stream.
    pub stream: bool,
    /// Tools, response format and the rest beyond sampled text (the
    /// backend refuses what it cannot honour).
    pub options: Options,
    /// Bytes of the request as the client sent it: a quarter of them is
    /// the prompt's part of the token estimate.
    pub size: usize,
    /// How a refusal names each user message, in order (the no-JS form's
    /// fields); `None`: `messages[i].content`, as the API names them.
    pub fields: Option<Vec<&'static str>>,
    /// `orinari.sources`: the sources a grounded model may search for this
    /// answer (`None`: all of its own; empty: no retrieval).
    pub sources: Option<Vec<String>>,
    /// `orinari.cache`: `Some(false)` bypasses the response cache (neither
    /// read nor written); otherwise the model's `cache` setting applies.
    pub cache: Option<bool>,
}

impl ChatRequest {
    /// The request an API client sent (`size`: its body's bytes).
    pub fn from_api(req: orinari_api::ChatRequest, size: usize) -> Self {
        Self {
            sampling: Sampling {
                // top_p = 0 keeps only the most likely token: greedy.
                temperature: if req.top_p <= 0.0 {
                    0.0
                } else {
                    req.temperature
                },
                top_p: req.top_p,
                seed: req.seed,
                max_tokens: req.max_tokens,
                stop: req.stop,
            },
            model: req.model,
            messages: req.messages,
            stream: req.stream,
            options: req.options,
            size,
            fields: None,
            sources: req.sources,
            cache: req.cache,
        }
    }

    /// The messages the guard screens — user messages and tool results,
    /// each with its channel — with the `param` that names each in a
    /// refusal.
    fn screened_messages(
        &self,
    ) -> impl Iterator<Item = (String, orinari_guard::Channel, &str)> + '_ {
        let mut users = 0;
        self.messages.iter().enumerate().filter_map(move |(i, m)| {
            let channel = match m.role {
                Role::User => orinari_guard::Channel::User,
                Role::Tool => orinari_guard::Channel::Tool,
                Role::System | Role::Assistant => return None,
            };
            let field = match &self.fields {
                Some(fields) if channel == orinari_guard::Channel::User => {
                    users += 1;
                    fields.get(users - 1).map_or("messages", |f| f).to_string()
                }
                _ => format!("messages[{i}].content"),
            };
            Some((field, channel, m.content.as_str()))
        })
    }
}

/// The chat pipeline of one configuration: the served models, admission
/// (limiter and queues), screening and input limits. Cheap to clone; a
/// configuration reload builds a new one, and a request keeps the one it
/// started with.
#[derive(Clone)]
pub struct Chat {
    models: Arc<[Model]>,
    edge: Arc<Edge>,
    screening: Option<Screening>,
    retrieval: Option<Retrieval>,
    embedding: Option<embed::Embedding>,
    response_cache: Option<Arc<ResponseCache>>,
    limits: ValidationLimits,
    metrics: Arc<Metrics>,
}

impl Chat {
    /// A pipeline serving `models`, each by one backend of its own (their
    /// metrics are recorded here), with no screening.
    pub fn new(
        models: Vec<ServedModel>,
        edge: Arc<Edge>,
        limits: ValidationLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        let chat = Self {
            models: Arc::new([]),
            edge,
            screening: None,
            retrieval: None,
            embedding: None,
            response_cache: None,
            limits,
            metrics,
        };
        chat.serving(models, |_| false)
    }

    /// The same, serving `models` instead; `pooled` names those served by a
    /// balancer pool, which records its own metrics per member.
    pub fn serving(self, models: Vec<ServedModel>, pooled: impl Fn(&str) -> bool) -> Self {
        let models = models
            .into_iter()
            .map(|served| Model {
                meter: (!pooled(&served.name))
                    .then(|| Meter::new(&self.metrics.models, &served.name)),
                served,
            })
            .collect();
        Self { models, ..self }
    }

    /// The same with this admission edge.
    pub fn with_edge(self, edge: Arc<Edge>) -> Self {
        Self { edge, ..self }
    }

    /// The same with this screening (`None`: nothing is screened).
    pub fn with_screening(self, screening: Option<Screening>) -> Self {
        Self { screening, ..self }
    }

    /// The same with this retrieval (`None`: no model is grounded).
    pub fn with_retrieval(self, retrieval: Option<Retrieval>) -> Self {
        Self { retrieval, ..self }
    }

    /// The same with this response cache (`None`: no model caches).
    pub fn with_response_cache(self, response_cache: Option<Arc<ResponseCache>>) -> Self {
        Self {
            response_cache,
            ..self
        }
    }

    /// Retrieval for grounded models, when sources are configured.
    pub fn retrieval(&self) -> Option<&Retrieval> {
        self.retrieval.as_ref()
    }

    /// The same with these input limits.
    pub fn with_limits(self, limits: ValidationLimits) -> Self {
        Self { limits, ..self }
    }

    /// Served models, in config order.
    pub fn models(&self) -> impl Iterator<Item = &ServedModel> {
        self.models.iter().map(|m| &m.served)
    }

    /// Look a model up by name.
    pub fn model(&self, name: &str) -> Option<&ServedModel> {
        self.find(name).map(|m| &m.served)
    }

    fn find(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.served.name == name)
    }

    /// API keys, rate limits, queues, connection settings, firewall.
    pub fn edge(&self) -> &Arc<Edge> {
        &self.edge
    }

    /// Prompt-injection screening, when configured.
    pub fn screening(&self) -> Option<&Screening> {
        self.screening.as_ref()
    }

    /// Validation limits for requests.
    pub fn limits(&self) -> ValidationLimits {
        self.limits
    }

    /// Answer `request` for `caller`: every step in the order the module
    /// docs give, each refusing with its own [`ChatError`].
    pub async fn answer(
        &self,
        caller: &Caller,
        mut request: ChatRequest,
    ) -> Result<Answer, ChatError> {
        let entered = Instant::now();
        let metrics = &self.metrics;

        // 1. Model lookup.
        admit::allowed(caller, &request.model)?;
        let model = self
            .find(&request.model)
            .ok_or_else(|| ChatError::Refused(ApiError::model_not_found(&request.model)))?;

        // 2. Validation limits.
        let chars: usize = request
            .messages
            .iter()
            .map(|m| m.content.chars().count())
            .sum();
        admit::within(
            chars,
            self.limits.max_input_chars,
            "messages",
            "The messages",
        )?;

        // 3. Prompt screening.
        let flagged = screen::screen_off_runtime(
            self.screening.as_ref(),
            &metrics.guard,
            caller.prompt_injection,
            request
                .screened_messages()
                .map(|(param, channel, text)| (param, channel, text.to_string()))
                .collect(),
        )
        .await
        .map_err(ChatError::Refused)?;

        // 4. Retrieval (grounded models), then the response cache, keyed by
        //    the final prompt: a hit takes no queue slot and starts no
        //    backend, but its recorded usage is charged to the token budget.
        //    Passages join the prompt before the estimate, which counts them.
        let backend = &model.served.backend;
        let window = backend.info().context_window;
        let completion = request
            .sampling
            .max_tokens
            .unwrap_or(self.edge.config().limits.default_completion_estimate)
            // No answer can be longer than the model's window: a larger
            // max_tokens is the backend's 400, not a token-limit 429.
            .min(window);
        let names = retrieve::choose(
            self.retrieval.as_ref(),
            &request.model,
            caller,
            request.sources.as_deref(),
        )
        .map_err(ChatError::Refused)?;
        let mut grounded = None;
        if let Some(retrieval) = self.retrieval.as_ref().filter(|_| !names.is_empty()) {
            let room = (window as usize).saturating_sub(request.size / 4 + completion as usize);
            let screening = self
                .screening
                .as_ref()
                .map(|s| (s, caller.prompt_injection.unwrap_or(s.action())));
            let found =
                retrieve::retrieve(retrieval, &names, &request, room, screening, &metrics.guard)
                    .await;
            if let Some(message) = &found.message {
                request.size += message.content.len();
                let at = request
                    .messages
                    .iter()
                    .position(|m| m.role != Role::System)
                    .unwrap_or(0);
                request.messages.insert(at, message.clone());
            }
            grounded = Some(found);
        }

        let cached = self
            .response_cache
            .as_ref()
            .filter(|_| cache::key::cacheable(&request))
            .and_then(|c| {
                c.model(&request.model)
                    .map(|slot| (slot.clone(), cache::key::key(c.secret(), &request)))
            });
        if let Some((slot, key)) = &cached
            && let Some(entry) = slot.lookup(key).await
        {
            let usage = entry.usage();
            let used = usage.prompt_tokens.saturating_add(usage.completion_tokens);
            let (held, tokens) = self.reserve(caller, &model.served.name, used).await?;
            let generation = Generation {
                prompt_tokens: entry.prompt_tokens,
                events: Events::ready(entry.events.into_iter().map(Ok).collect()),
            };
            return Ok(Answer::new(
                generation,
                request.model,
                flagged,
                request.stream,
                tokens,
                held,
                None,
            )
            .grounded(grounded.map(|g| answer::Cited::new(g.grounding, g.refs)))
            .replayed());
        }

        // 5. Token estimate and reservation.
        let prompt = u32::try_from(request.size / 4).unwrap_or(u32::MAX);
        let estimate = prompt.saturating_add(completion);
        let (mut held, tokens) = self.reserve(caller, &model.served.name, estimate).await?;

        // 6. Queue permit.
        let queued = self
            .queue(caller, &model.served.name, &mut held, tokens)
            .await?;

        // 7. Backend start.
        let stream = request.stream;
        let generate = GenerateRequest {
            messages: request
                .messages
                .into_iter()
                .map(|m| Message {
                    role: m.role.as_str().to_string(),
                    content: m.content,
                    parts: m.parts,
                    name: m.name,
                    tool_calls: m.tool_calls,
                    tool_call_id: m.tool_call_id,
                })
                .collect(),
            sampling: request.sampling,
            stream,
            options: request.options,
        };
        let started = Instant::now();
        if let Some(meter) = &model.meter {
            meter.overhead(
                started
                    .saturating_duration_since(entered)
                    .saturating_sub(queued),
            );
        }
        let generation = match backend.start(generate).await {
            Ok(g) => g,
            Err(error) => {
                // Nothing was generated: the whole reservation comes back
                // (the permit goes with `held`).
                held.limiter
                    .settle(&caller.subject, caller.policy, estimate, 0)
                    .await;
                if let Some(meter) = &model.meter {
                    meter.finish(error.outcome());
                }
                return Err(ChatError::Model {
                    error,
                    window: tokens,
                });
            }
        };

        // 8. Metrics: recorded by the answer as its events arrive; a
        //    cacheable answer is recorded too, and stored when it ends well.
        let recorder = cached.map(|(slot, key)| slot.recorder(key, generation.prompt_tokens));
        let metered = model.meter.clone().map(|meter| Metered {
            meter,
            started,
            first_seen: false,
        });
        Ok(Answer::new(
            generation,
            request.model,
            flagged,
            stream,
            tokens,
            held,
            metered,
        )
        .grounded(grounded.map(|g| answer::Cited::new(g.grounding, g.refs)))
        .recording(recorder))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
