//! `[[sources]]`: data sources for grounded answers, validated once. Each
//! kind takes only its own keys; a key of another kind is an error that
//! names it. Nothing here touches the network or the disk: a folder that
//! does not exist yet, or an auth variable that is unset, is a runtime
//! state of the source, reported by it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::ConfigError;
use crate::raw::{RawSource, RawSourceFields, defaults as d};
use crate::validate::{duration, err};

/// One validated `[[sources]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// The name models and requests refer to it by (unique).
    pub name: String,
    /// This source's own deadline (`timeout_ms`); the retrieval budget bounds it too.
    pub timeout: Duration,
    /// What it is and its kind's settings.
    pub kind: SourceKind,
}

/// The kinds of source (`kind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// `kind = "files"`: a folder indexed in the background.
    Files(FilesSource),
    /// `kind = "http"`: a JSON search API.
    Http(HttpSource),
    /// `kind = "sql"`: the operator's parameterised query.
    Sql(SqlSource),
}

impl SourceKind {
    /// The kind's name as written in the config.
    pub fn as_str(&self) -> &'static str {
        match self {
            SourceKind::Files(_) => "files",
            SourceKind::Http(_) => "http",
            SourceKind::Sql(_) => "sql",
        }
    }
}

/// `kind = "files"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesSource {
    /// The folder (Markdown, text, HTML, PDF), relative to the working directory.
    pub path: PathBuf,
    /// Upper bound of one chunk, in tokens (`chunk_tokens`).
    pub chunk_tokens: usize,
    /// Full rescan period (`rescan_interval`): heals missed file events.
    pub rescan_interval: Duration,
    /// How it is searched (`retrieval`, default `bm25`).
    pub retrieval: Retrieval,
}

/// How a files source is searched (`retrieval`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Retrieval {
    /// `bm25`: the full-text index only (the default; no model, no vectors).
    #[default]
    Bm25,
    /// `dense`: all-MiniLM-L6-v2 vectors of the chunks, nearest by cosine.
    Dense,
    /// `hybrid`: BM25 and dense lists fused by reciprocal rank.
    Hybrid,
}

impl Retrieval {
    /// The value as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Retrieval::Bm25 => "bm25",
            Retrieval::Dense => "dense",
            Retrieval::Hybrid => "hybrid",
        }
    }

    /// Whether chunks get vectors.
    pub fn dense(self) -> bool {
        self != Retrieval::Bm25
    }
}

/// `kind = "http"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSource {
    /// URL template; `{query}` appears only in its query string (URL-encoded there).
    pub url: String,
    /// JSON body template (then the request is a POST); `{query}` stands for a JSON string.
    pub body: Option<String>,
    /// Header the auth value is sent in (`auth_header`, default `Authorization`).
    pub auth_header: String,
    /// Environment variable holding that header's value (`auth_header_env`).
    pub auth_header_env: Option<String>,
    /// Where hits and their fields are in the answer.
    pub fields: FieldMap,
    /// Answers larger than this are refused (`max_response_bytes`).
    pub max_response_bytes: usize,
}

/// `kind = "sql"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlSource {
    /// `postgres://…` or `sqlite://…`.
    pub url: String,
    /// One `SELECT` (or `WITH … SELECT`) with the question as its one parameter.
    pub query: String,
    /// Column names for title, text, url and id.
    pub fields: FieldMap,
}

/// `fields = { … }`: where a hit's parts are. For `http`, each is a path into
/// the JSON (`a.b.0.c`, or a JSON pointer `/a/b/0/c`); `hits` locates the array
/// of results (empty: the answer itself). For `sql`, each is a column name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMap {
    /// The results array (`http` only).
    pub hits: String,
    /// Title.
    pub title: String,
    /// Text (the passage given to the model).
    pub text: String,
    /// Link, when there is one.
    pub url: Option<String>,
    /// Stable document id; the url or title when unset.
    pub id: Option<String>,
}

