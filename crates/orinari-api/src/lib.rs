//! OpenAI-compatible wire types: requests (parsed and validated field by
//! field), responses, stream chunks, SSE framing and the error envelope.
//!
//! This crate does no I/O and knows nothing of HTTP frameworks: statuses are
//! plain `u16`s, and the server turns them into responses in one place.

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod error;
pub mod grounded;
pub mod logprobs;
pub mod messages;
pub mod models;
pub mod options;
pub mod responses;
pub mod sse;
pub mod tools;

pub use chat::{ChatMessage, ChatRequest, Role, ValidationLimits};
pub use error::{ApiError, ErrorType};
pub use logprobs::{ChoiceLogprobs, TokenLogprob, TopLogprob};
pub use options::Options;
pub use tools::{ContentPart, ResponseFormat, Tool, ToolCall, ToolCallDelta, ToolChoice};
