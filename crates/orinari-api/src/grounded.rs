//! Grounded answers on the wire (CONTRACT.md): the request's `orinari`
//! extension (`{"sources": [...]}` narrows retrieval, `[]` turns it off),
//! and what a grounded answer carries — OpenAI `url_citation` annotations on
//! the message and two top-level extension fields, `sources` and
//! `retrieval`. Official OpenAI clients ignore fields they do not know, so
//! every response still parses there unchanged.

use serde::Serialize;
use serde_json::Value;

use crate::ApiError;
use crate::chat::expected;

/// The most source names a request may list in `orinari.sources`.
pub const MAX_REQUEST_SOURCES: usize = 32;

/// The request's `orinari` extension object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Extension {
    /// `orinari.sources`: `None` when absent (the model's own sources),
    /// else the names asked for (empty: no retrieval).
    pub(crate) sources: Option<Vec<String>>,
    /// `orinari.cache`: `false` bypasses the exact response cache for this
    /// request (neither read nor written); `None` or `true` follow the
    /// model's `cache` setting.
    pub(crate) cache: Option<bool>,
}

/// The request's `orinari` extension (`sources`, `cache`).
pub(crate) fn parse_extension(value: Option<&Value>) -> Result<Extension, ApiError> {
    let o = match value {
        None | Some(Value::Null) => return Ok(Extension::default()),
        Some(Value::Object(o)) => o,
        Some(v) => return Err(expected("orinari", "an object", v)),
    };
    for key in o.keys() {
        if key != "sources" && key != "cache" {
            return Err(ApiError::invalid(
                format!("orinari.{key}"),
                format!("Unrecognized ORINARI extension field `{key}` (known: sources, cache)."),
            )
            .with_code("unknown_parameter"));
        }
    }
    let cache = match o.get("cache") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(v) => return Err(expected("orinari.cache", "a boolean", v)),
    };
    let list = match o.get("sources") {
        None | Some(Value::Null) => {
            return Ok(Extension {
                sources: None,
                cache,
            });
        }
        Some(Value::Array(a)) => a,
        Some(v) => {
            return Err(expected("orinari.sources", "an array of source names", v));
        }
    };
    if list.len() > MAX_REQUEST_SOURCES {
        return Err(ApiError::invalid(
            "orinari.sources",
            format!(
                "`orinari.sources` lists {} names; at most {MAX_REQUEST_SOURCES} are allowed.",
                list.len()
            ),
        ));
    }
    let mut names: Vec<String> = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let param = format!("orinari.sources[{i}]");
        match v {
            Value::String(s) if !s.trim().is_empty() => {
                if !names.contains(s) {
                    names.push(s.clone());
                }
            }
            Value::String(_) => {
                return Err(ApiError::invalid(param, "A source name must not be empty."));
            }
            other => return Err(expected(&param, "a string", other)),
        }
    }
    Ok(Extension {
        sources: Some(names),
        cache,
    })
}

/// One passage a grounded answer was given, numbered as its `[n]` marker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceRef {
    /// The `n` of its `[n]` marker, from 1.
    pub index: usize,
    /// The `[[sources]]` name it came from.
    pub source: String,
    /// The document within that source (a file's path in the folder, a URL, a row id).
    pub document: String,
    /// The document's title.
    pub title: String,
    /// A link to the document, when the source has one.
    pub url: Option<String>,
    /// The start of the passage, as given to the model.
    pub snippet: String,
    /// Its fused relevance score, 0..=1 (the best passage of an answer scores 1).
    pub score: f64,
    /// Present (true) when the guard judged the passage a prompt-injection
    /// attempt and it was given to the model fenced and marked as such.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub flagged: bool,
}

/// How one source's search went for this answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetrievalReport {
    /// The `[[sources]]` name.
    pub source: String,
    /// `ok`, `timeout` or `error`.
    pub outcome: &'static str,
    /// Passages it returned.
    pub hits: usize,
    /// From the start of the retrieval to its answer or deadline.
    pub latency_ms: u64,
}

/// An OpenAI `url_citation` annotation: the `[n]` marker at
/// `start_index..end_index` of the message content (in characters) cites
/// the source with this URL and title.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Annotation {
    /// Always `url_citation`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The citation.
    pub url_citation: UrlCitation,
}

/// The body of a `url_citation` annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UrlCitation {
    /// Where the marker starts in the content (characters, from 0).
    pub start_index: usize,
    /// Where it ends (exclusive).
    pub end_index: usize,
    /// The cited document's title.
    pub title: String,
    /// The cited document's link.
    pub url: String,
}

impl Annotation {
    /// A `url_citation` for the marker at `start..end`.
    pub fn url_citation(start: usize, end: usize, title: String, url: String) -> Self {
        Self {
            kind: "url_citation",
            url_citation: UrlCitation {
                start_index: start,
                end_index: end,
                title,
                url,
            },
        }
    }
}

/// What a grounded answer carries besides its text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grounding {
    /// The numbered passages (`sources`).
    pub sources: Vec<SourceRef>,
    /// Each asked source's outcome (`retrieval`).
    pub retrieval: Vec<RetrievalReport>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;
    use serde_json::json;

    #[test]
    fn the_extension_narrows_or_turns_off() {
        let sources = |v: Option<&Value>| parse_extension(v).unwrap().sources;
        assert_eq!(sources(None), None);
        assert_eq!(sources(Some(&json!({}))), None);
        assert_eq!(sources(Some(&json!({"sources": []}))), Some(vec![]));
        assert_eq!(
            sources(Some(&json!({"sources": ["a", "b", "a"]}))),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(parse_extension(None).unwrap().cache, None);
        let off = parse_extension(Some(&json!({"cache": false, "sources": ["a"]}))).unwrap();
        assert_eq!(off.cache, Some(false));
        assert_eq!(off.sources, Some(vec!["a".to_string()]));
        for (bad, param) in [
            (json!("x"), "orinari"),
            (json!({"source": []}), "orinari.source"),
            (json!({"sources": "a"}), "orinari.sources"),
            (json!({"sources": ["a", 3]}), "orinari.sources[1]"),
            (json!({"sources": [""]}), "orinari.sources[0]"),
            (json!({"cache": "no"}), "orinari.cache"),
        ] {
            let e = parse_extension(Some(&bad)).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{bad}");
        }
    }

    #[test]
    fn annotations_have_openai_shape() {
        let a = Annotation::url_citation(4, 7, "Setup".into(), "https://x/setup".into());
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"type": "url_citation", "url_citation": {
                "start_index": 4, "end_index": 7, "title": "Setup", "url": "https://x/setup"}})
        );
    }
}