/// Validate every `[[sources]]` entry.
pub(crate) fn validate(name: &str, raw: Vec<RawSource>) -> Result<Vec<SourceConfig>, ConfigError> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("sources[{i}].{k}");
        let n = s.name.trim();
        if n.is_empty() {
            return Err(err(name, &key("name"), "must not be empty"));
        }
        if !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(err(
                name,
                &key("name"),
                format!("`{n}` may hold only letters, digits, `-`, `_` and `.`"),
            ));
        }
        if !seen.insert(n.to_string()) {
            return Err(err(
                name,
                &key("name"),
                format!("`{n}` is used by another source"),
            ));
        }
        let timeout_ms = s.timeout_ms.unwrap_or(d::SOURCE_TIMEOUT_MS);
        if timeout_ms == 0 {
            return Err(err(name, &key("timeout_ms"), "must be at least 1"));
        }
        let kind = match s.kind.as_str() {
            "files" => SourceKind::Files(files(name, i, &s)?),
            "http" => SourceKind::Http(http(name, i, &s)?),
            "sql" => SourceKind::Sql(sql(name, i, &s)?),
            other => {
                return Err(err(
                    name,
                    &key("kind"),
                    format!("`{other}` must be one of files, http, sql"),
                ));
            }
        };
        out.push(SourceConfig {
            name: n.to_string(),
            timeout: Duration::from_millis(timeout_ms),
            kind,
        });
    }
    Ok(out)
}

/// Refuse keys that belong to other kinds.
fn only(name: &str, i: usize, kind: &str, set: &[(&str, bool)]) -> Result<(), ConfigError> {
    match set.iter().find(|(_, present)| *present) {
        Some((k, _)) => Err(err(
            name,
            &format!("sources[{i}].{k}"),
            format!("does not apply to kind = \"{kind}\""),
        )),
        None => Ok(()),
    }
}

fn files(name: &str, i: usize, s: &RawSource) -> Result<FilesSource, ConfigError> {
    only(
        name,
        i,
        "files",
        &[
            ("url", s.url.is_some()),
            ("query", s.query.is_some()),
            ("body", s.body.is_some()),
            ("auth_header", s.auth_header.is_some()),
            ("auth_header_env", s.auth_header_env.is_some()),
            ("fields", s.fields.is_some()),
            ("max_response_bytes", s.max_response_bytes.is_some()),
        ],
    )?;
    let path = match s.path.as_deref().map(str::trim) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            return Err(err(
                name,
                &format!("sources[{i}].path"),
                "a files source needs the folder to index",
            ));
        }
    };
    let chunk_tokens = s.chunk_tokens.unwrap_or(d::SOURCE_CHUNK_TOKENS);
    if !(16..=8192).contains(&chunk_tokens) {
        return Err(err(
            name,
            &format!("sources[{i}].chunk_tokens"),
            format!("{chunk_tokens} must be between 16 and 8192"),
        ));
    }
    let rescan_interval = duration(
        name,
        &format!("sources[{i}].rescan_interval"),
        s.rescan_interval
            .as_deref()
            .unwrap_or(d::SOURCE_RESCAN_INTERVAL),
    )?;
    let retrieval = match s.retrieval.as_deref().map(str::trim) {
        None | Some("bm25") => Retrieval::Bm25,
        Some("dense") => Retrieval::Dense,
        Some("hybrid") => Retrieval::Hybrid,
        Some(other) => {
            return Err(err(
                name,
                &format!("sources[{i}].retrieval"),
                format!("`{other}` must be one of bm25, dense, hybrid"),
            ));
        }
    };
    Ok(FilesSource {
        path,
        chunk_tokens: chunk_tokens as usize,
        rescan_interval,
        retrieval,
    })
}

/// The placeholder the question replaces.
pub const QUERY_PLACEHOLDER: &str = "{query}";

