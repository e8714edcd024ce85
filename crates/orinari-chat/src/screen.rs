//! Prompt-injection screening of user messages, as `[guard]
//! prompt_injection` asks (or the caller's own policy, an API key's):
//! `block` refuses the request (400 `prompt_injection_detected`, `param`
//! naming the message), `flag` answers and marks the answer as flagged;
//! both count in `orinari_guard_blocks_total{rule,action}`. The verdict
//! itself comes from `orinari-guard`; no text is logged, only the rule and
//! the message's field.

use std::sync::Arc;

use orinari_api::ApiError;
use orinari_config::PromptInjection;
use orinari_guard::Guard;
use orinari_telemetry::guard::GuardMetrics;

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

    /// The configured action (`[guard] prompt_injection`).
    pub fn action(&self) -> PromptInjection {
        self.action
    }
}

/// Screen user messages, given as (`param` name, text). `Ok(true)`: an
/// attack was found and the action is `flag` (answer, marked); the error
/// is the refusal when the action — the caller's own `policy`, else the
/// configured one — is `block`.
pub(crate) fn screen<'a>(
    screening: Option<&Screening>,
    metrics: &GuardMetrics,
    policy: Option<PromptInjection>,
    user_messages: impl IntoIterator<Item = (String, &'a str)>,
) -> Result<bool, ApiError> {
    let Some(s) = screening else {
        return Ok(false);
    };
    let action = policy.unwrap_or(s.action);
    if action == PromptInjection::Off {
        return Ok(false);
    }
    for (param, text) in user_messages {
        let verdict = s.guard.screen(text);
        let Some(rule) = verdict.rule else { continue };
        match action {
            PromptInjection::Block => {
                metrics.record(rule, "block");
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
                metrics.record(rule, "flag");
                tracing::info!(rule, param = %param, "prompt injection flagged");
                return Ok(true);
            }
        }
    }
    Ok(false)
}
