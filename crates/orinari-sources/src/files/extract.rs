//! Text out of a file, by its extension: Markdown and plain text as they
//! are, HTML rendered to Markdown-like text (html2text keeps headings as
//! `#` lines), PDF page by page (pdf-extract). Extraction runs on the
//! indexer's thread only, never on a request.

use std::path::Path;

/// A file's text, in the parts chunking works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Extracted {
    /// The document's title: its first heading, HTML `<title>`, or file name.
    pub title: String,
    /// Parts in document order: `(locator, text)`; PDF gives one per page.
    pub parts: Vec<(String, String)>,
    /// Whether the text is Markdown (headings then guide chunking and locators).
    pub markdown: bool,
}

/// The kinds of file a files source indexes; anything else is ignored.
pub(crate) fn supported(path: &Path) -> bool {
    kind(path).is_some()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Markdown,
    Text,
    Html,
    Pdf,
}

fn kind(path: &Path) -> Option<Kind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "md" | "markdown" | "mdown" => Kind::Markdown,
        "txt" | "text" => Kind::Text,
        "html" | "htm" | "xhtml" => Kind::Html,
        "pdf" => Kind::Pdf,
        _ => return None,
    })
}

/// Extract `bytes`, read from `path`. Errors say why, for the source's status.
pub(crate) fn extract(path: &Path, bytes: &[u8]) -> Result<Extracted, String> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("document")
        .to_string();
    match kind(path) {
        None => Err("not a supported file type".into()),
        Some(Kind::Markdown) => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            let title = first_heading(&text).unwrap_or(stem);
            Ok(Extracted {
                title,
                parts: vec![(String::new(), text)],
                markdown: true,
            })
        }
        Some(Kind::Text) => Ok(Extracted {
            title: stem,
            parts: vec![(String::new(), String::from_utf8_lossy(bytes).into_owned())],
            markdown: false,
        }),
        Some(Kind::Html) => {
            let title = html_title(bytes).unwrap_or(stem);
            // Wide enough that paragraphs are not wrapped into short lines.
            let text = html2text::from_read(bytes, 10_000)
                .map_err(|e| format!("HTML could not be read: {e}"))?;
            Ok(Extracted {
                title,
                parts: vec![(String::new(), text)],
                markdown: true,
            })
        }
        Some(Kind::Pdf) => {
            // pdf-extract panics on some malformed files: a bad PDF must
            // cost its own index entry, never the indexer.
            let pages =
                std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem_by_pages(bytes))
                    .map_err(|_| "the PDF could not be parsed (the extractor failed)".to_string())?
                    .map_err(|e| format!("the PDF could not be read: {e}"))?;
            let parts = pages
                .into_iter()
                .enumerate()
                .filter(|(_, t)| !t.trim().is_empty())
                .map(|(i, t)| (format!("page {}", i + 1), t))
                .collect();
            Ok(Extracted {
                title: stem,
                parts,
                markdown: false,
            })
        }
    }
}

fn first_heading(markdown: &str) -> Option<String> {
    use pulldown_cmark::{Event, Parser, Tag, TagEnd};
    let mut inside = false;
    let mut title = String::new();
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::Heading { .. }) => inside = true,
            Event::End(TagEnd::Heading(_)) if inside => {
                let t = title.trim();
                if !t.is_empty() {
                    return Some(t.to_string());
                }
                inside = false;
            }
            Event::Text(t) | Event::Code(t) if inside => title.push_str(&t),
            _ => {}
        }
    }
    None
}

/// `<title>…</title>`, entity-decoded by html2text.
fn html_title(bytes: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(64 * 1024)]);
    let lower = head.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    let raw = &head[start..end];
    let text = html2text::from_read(format!("<p>{raw}</p>").as_bytes(), 10_000).ok()?;
    let t = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!t.is_empty()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_title_is_its_first_heading() {
        let e = extract(Path::new("a/setup.md"), b"intro\n\n# Setting *up*\n\ntext").unwrap();
        assert_eq!(e.title, "Setting up");
        assert!(e.markdown);
        let e = extract(Path::new("notes.txt"), b"plain").unwrap();
        assert_eq!((e.title.as_str(), e.markdown), ("notes", false));
    }

    #[test]
    fn html_keeps_headings_and_title() {
        let html = b"<html><head><title>The &amp; Guide</title><script>var x=1;</script></head>\
            <body><h1>Install</h1><p>Run the <b>installer</b>.</p></body></html>";
        let e = extract(Path::new("g.html"), html).unwrap();
        assert_eq!(e.title, "The & Guide");
        let text = &e.parts[0].1;
        assert!(text.contains("# Install"), "{text}");
        assert!(text.contains("Run the **installer**."), "{text}");
        assert!(!text.contains("var x"), "{text}");
    }

    #[test]
    fn a_broken_pdf_is_an_error_not_a_crash() {
        let e = extract(
            Path::new("x.pdf"),
            b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ntrailer",
        );
        assert!(e.is_err());
        assert!(!supported(Path::new("image.png")));
        assert!(supported(Path::new("A.PDF")));
    }
}
