//! Prompt-injection screening of user messages, as `[guard]
//! prompt_injection` asks: `block` refuses the request (400
//! `prompt_injection_detected`, `param` naming the message), `flag` answers
//! and marks the response with `x-orinari-guard: flagged`; both count in
//! `orinari_guard_blocks_total{rule,action}`. The verdict itself comes from
//! `orinari-guard`; no text is logged, only the rule and the message index.

use std::sync::Arc;

use axum::http::HeaderValue;
use axum::response::Response;
use orinari_api::ApiError;
use orinari_config::PromptInjection;
use orinari_guard::Guard;

use crate::AppState;

/// The response header set on answers to flagged requests.
pub const HEADER: &str = "x-orinari-guard";

/// The guard and the configured action, shared by every request.
#[derive(Debug, Clone)]
pub struct Screening {
    guard: Arc<Guard>,
    action: PromptInjection,
}

impl Screening {
    /// Screening with this guard and action.
    pub fn new(guard: Guard, action: PromptInjection) -> Self {
        Self {
            guard: Arc::new(guard),
            action,
        }
    }

    /// Screening with the committed classifier.
    pub fn embedded(action: PromptInjection) -> Result<Self, orinari_guard::GuardError> {
        Ok(Self::new(Guard::new()?, action))
    }

    /// The guard (also for screening retrieved text).
    pub fn guard(&self) -> &Guard {
        &self.guard
    }
}

/// What screening decided for a request that may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a flagged answer must carry the header"]
pub enum Outcome {
    /// Nothing found (or screening is off).
    Clean,
    /// An attack was found and `flag` is configured: answer, marked.
    Flagged,
}

impl Outcome {
    /// Mark the response when the request was flagged.
    pub fn mark(self, mut res: Response) -> Response {
        if self == Self::Flagged {
            res.headers_mut()
                .insert(HEADER, HeaderValue::from_static("flagged"));
        }
        res
    }
}

/// Screen user messages, given as (`param` name, text). Returns the error to
/// send when the action — the caller's own `policy` (an API key's), else
/// the configured one — is `block` and one of them is an attack.
pub fn screen<'a>(
    state: &AppState,
    policy: Option<PromptInjection>,
    user_messages: impl IntoIterator<Item = (String, &'a str)>,
) -> Result<Outcome, ApiError> {
    let Some(s) = state.screening() else {
        return Ok(Outcome::Clean);
    };
    let action = policy.unwrap_or(s.action);
    if action == PromptInjection::Off {
        return Ok(Outcome::Clean);
    }
    for (param, text) in user_messages {
        let verdict = s.guard.screen(text);
        let Some(rule) = verdict.rule else { continue };
        match action {
            PromptInjection::Block => {
                state.metrics().guard.record(rule, "block");
                tracing::info!(rule, param = %param, "prompt injection blocked");
                return Err(ApiError::invalid(
                    param,
                    format!(
                        "The message was refused: it looks like a prompt-injection attempt (rule `{rule}`)."
                    ),
                )
                .with_code("prompt_injection_detected"));
            }
            PromptInjection::Flag | PromptInjection::Off => {
                state.metrics().guard.record(rule, "flag");
                tracing::info!(rule, param = %param, "prompt injection flagged");
                return Ok(Outcome::Flagged);
            }
        }
    }
    Ok(Outcome::Clean)
}

/// The user messages of a chat request, with their `param` names.
pub fn user_messages(req: &orinari_api::ChatRequest) -> impl Iterator<Item = (String, &str)> + '_ {
    req.messages
        .iter()
        .enumerate()
        .filter(|(_, m)| matches!(m.role, orinari_api::Role::User))
        .map(|(i, m)| (format!("messages[{i}].content"), m.content.as_str()))
}
