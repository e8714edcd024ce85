//! Log probabilities of output tokens (`logprobs`, `top_logprobs`), in
//! OpenAI's shape: each token's text, log probability and UTF-8 bytes, with
//! the most likely alternatives at that position.

use serde::{Deserialize, Serialize};

/// One output token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's text (lossy where it ends inside a character).
    pub token: String,
    /// Its natural log probability.
    pub logprob: f32,
    /// Its bytes (`null` for a token with no text).
    pub bytes: Option<Vec<u8>>,
    /// The most likely tokens at this position, most likely first.
    #[serde(default)]
    pub top_logprobs: Vec<TopLogprob>,
}

/// An alternative at one position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Its natural log probability.
    pub logprob: f32,
    /// Its bytes (`null` for a token with no text).
    pub bytes: Option<Vec<u8>>,
}

/// A choice's `logprobs`: `{"content": [...], "refusal": null}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChoiceLogprobs {
    /// The output tokens, in order.
    pub content: Vec<TokenLogprob>,
    /// Always null (no refusal tokens).
    pub refusal: Option<Vec<TokenLogprob>>,
}

impl ChoiceLogprobs {
    /// The logprobs of these tokens.
    pub fn of(content: Vec<TokenLogprob>) -> Self {
        Self {
            content,
            refusal: None,
        }
    }
}
