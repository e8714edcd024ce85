//! Chunking by structure: text-splitter keeps the largest units that fit
//! (sections under headings, then paragraphs, sentences, words) within a
//! token budget counted by the caller's tokenizer; each chunk carries the
//! heading path it sits under (or its PDF page) as its locator.

use std::sync::Arc;

use text_splitter::{ChunkConfig, ChunkSizer, MarkdownSplitter, TextSplitter};

use super::extract::Extracted;

/// Counts tokens the way the model will.
pub type TokenCounter = Arc<dyn Fn(&str) -> usize + Send + Sync>;

/// The counter used when the caller has no tokenizer to offer: about four
/// characters per token, the usual rate for English BPE vocabularies.
pub fn approximate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

struct Sizer(TokenCounter);

impl ChunkSizer for Sizer {
    fn size(&self, chunk: &str) -> usize {
        (self.0)(chunk)
    }
}

/// One chunk to index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// Heading path (`Install › Linux`) or page, possibly empty.
    pub locator: String,
    /// The chunk's text.
    pub text: String,
}

/// Split an extracted document into chunks of at most `max_tokens`.
pub(crate) fn chunk(doc: &Extracted, max_tokens: usize, count: &TokenCounter) -> Vec<Chunk> {
    let config = || ChunkConfig::new(max_tokens).with_sizer(Sizer(count.clone()));
    let mut out = Vec::new();
    for (locator, text) in &doc.parts {
        if doc.markdown {
            // Each section (a heading and what follows, up to the next
            // heading) is chunked on its own, so a chunk never spans two
            // sections and its locator is its section's heading path.
            let headings = heading_spans(text);
            let mut bounds: Vec<usize> = headings.iter().map(|(start, _, _)| *start).collect();
            if bounds.first() != Some(&0) {
                bounds.insert(0, 0);
            }
            bounds.push(text.len());
            for w in bounds.windows(2) {
                let (start, end) = (w[0], w[1]);
                let path = heading_path(&headings, start);
                let locator = match (locator.is_empty(), path.is_empty()) {
                    (_, true) => locator.clone(),
                    (true, false) => path,
                    (false, false) => format!("{locator} › {path}"),
                };
                for piece in MarkdownSplitter::new(config()).chunks(&text[start..end]) {
                    push(&mut out, locator.clone(), piece);
                }
            }
        } else {
            for piece in TextSplitter::new(config()).chunks(text) {
                push(&mut out, locator.clone(), piece);
            }
        }
    }
    out
}

fn push(out: &mut Vec<Chunk>, locator: String, piece: &str) {
    let text = piece.trim();
    if !text.is_empty() {
        out.push(Chunk {
            locator,
            text: text.to_string(),
        });
    }
}

/// Every heading: (byte offset, level, text).
fn heading_spans(markdown: &str) -> Vec<(usize, usize, String)> {
    use pulldown_cmark::{Event, Parser, Tag, TagEnd};
    let mut spans = Vec::new();
    let mut current: Option<(usize, usize, String)> = None;
    for (event, range) in Parser::new(markdown).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                current = Some((range.start, level as usize, String::new()));
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some((_, _, s)) = current.as_mut() {
                    s.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((start, level, text)) = current.take() {
                    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                    if !text.is_empty() {
                        spans.push((start, level, text));
                    }
                }
            }
            _ => {}
        }
    }
    spans
}

/// The headings in force at `offset`: the last of each level above it.
fn heading_path(headings: &[(usize, usize, String)], offset: usize) -> String {
    let mut stack: Vec<(usize, &str)> = Vec::new();
    for (start, level, text) in headings {
        if *start > offset {
            break;
        }
        while stack.last().is_some_and(|(l, _)| l >= level) {
            stack.pop();
        }
        stack.push((*level, text));
    }
    stack
        .iter()
        .map(|(_, t)| *t)
        .collect::<Vec<_>>()
        .join(" › ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words() -> TokenCounter {
        Arc::new(|s: &str| s.split_whitespace().count())
    }

    #[test]
    fn markdown_chunks_follow_headings_and_fit_the_budget() {
        let md = format!(
            "# Guide\n\nIntro text here.\n\n## Install\n\n{}\n\n### Linux\n\nUse the package.\n\n## Use\n\nRun it.\n",
            "word ".repeat(30)
        );
        let doc = Extracted {
            title: "Guide".into(),
            parts: vec![(String::new(), md)],
            markdown: true,
        };
        let chunks = chunk(&doc, 20, &words());
        assert!(
            chunks
                .iter()
                .all(|c| c.text.split_whitespace().count() <= 20),
            "{chunks:#?}"
        );
        let linux = chunks
            .iter()
            .find(|c| c.text.contains("Use the package"))
            .unwrap();
        assert_eq!(linux.locator, "Guide › Install › Linux");
        let run = chunks.iter().find(|c| c.text.contains("Run it")).unwrap();
        assert_eq!(run.locator, "Guide › Use");
    }

    #[test]
    fn pages_are_locators_and_paragraphs_split() {
        let doc = Extracted {
            title: "r".into(),
            parts: vec![
                ("page 1".into(), "First paragraph.\n\nSecond one.".into()),
                ("page 2".into(), "Other page.".into()),
            ],
            markdown: false,
        };
        let chunks = chunk(&doc, 2, &words());
        assert_eq!(
            chunks
                .iter()
                .map(|c| (c.locator.as_str(), c.text.as_str()))
                .collect::<Vec<_>>(),
            [
                ("page 1", "First paragraph."),
                ("page 1", "Second one."),
                ("page 2", "Other page.")
            ]
        );
    }

    #[test]
    fn approximation_is_a_quarter_of_the_characters() {
        assert_eq!(approximate_tokens(""), 0);
        assert_eq!(approximate_tokens("abcde"), 2);
    }
}
