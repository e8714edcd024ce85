//! The no-JavaScript chat: the conversation round-trips in a hidden form
//! field (JSON), is never stored or logged, and each POST asks the chat
//! domain (`orinari-chat`) for one answer, as the API does.

use orinari_api::{ApiError, ChatMessage};
use orinari_chat::{Chat, ChatRequest};
use orinari_limits::Caller;
use orinari_models::Sampling;
use serde::{Deserialize, Serialize};

use crate::error::{from_chat, from_model};

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

fn chars(turns: &[Turn]) -> usize {
    turns.iter().map(|t| t.content.chars().count()).sum()
}

fn too_long() -> ApiError {
    ApiError::invalid(
        "conversation",
        "The conversation is too long for this model; start a new chat.",
    )
}

/// What one step produced: the conversation, ending with the model's
/// answer, and whether screening flagged the request.
#[derive(Debug)]
pub struct Stepped {
    /// The conversation after the step.
    pub turns: Vec<Turn>,
    /// Screening found an attack and its action is `flag`.
    pub flagged: bool,
}

/// Apply the action to the conversation: on success the returned turns end
/// with the model's answer (from `chat`, for `caller`); on failure the
/// caller shows the error with the conversation as it was.
pub async fn step(
    chat: &Chat,
    caller: &Caller,
    model: &str,
    mut turns: Vec<Turn>,
    action: Action,
    message: &str,
    max_chars: usize,
) -> Result<Stepped, ApiError> {
    match action {
        Action::Clear => {
            return Ok(Stepped {
                turns: Vec::new(),
                flagged: false,
            });
        }
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
    let answer = chat
        .answer(caller, request(model, &turns, action))
        .await
        .map_err(from_chat)?;
    let flagged = answer.flagged();
    let text = answer.collect().await.map_err(from_model)?.text;
    turns.push(Turn {
        role: Role::Assistant,
        content: text,
    });
    Ok(Stepped { turns, flagged })
}

/// The chat request for the conversation: every turn; a refusal names
/// earlier user turns `conversation` (the hidden field comes from the
/// client, so they are screened again) and a message sent now `message`.
fn request(model: &str, turns: &[Turn], action: Action) -> ChatRequest {
    let users = turns.iter().filter(|t| t.is_user()).count();
    let fields = (0..users)
        .map(|i| {
            if action == Action::Send && i + 1 == users {
                "message"
            } else {
                "conversation"
            }
        })
        .collect();
    ChatRequest {
        model: model.to_string(),
        messages: turns
            .iter()
            .map(|t| {
                ChatMessage::text(
                    match t.role {
                        Role::User => orinari_api::Role::User,
                        Role::Assistant => orinari_api::Role::Assistant,
                    },
                    t.content.clone(),
                )
            })
            .collect(),
        sampling: Sampling {
            temperature: TEMPERATURE,
            max_tokens: Some(MAX_TOKENS),
            ..Sampling::default()
        },
        stream: false,
        options: Default::default(),
        size: turns.iter().map(|t| t.content.len()).sum(),
        fields: Some(fields),
        sources: None,
    }
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
