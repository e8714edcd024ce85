//! What can keep a chat request from an answer, classified once: each
//! variant says which step refused it. The server turns them into
//! responses (`orinari-server/src/error.rs`); this crate knows no HTTP.

use std::time::Duration;

use orinari_api::ApiError;
use orinari_limits::queue::Refused;
use orinari_limits::{Policy, Window};
use orinari_models::ModelError;

/// Why a chat request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Refused before any limit was spent: a model the caller may not use
    /// or that is not served, input over the limits, or screening.
    #[error("{}", .0.message)]
    Refused(ApiError),
    /// The caller's token budget cannot take the estimate now.
    #[error("the token budget cannot take {estimate} tokens now")]
    Tokens {
        /// Tokens the request was estimated at.
        estimate: u32,
        /// The caller's limits.
        policy: Policy,
        /// When it may be retried.
        retry_after: Duration,
        /// The token limit after the refusal.
        window: Window,
    },
    /// The model's admission queue is full, or the wait timed out.
    #[error("{refused}")]
    Queue {
        /// Which.
        refused: Refused,
        /// The token limit (the reservation was given back).
        window: Window,
    },
    /// The backend refused or failed to start the answer.
    #[error("{error}")]
    Model {
        /// The backend's error.
        error: ModelError,
        /// The token limit (the reservation was given back).
        window: Window,
    },
}

impl ChatError {
    /// The token limit after this request, once a reservation was tried
    /// (for the `x-ratelimit-*-tokens` headers).
    pub fn tokens(&self) -> Option<Window> {
        match self {
            Self::Refused(_) => None,
            Self::Tokens { window, .. }
            | Self::Queue { window, .. }
            | Self::Model { window, .. } => Some(*window),
        }
    }
}
