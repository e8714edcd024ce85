//! Turning generated token bytes into text: UTF-8 safe, stop-sequence aware.
//!
//! A token may end in the middle of a multi-byte character, and a stop string
//! may span several tokens. [`TextAssembler`] holds back exactly the bytes
//! that could still become either, and releases everything else at once.

/// Incremental detokenizer with stop sequences.
pub struct TextAssembler {
    pending: Vec<u8>,
    held: String,
    stops: Vec<String>,
}

/// What one token produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// Text safe to send (possibly empty).
    Text(String),
    /// A stop sequence matched; this is the text before it. Nothing follows.
    Stopped(String),
}

impl TextAssembler {
    /// `stops` are matched in the output text; empty strings are ignored.
    pub fn new(stops: &[String]) -> Self {
        Self {
            pending: Vec::new(),
            held: String::new(),
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
        }
    }

    /// Add one token's bytes.
    pub fn push(&mut self, bytes: &[u8]) -> Piece {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(s) => s.len(),
            // Bytes that can never become valid UTF-8 are replaced, not held forever.
            Err(e) if e.error_len().is_some() => {
                let text = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                self.held.push_str(&text);
                return self.release();
            }
            Err(e) => e.valid_up_to(),
        };
        let rest = self.pending.split_off(valid);
        let complete = std::mem::replace(&mut self.pending, rest);
        self.held.push_str(&String::from_utf8_lossy(&complete));
        self.release()
    }

    /// The end of the generation: whatever is still held.
    pub fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.held);
        out.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.pending)));
        out
    }

    fn release(&mut self) -> Piece {
        if let Some(cut) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..cut].to_string();
            self.held.clear();
            return Piece::Stopped(out);
        }
        // Keep the longest tail that is a prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .map(|s| longest_suffix_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let split = self.held.len() - keep;
        let tail = self.held.split_off(split);
        Piece::Text(std::mem::replace(&mut self.held, tail))
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`,
/// on character boundaries.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n)
                && stop.is_char_boundary(n)
                && text.ends_with(&stop[..n])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(p: Piece) -> String {
        match p {
            Piece::Text(t) => t,
            Piece::Stopped(t) => panic!("unexpected stop after {t:?}"),
        }
    }

    #[test]
    fn splits_multibyte_characters_safely() {
        let mut a = TextAssembler::new(&[]);
        let bytes = "é€".as_bytes();
        assert_eq!(text(a.push(&bytes[..1])), "");
        assert_eq!(text(a.push(&bytes[1..3])), "é");
        assert_eq!(text(a.push(&bytes[3..])), "€");
        assert_eq!(a.finish(), "");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut a = TextAssembler::new(&[]);
        assert_eq!(text(a.push(&[0xff, b'a'])), "\u{fffd}a");
    }

    #[test]
    fn stop_sequence_across_tokens_is_never_emitted() {
        let mut a = TextAssembler::new(&["END".to_string()]);
        assert_eq!(text(a.push(b"hello E")), "hello ");
        assert_eq!(text(a.push(b"N")), "");
        assert_eq!(a.push(b"D and more"), Piece::Stopped(String::new()));
    }

    #[test]
    fn held_prefix_is_released_when_it_diverges() {
        let mut a = TextAssembler::new(&["END".to_string()]);
        assert_eq!(text(a.push(b"E")), "");
        assert_eq!(text(a.push(b"x")), "Ex");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let mut a = TextAssembler::new(&["b".to_string(), "a".to_string()]);
        assert_eq!(a.push(b"xxab"), Piece::Stopped("xx".into()));
    }

    #[test]
    fn finish_flushes_held_text() {
        let mut a = TextAssembler::new(&["END".to_string()]);
        assert_eq!(text(a.push(b"EN")), "");
        assert_eq!(a.finish(), "EN");
    }
}
