//! Server-sent events framing for chat streams.

use serde::Serialize;

use crate::ApiError;

/// The terminator every stream ends with.
pub const DONE: &str = "data: [DONE]\n\n";

/// `data: <json>\n\n`.
pub fn data<T: Serialize>(value: &T) -> String {
    // One buffer for the whole event (no second copy for the framing).
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    match serde_json::to_writer(&mut out, value) {
        Ok(()) => {
            out.extend_from_slice(b"\n\n");
            String::from_utf8(out)
                .unwrap_or_else(|_| error(&ApiError::internal("could not encode a stream chunk")))
        }
        Err(_) => error(&ApiError::internal("could not encode a stream chunk")),
    }
}

/// An `error` event carrying the OpenAI envelope; callers follow it with [`DONE`].
pub fn error(e: &ApiError) -> String {
    format!("event: error\ndata: {}\n\n", e.to_json())
}
