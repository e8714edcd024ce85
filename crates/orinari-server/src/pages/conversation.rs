//! The no-JavaScript chat: the conversation round-trips in a hidden form
//! field (JSON), is never stored or logged, and each POST asks the chat
//! domain (`orinari-chat`) for one answer, as the API does. A grounded
//! answer keeps its numbered sources with it (title, document, link,
//! snippet), shown under it, its `[n]` markers linking to them.

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
    /// A grounded answer's numbered sources (none for other turns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Source>,
}

/// One numbered source of a grounded answer, as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The `n` of its `[n]` markers.
    pub index: usize,
    /// The document's title.
    pub title: String,
    /// The document within its source.
    pub document: String,
    /// Its link, when it has one.
    #[serde(default)]
    pub url: Option<String>,
    /// The start of the passage.
    pub snippet: String,
}

impl Source {
    /// The link, when it is a web address (the hidden field comes from the
    /// client: nothing else becomes an `href`).
    pub fn link(&self) -> Option<&str> {
        self.url
            .as_deref()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
    }
}

/// A piece of an answer's text: plain, or a citation marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The text (the marker itself, `[n]`, for a citation).
    pub text: String,
    /// The source it cites.
    pub cites: Option<usize>,
}

impl Turn {
    /// Whether the person said it (templates style the two sides apart).
    pub fn is_user(&self) -> bool {
        self.role == Role::User
    }

    /// The text, with each `[n]` that names one of its sources apart.
    pub fn segments(&self) -> Vec<Segment> {
        let mut out = Vec::new();
        let mut plain = String::new();
        let mut rest = self.content.as_str();
        while let Some(i) = rest.find('[') {
            plain.push_str(&rest[..i]);
            let tail = &rest[i..];
            let cited = tail[1..].split_once(']').and_then(|(inner, _)| {
                let n = inner.parse::<usize>().ok()?;
                self.sources
                    .iter()
                    .any(|s| s.index == n)
                    .then_some((n, inner.len() + 2))
            });
            match cited {
                Some((n, len)) => {
                    if !plain.is_empty() {
                        out.push(Segment {
                            text: std::mem::take(&mut plain),
                            cites: None,
                        });
                    }
                    out.push(Segment {
                        text: tail[..len].to_string(),
                        cites: Some(n),
                    });
                    rest = &tail[len..];
                }
                None => {
                    plain.push('[');
                    rest = &tail[1..];
                }
            }
        }
        plain.push_str(rest);
        if !plain.is_empty() {
            out.push(Segment {
                text: plain,
                cites: None,
            });
        }
        out
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
                sources: Vec::new(),
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
    let collected = answer.collect_grounded().await.map_err(from_model)?;
    let sources = collected
        .grounding
        .map(|(g, _)| {
            g.sources
                .into_iter()
                .map(|s| Source {
                    index: s.index,
                    title: s.title,
                    document: s.document,
                    url: s.url,
                    snippet: s.snippet,
                })
                .collect()
        })
        .unwrap_or_default();
    turns.push(Turn {
        role: Role::Assistant,
        content: collected.answer.text,
        sources,
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
        cache: None,
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
                sources: Vec::new(),
            },
            Turn {
                role: Role::Assistant,
                content: "hello [1]".into(),
                sources: vec![Source {
                    index: 1,
                    title: "Setup".into(),
                    document: "guide/setup.md".into(),
                    url: None,
                    snippet: "Install it.".into(),
                }],
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
        let segments = turns[1].segments();
        assert_eq!(segments.len(), 2);
        assert_eq!(
            (segments[1].text.as_str(), segments[1].cites),
            ("[1]", Some(1))
        );
        let mut odd = turns[1].clone();
        odd.content = "a [2] b[1] [x] [1".into();
        let cites: Vec<Option<usize>> = odd.segments().iter().map(|s| s.cites).collect();
        assert_eq!(cites, [None, Some(1), None]);
        assert_eq!(odd.sources[0].link(), None);
        odd.sources[0].url = Some("javascript:alert(1)".into());
        assert_eq!(odd.sources[0].link(), None);
        odd.sources[0].url = Some("https://docs.example/setup".into());
        assert_eq!(odd.sources[0].link(), Some("https://docs.example/setup"));
        assert_eq!(Action::parse(None), Action::Send);
        assert_eq!(Action::parse(Some("clear")), Action::Clear);
    }
}
