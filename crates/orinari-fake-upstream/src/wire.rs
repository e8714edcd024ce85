//! The bytes the fake upstream sends, in the OpenAI or the Anthropic dialect.

use axum::body::Bytes;

/// Which API a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI Chat Completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

/// Token `i` of every answer: "tok0 ", "tok1 ", …
pub fn token(i: usize) -> String {
    format!("tok{i} ")
}

/// The whole answer text for `n` tokens.
pub fn text(n: usize) -> String {
    (0..n).map(token).collect()
}

/// A non-streamed answer.
pub fn whole(d: Dialect, n: usize) -> String {
    let text = serde_json::Value::String(text(n));
    match d {
        Dialect::OpenAi => format!(
            r#"{{"id":"chatcmpl-fake","object":"chat.completion","created":0,"model":"fake","choices":[{{"index":0,"message":{{"role":"assistant","content":{text}}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":5,"completion_tokens":{n},"total_tokens":{}}}}}"#,
            n + 5
        ),
        Dialect::Anthropic => format!(
            r#"{{"id":"msg_fake","type":"message","role":"assistant","model":"fake","content":[{{"type":"text","text":{text}}}],"stop_reason":"end_turn","usage":{{"input_tokens":5,"output_tokens":{n}}}}}"#
        ),
    }
}

/// What a stream starts with.
pub fn stream_head(d: Dialect) -> Bytes {
    match d {
        Dialect::OpenAi => Bytes::from_static(
            b"data: {\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"fake\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        ),
        Dialect::Anthropic => Bytes::from_static(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_fake\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"fake\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        ),
    }
}

/// One token as a stream event.
pub fn stream_token(d: Dialect, i: usize) -> Bytes {
    let t = token(i);
    Bytes::from(match d {
        Dialect::OpenAi => format!(
            "data: {{\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"fake\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{t}\"}},\"finish_reason\":null}}]}}\n\n"
        ),
        Dialect::Anthropic => format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{t}\"}}}}\n\n"
        ),
    })
}

/// What a stream ends with: finish reason, usage, terminator.
pub fn stream_tail(d: Dialect, n: usize) -> Bytes {
    Bytes::from(match d {
        Dialect::OpenAi => format!(
            "data: {{\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"fake\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\ndata: {{\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"fake\",\"choices\":[],\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":{n},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n",
            n + 5
        ),
        Dialect::Anthropic => format!(
            "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\nevent: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{{\"output_tokens\":{n}}}}}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
        ),
    })
}

/// A whole stream in one buffer.
pub fn stream_all(d: Dialect, n: usize) -> Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(&stream_head(d));
    for i in 0..n {
        out.extend_from_slice(&stream_token(d, i));
    }
    out.extend_from_slice(&stream_tail(d, n));
    Bytes::from(out)
}
