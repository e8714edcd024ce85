//! `kind = "http"`: a JSON search API the operator runs or subscribes to.
//! The question goes only where the template's `{query}` stands: URL-encoded
//! into the query string, or as one JSON string in the body. It can never
//! change the scheme, host or path (the config refuses a placeholder
//! there, and each built URL's host is checked again). Redirects are
//! followed only within the same host; answers are read up to
//! `max_response_bytes` and refused beyond.

use std::time::Instant;

use async_trait::async_trait;
use orinari_config::sources::{FieldMap, HttpSource, QUERY_PLACEHOLDER};
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;

use crate::SourceStatus;
use crate::connector::{Connector, Hit, SourceError};

/// An HTTP JSON source.
pub(crate) struct HttpConnector {
    client: reqwest::Client,
    cfg: HttpSource,
    host: String,
    auth: Option<(HeaderName, HeaderValue)>,
}

impl HttpConnector {
    /// Build the client; `env` supplies `auth_header_env`'s value.
    pub fn new(cfg: &HttpSource, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let probe = cfg.url.replace(QUERY_PLACEHOLDER, "q");
        let parsed =
            reqwest::Url::parse(&probe).map_err(|e| format!("the url does not parse: {e}"))?;
        let host = parsed.host_str().ok_or("the url has no host")?.to_string();
        let auth = match &cfg.auth_header_env {
            None => None,
            Some(var) => {
                let value = env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                    format!("the environment variable {var} (auth_header_env) is not set")
                })?;
                let mut value = HeaderValue::from_str(&value)
                    .map_err(|_| format!("{var} does not hold a valid header value"))?;
                value.set_sensitive(true);
                let name = HeaderName::from_bytes(cfg.auth_header.as_bytes())
                    .map_err(|_| format!("`{}` is not a header name", cfg.auth_header))?;
                Some((name, value))
            }
        };
        let same_host = host.clone();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() < 5
                    && attempt.url().host_str() == Some(same_host.as_str())
                {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(HttpConnector {
            client,
            cfg: cfg.clone(),
            host,
            auth,
        })
    }

    fn request(&self, query: &str) -> Result<reqwest::RequestBuilder, SourceError> {
        let encoded: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
        let url = reqwest::Url::parse(&self.cfg.url.replace(QUERY_PLACEHOLDER, &encoded))
            .map_err(|_| SourceError::Failed("the question made the URL invalid".into()))?;
        if url.host_str() != Some(self.host.as_str()) {
            return Err(SourceError::Failed(
                "the URL's host would change; refused".into(),
            ));
        }
        let mut req = match &self.cfg.body {
            Some(body) => {
                let json = serde_json::to_string(query)
                    .map_err(|_| SourceError::Failed("the question could not be encoded".into()))?;
                self.client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.replace(QUERY_PLACEHOLDER, &json))
            }
            None => self.client.get(url),
        };
        req = req.header(reqwest::header::ACCEPT, "application/json");
        if let Some((name, value)) = &self.auth {
            req = req.header(name.clone(), value.clone());
        }
        Ok(req)
    }
}

