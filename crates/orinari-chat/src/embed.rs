//! [`Chat::embed`]: vectors for `POST /v1/embeddings`, through the same
//! admission as an answer — the model the caller may use (403/404), the
//! input limit (`[guard] max_input_chars` over every text), the token
//! reservation (a quarter of the body's bytes, settled with the tokens
//! embedded) and the model's queue permit — then the embedded
//! `orinari-embed` ([`orinari_embed::Embedder`]) or a model's backend
//! ([`ModelBackend::embed`]: OpenAI-compatible upstreams pass the request
//! on; the others refuse, naming `model`).
//!
//! **No prompt-injection screening.** An embedding model follows no
//! instructions, so an injection in an input cannot act here; what it could
//! do later, when a retrieved passage reaches a chat model, is screened
//! there (`orinari_guard::retrieved`). Screening here would only refuse to
//! index documents that merely quote an attack (security notes, this
//! project's own guard tests), and cost ~1 ms a text on batches of
//! thousands.
//!
//! Metrics: `orinari-embed` records the `orinari_model_*` series with the
//! backend label `local` (the time to its vectors as the first token, the
//! tokens embedded as prompt tokens); a pool records them per member.

use std::sync::Arc;
use std::time::Instant;

use orinari_api::ApiError;
use orinari_api::embeddings::{EmbeddingInput, Embeddings, EmbeddingsRequest, Vector};
use orinari_embed::{DIMENSIONS, EmbedError, Embedder, Input, MODEL};
use orinari_limits::{Caller, Window};
use orinari_models::{ModelError, Outcome};

use crate::meter::Meter;
use crate::{Chat, ChatError, admit};

/// The embedded embedding model with its metric handles.
#[derive(Clone)]
pub(crate) struct Embedding {
    embedder: Arc<Embedder>,
    meter: Meter,
}

/// The vectors of one request, and the caller's token limit after it.
#[derive(Debug)]
pub struct Vectors {
    /// One vector per input, in input order, written as the request asked.
    pub embeddings: Embeddings,
    /// The token limit (for the `x-ratelimit-*-tokens` headers).
    pub tokens: Window,
}

