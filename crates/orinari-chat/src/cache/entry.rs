//! A cached answer: the backend's events exactly as they came (the same
//! text pieces, so a replayed stream has the same chunks) and the prompt's
//! token count; encoded for Redis as JSON before it is sealed.

use orinari_models::{Event, FinishReason, TokenLogprob, Usage};
use serde::{Deserialize, Serialize};

/// One answer as the backend produced it, ending with its `Done`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) prompt_tokens: u32,
    pub(crate) events: Vec<Event>,
}

impl Entry {
    /// Memory it holds, roughly (text, log probabilities, the vector).
    pub(crate) fn size(&self) -> usize {
        let events: usize = self.events.iter().map(event_size).sum();
        std::mem::size_of::<Self>() + events
    }

    /// The usage its `Done` reports.
    pub(crate) fn usage(&self) -> Usage {
        self.events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::Done { usage, .. } => Some(*usage),
                _ => None,
            })
            .unwrap_or_default()
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let stored = Stored {
            prompt_tokens: self.prompt_tokens,
            events: self.events.iter().filter_map(StoredEvent::from).collect(),
        };
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    /// `None` for anything that is not a whole encoded answer.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let stored: Stored = serde_json::from_slice(bytes).ok()?;
        let events: Vec<Event> = stored.events.into_iter().map(Event::from).collect();
        matches!(events.last(), Some(Event::Done { .. })).then_some(Self {
            prompt_tokens: stored.prompt_tokens,
            events,
        })
    }
}

pub(crate) fn event_size(e: &Event) -> usize {
    let own = std::mem::size_of::<Event>();
    own + match e {
        Event::Delta(t) => t.len(),
        Event::Logprobs(l) => l
            .iter()
            .map(|t| {
                std::mem::size_of::<TokenLogprob>()
                    + t.token.len()
                    + t.bytes.as_ref().map_or(0, Vec::len)
                    + t.top_logprobs
                        .iter()
                        .map(|a| 48 + a.token.len() + a.bytes.as_ref().map_or(0, Vec::len))
                        .sum::<usize>()
            })
            .sum(),
        Event::ToolCall(c) => c.arguments.len() + 64,
        Event::Done { .. } => 0,
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    prompt_tokens: u32,
    events: Vec<StoredEvent>,
}

#[derive(Serialize, Deserialize)]
enum StoredEvent {
    Delta(String),
    Logprobs(Vec<TokenLogprob>),
    Done {
        finish_reason: String,
        prompt_tokens: u32,
        completion_tokens: u32,
    },
}

impl StoredEvent {
    /// Tool calls are never stored (requests with tools bypass the cache).
    fn from(e: &Event) -> Option<Self> {
        Some(match e {
            Event::Delta(t) => Self::Delta(t.clone()),
            Event::Logprobs(l) => Self::Logprobs(l.clone()),
            Event::ToolCall(_) => return None,
            Event::Done {
                finish_reason,
                usage,
            } => Self::Done {
                finish_reason: finish_reason.as_str().to_string(),
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
            },
        })
    }
}

impl From<StoredEvent> for Event {
    fn from(e: StoredEvent) -> Self {
        match e {
            StoredEvent::Delta(t) => Self::Delta(t),
            StoredEvent::Logprobs(l) => Self::Logprobs(l),
            StoredEvent::Done {
                finish_reason,
                prompt_tokens,
                completion_tokens,
            } => Self::Done {
                finish_reason: match finish_reason.as_str() {
                    "length" => FinishReason::Length,
                    "tool_calls" => FinishReason::ToolCalls,
                    "content_filter" => FinishReason::ContentFilter,
                    _ => FinishReason::Stop,
                },
                usage: Usage {
                    prompt_tokens,
                    completion_tokens,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    #[test]
    fn an_entry_survives_its_encoding() {
        let entry = Entry {
            prompt_tokens: 12,
            events: vec![
                Event::Delta("Hel".into()),
                Event::Delta("lo ✓".into()),
                Event::Done {
                    finish_reason: FinishReason::Length,
                    usage: Usage {
                        prompt_tokens: 12,
                        completion_tokens: 2,
                    },
                },
            ],
        };
        assert_eq!(Entry::decode(&entry.encode()).unwrap(), entry);
        assert_eq!(entry.usage().completion_tokens, 2);
        // Without its last event an answer is not an entry.
        let mut cut = entry.clone();
        cut.events.pop();
        assert!(Entry::decode(&cut.encode()).is_none());
        assert!(Entry::decode(b"not json").is_none());
    }
}
