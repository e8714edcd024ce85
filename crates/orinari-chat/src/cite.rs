//! Citation markers in a grounded answer. The model cites passage `n` with
//! `[n]`; as the text streams by, every marker is checked against the
//! passages the answer was given: a marker that points at none of them
//! (`[5]` when four were given, `[0]`) is removed, never shown, and each
//! kept marker becomes an OpenAI `url_citation` annotation (for a source
//! with a link) at its place in the text. A list (`[1, 3]`) becomes one
//! marker per kept number (`[1][3]`).
//!
//! A marker may be split across pieces of a stream (`[1` then `2]`): text
//! that may still become a marker is held back until it is decided, at
//! most [`MAX_MARKER`] bytes. `arr[0]` is code, not a marker: a marker
//! never follows a letter, a digit or `_`.

use orinari_api::grounded::Annotation;

/// The longest text held back as a possible marker.
pub(crate) const MAX_MARKER: usize = 24;

/// The most numbers one bracketed list may cite.
const MAX_LIST: usize = 8;

/// Filters one answer's text: checks markers, records annotations.
#[derive(Debug)]
pub(crate) struct Citer {
    /// (title, url) of passage `n` at `n - 1`.
    refs: Vec<(String, Option<String>)>,
    /// Text that may still become a marker.
    held: String,
    /// Characters passed on so far.
    emitted: usize,
    /// The last character passed on.
    last: Option<char>,
    annotations: Vec<Annotation>,
    /// Markers cited (kept) and removed.
    kept: usize,
    removed: usize,
}

/// What the text at a `[` is.
enum Parsed {
    /// A marker of this many bytes citing these numbers.
    Marker(usize, Vec<usize>),
    /// It may become one with more text.
    Incomplete,
    /// It is not one.
    Not,
}

impl Citer {
    /// A filter for an answer given these passages (title and url, in
    /// their numbered order).
    pub(crate) fn new(refs: Vec<(String, Option<String>)>) -> Self {
        Self {
            refs,
            held: String::new(),
            emitted: 0,
            last: None,
            annotations: Vec::new(),
            kept: 0,
            removed: 0,
        }
    }

    /// The next piece of the answer; returns what can be passed on now.
    pub(crate) fn push(&mut self, text: &str) -> String {
        let mut input = std::mem::take(&mut self.held);
        input.push_str(text);
        let mut out = String::with_capacity(input.len());
        let mut rest = input.as_str();
        while let Some(i) = rest.find('[') {
            self.emit(&mut out, &rest[..i]);
            let tail = &rest[i..];
            let eligible = self.last.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            match (eligible, parse(tail)) {
                (true, Parsed::Marker(len, numbers)) => {
                    self.cite(&mut out, &numbers);
                    rest = &tail[len..];
                }
                (true, Parsed::Incomplete) => {
                    self.held = tail.to_string();
                    return out;
                }
                _ => {
                    self.emit(&mut out, "[");
                    rest = &tail[1..];
                }
            }
        }
        self.emit(&mut out, rest);
        out
    }

    /// The answer ended: what was held back is plain text.
    pub(crate) fn finish(&mut self) -> String {
        let held = std::mem::take(&mut self.held);
        let mut out = String::new();
        self.emit(&mut out, &held);
        out
    }

    /// The annotations of the markers passed on so far.
    pub(crate) fn annotations(&self) -> &[Annotation] {
        &self.annotations
    }

    /// Markers kept and removed so far.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.kept, self.removed)
    }

    fn emit(&mut self, out: &mut String, text: &str) {
        if let Some(c) = text.chars().next_back() {
            self.last = Some(c);
        }
        self.emitted += text.chars().count();
        out.push_str(text);
    }

    fn cite(&mut self, out: &mut String, numbers: &[usize]) {
        let mut cited: Vec<usize> = Vec::with_capacity(numbers.len());
        for &n in numbers {
            if (1..=self.refs.len()).contains(&n) && !cited.contains(&n) {
                cited.push(n);
            } else {
                self.removed += 1;
            }
        }
        for n in cited {
            let start = self.emitted;
            self.emit(out, &format!("[{n}]"));
            self.kept += 1;
            if let Some((title, Some(url))) = self.refs.get(n - 1) {
                self.annotations.push(Annotation::url_citation(
                    start,
                    self.emitted,
                    title.clone(),
                    url.clone(),
                ));
            }
        }
    }
}