fn http(name: &str, i: usize, s: &RawSource) -> Result<HttpSource, ConfigError> {
    let key = |k: &str| format!("sources[{i}].{k}");
    only(
        name,
        i,
        "http",
        &[
            ("path", s.path.is_some()),
            ("query", s.query.is_some()),
            ("chunk_tokens", s.chunk_tokens.is_some()),
            ("rescan_interval", s.rescan_interval.is_some()),
            ("retrieval", s.retrieval.is_some()),
        ],
    )?;
    let Some(url) = s.url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
        return Err(err(
            name,
            &key("url"),
            "an http source needs the URL to query",
        ));
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(err(
            name,
            &key("url"),
            "is not an http(s) URL (scheme://host/…)",
        ));
    };
    if !matches!(scheme, "http" | "https") {
        return Err(err(name, &key("url"), "the scheme must be http or https"));
    }
    // The question may only land in the query string: before the first `?`
    // (scheme, host, path) and after a `#` it would change where the
    // request goes or be dropped.
    let (before_query, query_and_fragment) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let fragment_holds = query_and_fragment
        .and_then(|q| q.split_once('#'))
        .is_some_and(|(_, f)| f.contains(QUERY_PLACEHOLDER));
    if before_query.contains(QUERY_PLACEHOLDER) || before_query.contains('#') || fragment_holds {
        return Err(err(
            name,
            &key("url"),
            "`{query}` may appear only in the query string (after `?`), never in the host or path",
        ));
    }
    let host = before_query.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(['{', '}', '@']) {
        return Err(err(
            name,
            &key("url"),
            "needs a plain host, without credentials (those belong in auth_header_env)",
        ));
    }
    let in_url = query_and_fragment.is_some_and(|q| q.contains(QUERY_PLACEHOLDER));
    let body = s.body.clone();
    if let Some(b) = &body {
        // `{query}` becomes a JSON string: the template must be JSON then.
        let probe = b.replace(QUERY_PLACEHOLDER, "\"question\"");
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&probe) {
            return Err(err(
                name,
                &key("body"),
                format!("is not JSON once `{{query}}` stands for a string: {e}"),
            ));
        }
    }
    let in_body = body
        .as_deref()
        .is_some_and(|b| b.contains(QUERY_PLACEHOLDER));
    if !in_url && !in_body {
        return Err(err(
            name,
            &key("url"),
            "neither the URL's query string nor `body` holds the `{query}` placeholder",
        ));
    }
    let auth_header = s
        .auth_header
        .clone()
        .unwrap_or_else(|| "Authorization".into());
    if auth_header.is_empty()
        || !auth_header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(err(
            name,
            &key("auth_header"),
            format!("`{auth_header}` is not a header name"),
        ));
    }
    if s.auth_header_env
        .as_deref()
        .is_some_and(|e| e.trim().is_empty())
    {
        return Err(err(name, &key("auth_header_env"), "must not be empty"));
    }
    let max_response_bytes = s.max_response_bytes.unwrap_or(d::SOURCE_MAX_RESPONSE_BYTES);
    if max_response_bytes == 0 {
        return Err(err(name, &key("max_response_bytes"), "must be at least 1"));
    }
    let Some(fields) = &s.fields else {
        return Err(err(
            name,
            &key("fields"),
            "an http source needs fields = { text = \"…\" } (and title, url, hits as needed)",
        ));
    };
    Ok(HttpSource {
        url: url.to_string(),
        body,
        auth_header,
        auth_header_env: s.auth_header_env.clone(),
        fields: field_map(name, i, fields, true)?,
        max_response_bytes: max_response_bytes as usize,
    })
}

fn field_map(
    name: &str,
    i: usize,
    f: &RawSourceFields,
    http: bool,
) -> Result<FieldMap, ConfigError> {
    let key = |k: &str| format!("sources[{i}].fields.{k}");
    if !http && f.hits.is_some() {
        return Err(err(name, &key("hits"), "applies only to kind = \"http\""));
    }
    let check = |k: &str, v: &Option<String>| -> Result<(), ConfigError> {
        match v {
            Some(s) if s.trim().is_empty() && k != "hits" => {
                Err(err(name, &key(k), "must not be empty"))
            }
            _ => Ok(()),
        }
    };
    check("title", &f.title)?;
    check("text", &f.text)?;
    check("url", &f.url)?;
    check("id", &f.id)?;
    Ok(FieldMap {
        hits: f.hits.clone().unwrap_or_default(),
        title: f.title.clone().unwrap_or_else(|| "title".into()),
        text: f.text.clone().unwrap_or_else(|| "text".into()),
        url: f.url.clone().or_else(|| (!http).then(|| "url".into())),
        id: f.id.clone(),
    })
}

