//! An incremental server-sent-events parser for upstream streams.
//!
//! Bytes arrive in arbitrary pieces; [`Parser::push`] buffers only the
//! current unfinished line, so memory stays bounded by the longest event and
//! every complete event is handed on at once (no buffering of the answer).

/// One event: its `event:` name (empty for the default) and its joined `data:` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, or empty.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Longest event we accept before calling the stream broken.
const MAX_EVENT_BYTES: usize = 4 << 20;

/// Feeds bytes, yields complete events.
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
}

/// The stream is not valid SSE (an event larger than the limit or not UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseError(pub &'static str);

impl Parser {
    /// Parse `bytes`, pushing each completed event into `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..pos]);
            rest = &rest[pos + 1..];
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out)?;
            self.line = line;
            self.line.clear();
        }
        self.line.extend_from_slice(rest);
        if self.line.len() + self.data.len() > MAX_EVENT_BYTES {
            return Err(SseError("an upstream event is larger than 4 MiB"));
        }
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            if self.has_data {
                out.push(SseEvent {
                    event: std::mem::take(&mut self.event),
                    data: std::mem::take(&mut self.data),
                });
            }
            self.event.clear();
            self.has_data = false;
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line =
            std::str::from_utf8(line).map_err(|_| SseError("upstream sent invalid UTF-8"))?;
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => {
                self.event.clear();
                self.event.push_str(value);
            }
            _ => {}
        }
        if self.data.len() > MAX_EVENT_BYTES {
            return Err(SseError("an upstream event is larger than 4 MiB"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    fn parse_in_pieces(text: &str, piece: usize) -> Vec<SseEvent> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for chunk in text.as_bytes().chunks(piece) {
            p.push(chunk, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn events_survive_any_split() {
        let text = ": comment\r\nevent: message_start\r\ndata: {\"a\":1}\r\n\r\ndata: x\ndata: y\n\nid: 3\n\ndata: [DONE]\n\n";
        let want = vec![
            SseEvent {
                event: "message_start".into(),
                data: "{\"a\":1}".into(),
            },
            SseEvent {
                event: String::new(),
                data: "x\ny".into(),
            },
            SseEvent {
                event: String::new(),
                data: "[DONE]".into(),
            },
        ];
        for piece in 1..text.len() {
            assert_eq!(parse_in_pieces(text, piece), want, "piece size {piece}");
        }
    }

    #[test]
    fn an_unfinished_event_is_not_emitted() {
        assert!(parse_in_pieces("data: partial", 4).is_empty());
    }
}