/// Read a marker at the start of `s` (which starts with `[`):
/// `[` number (`,` number)* `]`, numbers of 1 to 3 digits, spaces allowed
/// around them.
fn parse(s: &str) -> Parsed {
    let b = s.as_bytes();
    let short = |i: usize| {
        if i < MAX_MARKER {
            Parsed::Incomplete
        } else {
            Parsed::Not
        }
    };
    let skip_spaces = |mut i: usize| {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        i
    };
    let mut numbers = Vec::new();
    let mut i = 1;
    loop {
        i = skip_spaces(i);
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() && i - start < 4 {
            i += 1;
        }
        let digits = i - start;
        if digits > 3 || i >= MAX_MARKER {
            return Parsed::Not;
        }
        if i == b.len() {
            return short(i);
        }
        if digits == 0 {
            return Parsed::Not;
        }
        numbers.push(s[start..i].parse().unwrap_or(0));
        i = skip_spaces(i);
        if i == b.len() {
            return short(i);
        }
        match b[i] {
            b']' => return Parsed::Marker(i + 1, numbers),
            b',' if numbers.len() < MAX_LIST => i += 1,
            _ => return Parsed::Not,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn citer(n: usize) -> Citer {
        Citer::new(
            (1..=n)
                .map(|i| (format!("Doc {i}"), Some(format!("https://d/{i}"))))
                .collect(),
        )
    }

    /// The text passed on when `pieces` stream by, and the annotations.
    fn run(n: usize, pieces: &[&str]) -> (String, Vec<(usize, usize, String)>) {
        let mut c = citer(n);
        let mut text: String = pieces.iter().map(|p| c.push(p)).collect();
        text.push_str(&c.finish());
        let spans = c
            .annotations()
            .iter()
            .map(|a| {
                let u = &a.url_citation;
                (u.start_index, u.end_index, u.url.clone())
            })
            .collect();
        (text, spans)
    }

    #[test]
    fn markers_to_nothing_are_removed_and_kept_ones_annotated() {
        let (text, spans) = run(2, &["Install it [1]. Then run [2][5]. Done [0]."]);
        assert_eq!(text, "Install it [1]. Then run [2]. Done .");
        assert_eq!(
            spans,
            [
                (11, 14, "https://d/1".into()),
                (25, 28, "https://d/2".into())
            ]
        );
        let chars: Vec<char> = text.chars().collect();
        let cited: String = chars[11..14].iter().collect();
        assert_eq!(cited, "[1]");
    }

    #[test]
    fn a_marker_split_across_pieces_is_held_until_decided() {
        let whole = run(12, &["See [12] and [3, 4]."]);
        for split in [
            &["See [", "12] and [3", ", 4]."][..],
            &["See [1", "2", "] and [", "3, ", "4", "]."],
            &["S", "ee ", "[12] and [3, 4]", "."],
        ] {
            assert_eq!(run(12, split), whole, "{split:?}");
        }
        assert_eq!(whole.0, "See [12] and [3][4].");
        let (text, _) = run(2, &["a [1", ", 9", "]"]);
        assert_eq!(text, "a [1]");
    }

    #[test]
    fn text_that_only_looks_like_a_marker_passes() {
        for plain in [
            "arr[0] and x[12]",
            "[link](http://x)",
            "[a] [1a] [1234] []",
            "tail [",
            "tail [12",
        ] {
            assert_eq!(run(20, &[plain]).0, plain, "{plain}");
        }
        // An unclosed list longer than a marker can be is let through.
        let long = format!("[1, 2, 3, 4, 5, 6, 7{}", " ".repeat(30));
        assert_eq!(run(20, &[&long]).0, long);
    }

    #[test]
    fn character_offsets_count_characters_not_bytes() {
        let (text, spans) = run(1, &["é日本 [1]"]);
        assert_eq!(text, "é日本 [1]");
        assert_eq!(spans[0].0, 4);
        assert_eq!(spans[0].1, 7);
    }

    #[test]
    fn sources_without_a_link_keep_markers_without_annotations() {
        let mut c = Citer::new(vec![("Setup".into(), None)]);
        assert_eq!(c.push("Yes [1] [2]"), "Yes [1] ");
        assert!(c.annotations().is_empty());
        assert_eq!(c.counts(), (1, 1));
    }
}
