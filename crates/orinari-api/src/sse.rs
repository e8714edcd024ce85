//! Server-sent events framing for chat streams.

use serde::Serialize;

use crate::ApiError;

/// The terminator every stream ends with.
pub const DONE: &str = "data: [DONE]\n\n";

/// `data: <json>\n\n`.
pub fn data<T: Serialize>(value: &T) -> String {
    match serde_json::to_string(value) {
        Ok(json) => format!("data: {json}\n\n"),
        Err(_) => error(&ApiError::internal("could not encode a stream chunk")),
    }
}

/// An `error` event carrying the OpenAI envelope; callers follow it with [`DONE`].
pub fn error(e: &ApiError) -> String {
    format!("event: error\ndata: {}\n\n", e.to_json())
}