fn sql(name: &str, i: usize, s: &RawSource) -> Result<SqlSource, ConfigError> {
    let key = |k: &str| format!("sources[{i}].{k}");
    only(
        name,
        i,
        "sql",
        &[
            ("path", s.path.is_some()),
            ("body", s.body.is_some()),
            ("auth_header", s.auth_header.is_some()),
            ("auth_header_env", s.auth_header_env.is_some()),
            ("max_response_bytes", s.max_response_bytes.is_some()),
            ("chunk_tokens", s.chunk_tokens.is_some()),
            ("rescan_interval", s.rescan_interval.is_some()),
            ("retrieval", s.retrieval.is_some()),
        ],
    )?;
    let Some(url) = s.url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
        return Err(err(
            name,
            &key("url"),
            "a sql source needs the database URL",
        ));
    };
    let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !postgres && !url.starts_with("sqlite:") {
        return Err(err(
            name,
            &key("url"),
            "must be postgres://… or sqlite://… (the value is not shown: it may hold a password)",
        ));
    }
    let Some(query) = s.query.as_deref() else {
        return Err(err(
            name,
            &key("query"),
            "a sql source needs its SELECT query",
        ));
    };
    check_select(query, postgres).map_err(|why| err(name, &key("query"), why))?;
    let fields = match &s.fields {
        Some(f) => field_map(name, i, f, false)?,
        None => FieldMap {
            hits: String::new(),
            title: "title".into(),
            text: "text".into(),
            url: Some("url".into()),
            id: None,
        },
    };
    Ok(SqlSource {
        url: url.to_string(),
        query: query.to_string(),
        fields,
    })
}