enum Target<'a> {
    Embedded(&'a Embedding),
    Backend(&'a crate::Model),
}

impl Chat {
    /// The same, serving `embedder` as `orinari-embed` (`None`: not served).
    pub fn with_embedder(self, embedder: Option<Arc<Embedder>>) -> Self {
        let embedding = embedder.map(|embedder| Embedding {
            meter: Meter::new(&self.metrics.models, MODEL),
            embedder,
        });
        Self { embedding, ..self }
    }

    /// The embedded embedding model, when it is served.
    pub fn embedder(&self) -> Option<&Arc<Embedder>> {
        self.embedding.as_ref().map(|e| &e.embedder)
    }

    /// Embed `request` for `caller` (`size`: the body's bytes).
    pub async fn embed(
        &self,
        caller: &Caller,
        request: EmbeddingsRequest,
        size: usize,
    ) -> Result<Vectors, ChatError> {
        let entered = Instant::now();
        // 1. Model lookup.
        admit::allowed(caller, &request.model)?;
        let target = match (&self.embedding, self.find(&request.model)) {
            (Some(e), _) if request.model == MODEL => Target::Embedded(e),
            (_, Some(m)) => Target::Backend(m),
            _ => {
                return Err(ChatError::Refused(ApiError::model_not_found(
                    &request.model,
                )));
            }
        };
        if let (Target::Embedded(_), Some(d)) = (&target, request.dimensions)
            && d as usize != DIMENSIONS
        {
            return Err(ChatError::Refused(
                ApiError::invalid(
                    "dimensions",
                    format!(
                        "`{MODEL}` gives {DIMENSIONS} dimensions only: it was not trained to be shortened (OpenAI refuses `dimensions` for such models too)."
                    ),
                )
                .with_code("unsupported_parameter"),
            ));
        }
        // 2. Validation limits (3. no screening: see the module docs).
        admit::within(
            request.input.chars(),
            self.limits.max_input_chars,
            "input",
            "The inputs",
        )?;
        // 5. Token estimate and reservation; 6. queue permit.
        let estimate = u32::try_from(size / 4).unwrap_or(u32::MAX);
        let (mut held, tokens) = self.reserve(caller, &request.model, estimate).await?;
        let queued = self
            .queue(caller, &request.model, &mut held, tokens)
            .await?;
        // 7. The vectors.
        let started = Instant::now();
        let result = match target {
            Target::Embedded(e) => {
                e.meter
                    .overhead(started.duration_since(entered).saturating_sub(queued));
                let result = embedded(e, request).await;
                match &result {
                    Ok(v) => {
                        e.meter.first_token(started.elapsed());
                        e.meter.tokens(v.prompt_tokens, 0);
                        e.meter.finish(Outcome::Success);
                    }
                    Err(ChatError::Model { error, .. }) => e.meter.finish(error.outcome()),
                    Err(_) => e.meter.finish(Outcome::Rejected),
                }
                result
            }
            Target::Backend(m) => m.served.backend.embed(request).await.map_err(backend_error),
        };
        // 8. Settle: the tokens embedded, or nothing.
        held.settle(result.as_ref().map_or(0, |v| v.prompt_tokens));
        let with_window = |e: ChatError| match e {
            ChatError::Model { error, .. } => ChatError::Model {
                error,
                window: tokens,
            },
            other => other,
        };
        result
            .map(|embeddings| Vectors { embeddings, tokens })
            .map_err(with_window)
    }
}

/// Vectors from the embedded model, written as the request asks.
async fn embedded(e: &Embedding, request: EmbeddingsRequest) -> Result<Embeddings, ChatError> {
    let format = request.encoding_format;
    let input = request.input;
    let inputs = match &input {
        EmbeddingInput::Texts(t) => t.iter().cloned().map(Input::Text).collect(),
        EmbeddingInput::Tokens { ids, .. } => ids.iter().cloned().map(Input::Tokens).collect(),
    };
    let got = e.embedder.embed(inputs).await.map_err(|err| match err {
        EmbedError::Token {
            input: i,
            position,
            id,
            vocab,
        } => ChatError::Refused(ApiError::invalid(
            input.token_param(i, position),
            format!("Token id {id} is outside {MODEL}'s vocabulary of {vocab} tokens."),
        )),
        EmbedError::Overloaded => model_error(ModelError::Overloaded),
        EmbedError::ShuttingDown => model_error(ModelError::ShuttingDown),
        EmbedError::Load(detail) => {
            // The detail names a path: the log's, not the client's.
            tracing::error!(model = MODEL, error = %detail, "embedding model unavailable");
            model_error(ModelError::Internal(
                "the embedding model is not available".into(),
            ))
        }
        EmbedError::Internal(detail) => model_error(ModelError::Internal(detail)),
    })?;
    Ok(Embeddings {
        vectors: got
            .vectors
            .into_iter()
            .map(|v| Vector::encode(v, format))
            .collect(),
        prompt_tokens: got.tokens,
    })
}

fn model_error(error: ModelError) -> ChatError {
    // The window is filled in by `Chat::embed`, which holds it.
    ChatError::Model {
        error,
        window: Window {
            limit: 0,
            remaining: 0,
            reset: std::time::Duration::ZERO,
        },
    }
}

/// A backend's refusal in the words of an embeddings request.
fn backend_error(error: ModelError) -> ChatError {
    match error {
        ModelError::Unsupported { .. } => ChatError::Refused(
            ApiError::invalid(
                "model",
                format!(
                    "This model does not embed: use `{MODEL}`, or a model served by OpenAI-compatible backends."
                ),
            )
            .with_code("unsupported_parameter"),
        ),
        ModelError::Rejected(why) => ChatError::Refused(
            ApiError::invalid(
                "input",
                format!("The upstream rejected the request: {why}."),
            )
            .with_code("upstream_rejected"),
        ),
        error => model_error(error),
    }
}