#[async_trait]
impl Connector for HttpConnector {
    async fn search(
        &self,
        query: &str,
        k: usize,
        deadline: Instant,
    ) -> Result<Vec<Hit>, SourceError> {
        let left = deadline.saturating_duration_since(Instant::now());
        // Errors drop the URL: it holds the question.
        let fail = |e: reqwest::Error| {
            if e.is_timeout() {
                SourceError::Timeout
            } else {
                SourceError::Failed(e.without_url().to_string())
            }
        };
        let mut resp = self
            .request(query)?
            .timeout(left)
            .send()
            .await
            .map_err(fail)?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(SourceError::Failed(format!(
                "answered {status}, a redirect to another host (not followed)"
            )));
        }
        if !status.is_success() {
            return Err(SourceError::Failed(format!("answered {status}")));
        }
        let max = self.cfg.max_response_bytes;
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(SourceError::Failed(format!(
                "the answer is larger than {max} bytes"
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(fail)? {
            if body.len() + chunk.len() > max {
                return Err(SourceError::Failed(format!(
                    "the answer is larger than {max} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let json: Value = serde_json::from_slice(&body)
            .map_err(|e| SourceError::Failed(format!("the answer is not JSON: {e}")))?;
        map_hits(&json, &self.cfg.fields, k)
    }

    fn status(&self) -> SourceStatus {
        SourceStatus {
            kind: "http",
            ..SourceStatus::default()
        }
    }
}

/// The hits the field map finds in `json`, best first as the API ranked them.
pub(crate) fn map_hits(json: &Value, fields: &FieldMap, k: usize) -> Result<Vec<Hit>, SourceError> {
    let list = lookup(json, &fields.hits)
        .and_then(Value::as_array)
        .ok_or_else(|| {
            SourceError::Failed(if fields.hits.is_empty() {
                "the answer is not an array (set fields.hits to where the results are)".into()
            } else {
                format!("no array at `{}` in the answer", fields.hits)
            })
        })?;
    let n = list.len().max(1) as f32;
    let mut hits = Vec::new();
    for (rank, item) in list.iter().enumerate() {
        if hits.len() == k {
            break;
        }
        let text = field_text(item, &fields.text);
        if text.trim().is_empty() {
            continue;
        }
        let title = field_text(item, &fields.title);
        let url = fields
            .url
            .as_deref()
            .map(|p| field_text(item, p))
            .filter(|u| !u.is_empty());
        let document = match fields.id.as_deref().map(|p| field_text(item, p)) {
            Some(id) if !id.is_empty() => id,
            _ => url.clone().unwrap_or_else(|| {
                if title.is_empty() {
                    format!("#{}", rank + 1)
                } else {
                    title.clone()
                }
            }),
        };
        hits.push(Hit {
            document,
            title,
            locator: String::new(),
            url,
            text,
            // The API's order is its ranking.
            score: 1.0 - rank as f32 / n,
        });
    }
    Ok(hits)
}

/// A value by dotted path (`data.items.0`) or JSON pointer (`/data/items/0`).
pub(crate) fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(v);
    }
    if path.starts_with('/') {
        return v.pointer(path);
    }
    path.split('.').try_fold(v, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// A field as text: strings as they are, numbers and booleans written out,
/// arrays of them joined by spaces.
fn field_text(item: &Value, path: &str) -> String {
    match lookup(item, path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| match x {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(hits: &str) -> FieldMap {
        FieldMap {
            hits: hits.into(),
            title: "name".into(),
            text: "snippet.body".into(),
            url: Some("/links/0".into()),
            id: None,
        }
    }

    #[test]
    fn paths_and_pointers_find_fields() {
        let v = json!({"data": {"items": [{"a": 1}, {"a": [2, "x"]}]}});
        assert_eq!(lookup(&v, "data.items.1.a.1"), Some(&json!("x")));
        assert_eq!(lookup(&v, "/data/items/0/a"), Some(&json!(1)));
        assert_eq!(lookup(&v, "data.nope"), None);
        assert_eq!(lookup(&v, ""), Some(&v));
    }

    #[test]
    fn hits_are_mapped_in_the_apis_order() {
        let v = json!({"results": [
            {"name": "One", "snippet": {"body": "first"}, "links": ["https://a/1"]},
            {"name": "Empty", "snippet": {"body": "  "}},
            {"name": "Two", "snippet": {"body": ["sec", "ond"]}},
        ]});
        let hits = map_hits(&v, &fields("results"), 10).unwrap();
        assert_eq!(hits.len(), 2, "a hit with no text is skipped");
        assert_eq!(hits[0].document, "https://a/1");
        assert_eq!(hits[0].url.as_deref(), Some("https://a/1"));
        assert_eq!(
            (hits[1].title.as_str(), hits[1].text.as_str()),
            ("Two", "sec ond")
        );
        assert_eq!(hits[1].document, "Two");
        assert!(hits[0].score > hits[1].score);
        assert_eq!(map_hits(&v, &fields("results"), 1).unwrap().len(), 1);
        let e = map_hits(&v, &fields("items"), 10).unwrap_err();
        assert!(e.to_string().contains("`items`"), "{e}");
    }
}