/// The query with comments removed and string literals, quoted identifiers
/// and dollar-quoted bodies blanked, so that keywords, `;` and parameters
/// are seen only where they are SQL.
fn sql_skeleton(q: &str) -> Result<String, String> {
    let b = q.as_bytes();
    let mut out = String::with_capacity(q.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            out.push(' ');
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let end = q[i + 2..]
                .find("*/")
                .ok_or("has an unterminated /* comment")?;
            i += end + 4;
            out.push(' ');
        } else if c == b'\'' || c == b'"' || c == b'`' {
            // Doubled quotes inside continue the literal.
            let mut j = i + 1;
            loop {
                match b.get(j) {
                    None => return Err("has an unterminated quoted string".into()),
                    Some(&x) if x == c && b.get(j + 1) == Some(&c) => j += 2,
                    Some(&x) if x == c => break,
                    Some(_) => j += 1,
                }
            }
            i = j + 1;
            out.push_str(if c == b'\'' { " '' " } else { " x " });
        } else if c == b'$'
            && b.get(i + 1)
                .is_some_and(|x| *x == b'$' || x.is_ascii_alphabetic())
        {
            // Dollar quoting: $tag$ … $tag$.
            let close = q[i + 1..].find('$').map(|p| i + 1 + p);
            let Some(close) = close else {
                out.push('$');
                i += 1;
                continue;
            };
            let tag = &q[i..=close];
            if !tag[1..tag.len() - 1]
                .bytes()
                .all(|x| x.is_ascii_alphanumeric() || x == b'_')
            {
                out.push('$');
                i += 1;
                continue;
            }
            let end = q[close + 1..]
                .find(tag)
                .ok_or("has an unterminated dollar-quoted string")?;
            i = close + 1 + end + tag.len();
            out.push_str(" '' ");
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    Ok(out)
}

/// One `SELECT` or `WITH` statement that reads the question as its
/// parameter. The read-only transaction is what makes writing impossible;
/// this check catches the mistake early and says so.
pub fn check_select(query: &str, postgres: bool) -> Result<(), String> {
    if query.contains('\0') {
        return Err("holds a NUL byte".into());
    }
    let skeleton = sql_skeleton(query)?;
    let body = skeleton.trim().trim_end_matches(';').trim_end();
    if body.contains(';') {
        return Err("must be a single statement (it holds a `;` between statements)".into());
    }
    let first = body
        .split(|c: char| !c.is_ascii_alphabetic())
        .find(|w| !w.is_empty())
        .unwrap_or("")
        .to_ascii_uppercase();
    if first != "SELECT" && first != "WITH" {
        return Err(format!(
            "must be a SELECT (or WITH … SELECT) query, not `{}`",
            if first.is_empty() { "nothing" } else { &first }
        ));
    }
    let words: Vec<String> = body
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map(str::to_ascii_uppercase)
        .collect();
    for banned in [
        "INSERT", "UPDATE", "DELETE", "MERGE", "DROP", "ALTER", "CREATE", "TRUNCATE", "GRANT",
        "REVOKE", "COPY", "ATTACH", "DETACH", "PRAGMA", "VACUUM", "REINDEX", "CALL", "DO",
    ] {
        if words.iter().any(|w| w == banned) {
            return Err(format!(
                "must only read: `{banned}` is not allowed (it runs in a read-only transaction anyway)"
            ));
        }
    }
    let has_dollar_one = body
        .match_indices("$1")
        .any(|(p, _)| !body[p + 2..].starts_with(|c: char| c.is_ascii_digit()));
    let has_param = if postgres {
        has_dollar_one
    } else {
        has_dollar_one || body.contains('?')
    };
    if !has_param {
        return Err(format!(
            "must read the question as a parameter ({}), never spliced into the text",
            if postgres { "`$1`" } else { "`?` or `$1`" }
        ));
    }
    if postgres
        && body
            .match_indices('$')
            .any(|(p, _)| body[p + 1..].starts_with(|c: char| ('2'..='9').contains(&c)))
    {
        return Err("takes one parameter, `$1` (the question)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Vec<SourceConfig>, ConfigError> {
        crate::parse(body, "t.toml", []).map(|c| c.sources)
    }

    #[test]
    fn each_kind_is_validated_into_its_settings() {
        let s = parse(
            r#"
[[sources]]
name = "handbook"
kind = "files"
path = "docs/"

[[sources]]
name = "wiki"
kind = "http"
url = "https://wiki.internal/s?q={query}&n=5"
auth_header_env = "WIKI_TOKEN"
fields = { hits = "results", text = "excerpt", url = "link" }

[[sources]]
name = "kb"
kind = "sql"
url = "sqlite://kb.db"
timeout_ms = 250
query = "SELECT title, body AS text FROM docs WHERE body LIKE '%' || ? || '%'"
"#,
        )
        .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].timeout, Duration::from_millis(d::SOURCE_TIMEOUT_MS));
        assert_eq!(
            s[0].kind,
            SourceKind::Files(FilesSource {
                path: PathBuf::from("docs/"),
                chunk_tokens: 256,
                rescan_interval: Duration::from_secs(30),
                retrieval: Retrieval::Bm25,
            })
        );
        let SourceKind::Http(h) = &s[1].kind else {
            panic!("{:?}", s[1].kind)
        };
        assert_eq!(h.auth_header, "Authorization");
        assert_eq!(h.fields.title, "title");
        assert_eq!(h.fields.url.as_deref(), Some("link"));
        assert_eq!(h.max_response_bytes, 1_048_576);
        let SourceKind::Sql(q) = &s[2].kind else {
            panic!("{:?}", s[2].kind)
        };
        assert_eq!(q.fields.url.as_deref(), Some("url"));
        assert_eq!(s[2].timeout, Duration::from_millis(250));
    }

    #[test]
    fn mistakes_name_the_key() {
        for (body, key) in [
            (
                "name = \"a\"\nkind = \"files\"\npath = \"d\"\nquery = \"x\"",
                "sources[0].query",
            ),
            ("name = \"a\"\nkind = \"files\"", "sources[0].path"),
            (
                "name = \"a\"\nkind = \"files\"\npath = \"d\"\nchunk_tokens = 4",
                "sources[0].chunk_tokens",
            ),
            (
                "name = \"a\"\nkind = \"files\"\npath = \"d\"\ntimeout_ms = 0",
                "sources[0].timeout_ms",
            ),
            (
                "name = \"a\"\nkind = \"files\"\npath = \"d\"\nretrieval = \"vector\"",
                "sources[0].retrieval",
            ),
            (
                "name = \"a\"\nkind = \"sql\"\nurl = \"sqlite://x.db\"\nquery = \"SELECT ?\"\nretrieval = \"dense\"",
                "sources[0].retrieval",
            ),
            (
                "name = \"a b\"\nkind = \"files\"\npath = \"d\"",
                "sources[0].name",
            ),
            (
                "name = \"a\"\nkind = \"http\"\nurl = \"http://h/?q={query}\"",
                "sources[0].fields",
            ),
            (
                "name = \"a\"\nkind = \"http\"\nurl = \"http://u:p@h/?q={query}\"\nfields = { text = \"t\" }",
                "sources[0].url",
            ),
            (
                "name = \"a\"\nkind = \"sql\"\nurl = \"mysql://h/db\"\nquery = \"SELECT 1 WHERE ? = ''\"",
                "sources[0].url",
            ),
            (
                "name = \"a\"\nkind = \"sql\"\nurl = \"sqlite://x.db\"",
                "sources[0].query",
            ),
            (
                "name = \"a\"\nkind = \"sql\"\nurl = \"sqlite://x.db\"\nquery = \"SELECT ?\"\nfields = { hits = \"x\" }",
                "sources[0].fields.hits",
            ),
        ] {
            let e = parse(&format!("[[sources]]\n{body}\n")).unwrap_err();
            assert!(e.0.contains(&format!("`{key}`")), "{body}: {e}");
        }
        let e = parse("[[sources]]\nname = \"a\"\nkind = \"files\"\npath = \"d\"\n[[sources]]\nname = \"a\"\nkind = \"files\"\npath = \"e\"\n")
            .unwrap_err();
        assert!(e.0.contains("`sources[1].name`"), "{e}");
    }

    #[test]
    fn selects_pass() {
        for q in [
            "SELECT title, body AS text, link AS url FROM docs WHERE body LIKE '%' || $1 || '%'",
            "with m as (select * from docs where to_tsvector(body) @@ plainto_tsquery($1)) select * from m;",
            "SELECT 'a;b' AS title, $1 AS text -- trailing; comment",
            "SELECT $$x;y$$ AS title, $1 AS text",
        ] {
            assert_eq!(check_select(q, true), Ok(()), "{q}");
        }
        assert_eq!(
            check_select("SELECT title FROM d WHERE t MATCH ?", false),
            Ok(())
        );
    }

    #[test]
    fn everything_else_is_refused() {
        for (q, why) in [
            ("DELETE FROM docs WHERE $1 = ''", "must be a SELECT"),
            ("SELECT $1; DROP TABLE docs", "single statement"),
            ("SELECT * FROM docs WHERE t = $1 /* x", "unterminated"),
            ("SELECT * FROM docs", "parameter"),
            ("SELECT * FROM docs WHERE t = '$1'", "parameter"),
            (
                "WITH d AS (DELETE FROM docs RETURNING *) SELECT * FROM d WHERE $1 = ''",
                "DELETE",
            ),
            (
                "SELECT * FROM docs WHERE a = $1 AND b = $2",
                "one parameter",
            ),
            ("", "must be a SELECT"),
        ] {
            let e = check_select(q, true).unwrap_err();
            assert!(e.contains(why), "{q}: {e}");
        }
    }
}
