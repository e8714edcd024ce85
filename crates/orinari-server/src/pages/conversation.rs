//! The no-JavaScript chat: the conversation round-trips in a hidden form
//! field (JSON), is never stored or logged, and each POST asks the model once.

use orinari_api::ApiError;
use orinari_models::{GenerateRequest, Message, ModelBackend, Sampling};
use serde::{Deserialize, Serialize};

use crate::error::from_model;

/// Completion tokens per answer, for the form and the script alike.
pub const MAX_TOKENS: u32 = 512;
/// Sampling temperature, for the form and the script alike.
pub const TEMPERATURE: f32 = 0.7;
/// Turns a conversation may hold.
const MAX_TURNS: usize = 200;

/// Who said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The person.
    User,
    /// The model.
    Assistant,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Who said it.
    pub role: Role,
    /// What was said (plain text; rendered escaped).
    pub content: String,
}

impl Turn {
    /// Whether the person said it (templates style the two sides apart).
    pub fn is_user(&self) -> bool {
        self.role == Role::User
    }
}

/// What the form asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Add the message and answer it.
    Send,
    /// Drop the last answer and answer again.
    Regenerate,
    /// Start over.
    Clear,
}

impl Action {
    /// From the submit button's value (Enter in a field submits as `send`).
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("regenerate") => Self::Regenerate,
            Some("clear") => Self::Clear,
            _ => Self::Send,
        }
    }
}

/// Read the hidden field. Empty means a new conversation.
pub fn decode(json: &str, max_chars: usize) -> Result<Vec<Turn>, ApiError> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let turns: Vec<Turn> = serde_json::from_str(json).map_err(|_| {
        ApiError::invalid(
            "conversation",
            "The conversation could not be read; start a new chat.",
        )
    })?;
    if turns.len() > MAX_TURNS || chars(&turns) > max_chars {
        return Err(too_long());
    }
    Ok(turns)
}

/// Write the hidden field.
pub fn encode(turns: &[Turn]) -> String {
    serde_json::to_string(turns).unwrap_or_else(|_| "[]".to_string())
}

/// What the person wrote that the model would read for this action: earlier
/// user turns (the field comes from the client, so they are screened again)
/// and, when sending, the new message; with the form field each names.
pub fn user_texts<'a>(
    turns: &'a [Turn],
    action: Action,
    message: &'a str,
) -> impl Iterator<Item = (String, &'a str)> + 'a {
    let earlier = turns
        .iter()
        .filter(|t| t.is_user())
        .map(|t| ("conversation".to_string(), t.content.as_str()));
    let new = (action == Action::Send).then(|| ("message".to_string(), message));
    earlier.chain(new)
}

fn chars(turns: &[Turn]) -> usize {
    turns.iter().map(|t| t.content.chars().count()).sum()
}

fn too_long() -> ApiError {
    ApiError::invalid(
        "conversation",
        "The conversation is too long for this model; start a new chat.",
    )
}

/// Apply the action to the conversation: on success the returned turns end
/// with the model's answer; on failure the caller shows the error with the
/// conversation as it was.
pub async fn step(
    backend: &dyn ModelBackend,
    mut turns: Vec<Turn>,
    action: Action,
    message: &str,
    max_chars: usize,
) -> Result<Vec<Turn>, ApiError> {
    match action {
        Action::Clear => return Ok(Vec::new()),
        Action::Regenerate => {
            if turns.last().is_some_and(|t| t.role == Role::Assistant) {
                turns.pop();
            }
            if turns.last().is_none_or(|t| t.role != Role::User) {
                return Err(ApiError::invalid(
                    "message",
                    "There is no question to answer again.",
                ));
            }
        }
        Action::Send => {
            let message = message.trim();
            if message.is_empty() {
                return Err(ApiError::invalid("message", "Type a message first."));
            }
            turns.push(Turn {
                role: Role::User,
                content: message.to_string(),
            });
        }
    }
    if chars(&turns) > max_chars {
        return Err(too_long());
    }
    let answer = answer(backend, &turns).await?;
    turns.push(Turn {
        role: Role::Assistant,
        content: answer,
    });
    Ok(turns)
}

async fn answer(backend: &dyn ModelBackend, turns: &[Turn]) -> Result<String, ApiError> {
    let request = GenerateRequest {
        messages: turns
            .iter()
            .map(|t| Message {
                role: match t.role {
                    Role::User => "user",
                    Role::Assistant => "assistant",
                }
                .to_string(),
                content: t.content.clone(),
            })
            .collect(),
        sampling: Sampling {
            temperature: TEMPERATURE,
            max_tokens: Some(MAX_TOKENS),
            ..Sampling::default()
        },
        stream: false,
    };
    let generation = backend.start(request).await.map_err(from_model)?;
    Ok(generation.collect().await.map_err(from_model)?.text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    #[test]
    fn hidden_state_round_trips_and_is_bounded() {
        let turns = vec![
            Turn {
                role: Role::User,
                content: "<b>hi</b> \"&'".into(),
            },
            Turn {
                role: Role::Assistant,
                content: "hello".into(),
            },
        ];
        assert_eq!(decode(&encode(&turns), 100).unwrap(), turns);
        assert!(decode("", 10).unwrap().is_empty());
        assert_eq!(decode("not json", 10).unwrap_err().status, 400);
        assert_eq!(
            decode(r#"[{"role":"system","content":"x"}]"#, 10)
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(decode(&encode(&turns), 5).unwrap_err().status, 400);
        assert_eq!(Action::parse(None), Action::Send);
        assert_eq!(Action::parse(Some("clear")), Action::Clear);
    }
}
