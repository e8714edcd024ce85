//! Server-sent events framing for chat streams.

use serde::Serialize;

use crate::ApiError;

/// The terminator every stream ends with.
pub const DONE: &str = "data: [DONE]\n\n";

/// `data: <json>\n\n`.
pub fn data<T: Serialize>(value: &T) -> String {
    let mut out = Vec::with_capacity(256);
    write_data(&mut out, value);
    String::from_utf8(out)
        .unwrap_or_else(|_| error(&ApiError::internal("could not encode a stream chunk")))
}

/// [`data`], appended to `out` (a stream gathers the events that are ready
/// together into one buffer); an `error` event if `value` cannot be encoded.
pub fn write_data<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    let start = out.len();
    out.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut *out, value).is_ok() {
        out.extend_from_slice(b"\n\n");
    } else {
        out.truncate(start);
        out.extend_from_slice(
            error(&ApiError::internal("could not encode a stream chunk")).as_bytes(),
        );
    }
}

/// An `error` event carrying the OpenAI envelope; callers follow it with [`DONE`].
pub fn error(e: &ApiError) -> String {
    format!("event: error\ndata: {}\n\n", e.to_json())
}
