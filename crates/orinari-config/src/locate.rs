//! Where a refused key is in the file. Validation names the key at fault
//! (`status.checks[1].url`, `limits.requests_per_minute`); this finds it in
//! the text, so every error the file causes reads `file:line:col: why`, as
//! syntax and type errors already do. A key the file does not set (a
//! missing one, or a default that another key makes invalid) points at the
//! nearest table that is there; a key set by an environment variable, or
//! one not found at all, keeps the message as it is.

use toml::de::{DeTable, DeValue};

use crate::ConfigError;
use crate::raw::line_col;

/// `e` with the line and column of the key it names, when the file has it.
pub(crate) fn place(e: ConfigError, text: &str, name: &str, overridden: &[String]) -> ConfigError {
    let Some((key, why)) =
        e.0.strip_prefix(name)
            .and_then(|r| r.strip_prefix(": `"))
            .and_then(|r| r.split_once("`: "))
    else {
        return e;
    };
    if overridden.iter().any(|o| o == key) {
        return e;
    }
    match offset(text, key) {
        Some(at) => {
            let (line, col) = line_col(text, at);
            ConfigError(format!("{name}:{line}:{col}: `{key}`: {why}"))
        }
        None => e,
    }
}

/// One step of a key path: a table key or an array index.
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `status.checks[1].url` → `status`, `checks`, `1`, `url`.
fn steps(key: &str) -> Option<Vec<Step<'_>>> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return None;
        }
        out.push(Step::Key(name));
        while !rest.is_empty() {
            let (i, after) = rest.split_once(']')?;
            out.push(Step::Index(i.parse().ok()?));
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    Some(out)
}

/// The byte offset of `key` in `text` (of the key itself where it is set,
/// else of the nearest enclosing table the file has).
fn offset(text: &str, key: &str) -> Option<usize> {
    let steps = steps(key)?;
    let doc = DeTable::parse(text).ok()?;
    let mut table: &DeTable<'_> = doc.get_ref();
    let mut found = None;
    let mut iter = steps.iter().peekable();
    while let Some(step) = iter.next() {
        let Step::Key(k) = step else { return found };
        let Some((name, value)) = table.get_key_value(*k) else {
            return found;
        };
        found = Some(name.span().start);
        let mut value = value;
        while let Some(Step::Index(i)) = iter.peek() {
            let DeValue::Array(items) = value.get_ref() else {
                return found;
            };
            let Some(item) = items.get(*i) else {
                return found;
            };
            // An array of tables' element starts at its `[[header]]`, a
            // little before its first key: point at the header.
            found = Some(item.span().start);
            value = item;
            iter.next();
        }
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            _ => return found,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    #[test]
    fn key_paths_split_into_steps() {
        assert_eq!(
            steps("status.checks[1].url").unwrap(),
            [
                Step::Key("status"),
                Step::Key("checks"),
                Step::Index(1),
                Step::Key("url")
            ]
        );
        assert!(steps("server (connection settings)").is_none());
    }

    #[test]
    fn validation_errors_name_line_and_column() {
        let text = "[server]\nlisten = \"127.0.0.1:8080\"\n\n[limits]\n  requests_per_minute = 0\n";
        let e = crate::parse(text, "o.toml", std::iter::empty()).unwrap_err();
        assert!(
            e.0.starts_with("o.toml:5:3: `limits.requests_per_minute`:"),
            "{e}"
        );
        let text = "[status]\n\n[[status.checks]]\nname = \"a\"\nurl = \"http://x\"\n\n[[status.checks]]\nname = \"b\"\nurl = \"ftp://x\"\n";
        let e = crate::parse(text, "o.toml", std::iter::empty()).unwrap_err();
        assert!(
            e.0.starts_with("o.toml:9:1: `status.checks[1].url`:"),
            "{e}"
        );
    }

    #[test]
    fn a_key_set_by_the_environment_is_not_placed_in_the_file() {
        let text = "[limits]\nrequests_per_minute = 5\n";
        let env = [(
            "ORINARI_LIMITS_REQUESTS_PER_MINUTE".to_string(),
            "0".to_string(),
        )];
        let e = crate::parse(text, "o.toml", env).unwrap_err();
        assert!(
            e.0.starts_with("o.toml: `limits.requests_per_minute`:"),
            "{e}"
        );
    }
}
