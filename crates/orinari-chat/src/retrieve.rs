//! Step 4 of [`Chat::answer`](crate::Chat::answer): retrieval for a
//! grounded model (a `[[models]]` entry with `sources`). The sources the
//! answer may search are the model's, narrowed by the request's
//! `orinari.sources` (`[]` turns retrieval off) and by what the caller may
//! search; the last user message is the query. Every source is asked at
//! once under `[retrieval] budget_ms` (`orinari-sources`' fan-out: a slow
//! source costs at most the budget), the results fused, packed into what
//! the model's window leaves, and screened by the guard as indirect
//! injection: with `block` a flagged passage is dropped, with `flag` it is
//! kept, fenced and marked `flagged="true"`; every passage is fenced as
//! data (`orinari_guard::retrieved`) in one system message, numbered
//! `[1]`…`[n]` for citations. The query and the passages are never logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use orinari_api::grounded::{Grounding, RetrievalReport, SourceRef};
use orinari_api::{ApiError, ChatMessage, Role};
use orinari_config::PromptInjection;
use orinari_limits::Caller;
use orinari_sources::{Sources, approximate_tokens, pack};
use orinari_telemetry::guard::GuardMetrics;
use orinari_telemetry::retrieval::RetrievalMetrics;

use crate::ChatRequest;
use crate::screen::Screening;

/// Passages asked of each source.
pub const HITS_PER_SOURCE: usize = 8;

/// The most tokens of passages one answer is given, whatever the window
/// leaves: the embedded model prefills about a thousand tokens a second
/// on two cores, and a few good passages beat many weak ones.
pub const MAX_PASSAGE_TOKENS: usize = 1024;

/// Tokens of fence and numbering around each passage.
const PASSAGE_OVERHEAD: usize = 24;

/// Characters of a passage shown as its `snippet`.
const SNIPPET_CHARS: usize = 240;

/// What the model is told about the passages, after the guard's preamble.
const INSTRUCTIONS: &str = "Answer the user's last message from the numbered passages below \
when they help. Cite each passage you use with its number in square brackets, like [1], right \
after the sentence it supports. Cite only these numbers. If the passages do not answer the \
question, say so.";

/// Retrieval for one configuration: the sources, the budget and which
/// models are grounded. Cheap to clone.
#[derive(Clone)]
pub struct Retrieval {
    sources: Sources,
    budget: Duration,
    grounded: Arc<HashMap<String, Arc<[String]>>>,
    metrics: RetrievalMetrics,
}

impl Retrieval {
    /// Retrieval over `sources` within `budget`; `grounded` lists each
    /// grounded model with its source names (models not listed, or listed
    /// with none, are not grounded).
    pub fn new(
        sources: Sources,
        budget: Duration,
        grounded: impl IntoIterator<Item = (String, Vec<String>)>,
        metrics: RetrievalMetrics,
    ) -> Self {
        let grounded = grounded
            .into_iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(m, s)| (m, Arc::from(s)))
            .collect();
        Self {
            sources,
            budget,
            grounded: Arc::new(grounded),
            metrics,
        }
    }

    /// The sources.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// The whole retrieval's deadline.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// The sources of a grounded model.
    pub fn model_sources(&self, model: &str) -> Option<&[String]> {
        self.grounded.get(model).map(|s| &s[..])
    }
}

/// What retrieval adds to an answer.
pub(crate) struct Grounded {
    /// The passages as one system message (`None` when there are none).
    pub(crate) message: Option<ChatMessage>,
    /// `sources` and `retrieval` for the response.
    pub(crate) grounding: Grounding,
    /// Title and link of each numbered passage (for the citations).
    pub(crate) refs: Vec<(String, Option<String>)>,
}

/// The sources this answer may search, or why the request is refused.
/// Empty: no retrieval.
pub(crate) fn choose(
    retrieval: Option<&Retrieval>,
    model: &str,
    caller: &Caller,
    asked: Option<&[String]>,
) -> Result<Vec<String>, ApiError> {
    let own = retrieval
        .and_then(|r| r.model_sources(model))
        .unwrap_or(&[]);
    let Some(asked) = asked else {
        return Ok(own
            .iter()
            .filter(|s| caller.may_search(s))
            .cloned()
            .collect());
    };
    for (i, name) in asked.iter().enumerate() {
        let param = format!("orinari.sources[{i}]");
        if !own.contains(name) {
            let list = if own.is_empty() {
                "none".to_string()
            } else {
                own.join(", ")
            };
            return Err(ApiError::invalid(
                param,
                format!("`{name}` is not a source of the model `{model}` (its sources: {list})."),
            )
            .with_code("unknown_source"));
        }
        if !caller.may_search(name) {
            return Err(ApiError::forbidden(
                format!("This API key may not search the source `{name}`."),
                "source_not_allowed",
            )
            .with_param(param));
        }
    }
    Ok(asked.to_vec())
}

/// Search `names` for the request's last user message and build what the
/// model gets. `room`: tokens the model's window leaves for passages.
pub(crate) async fn retrieve(
    retrieval: &Retrieval,
    names: &[String],
    request: &ChatRequest,
    room: usize,
    screening: Option<(&Screening, PromptInjection)>,
    guard_metrics: &GuardMetrics,
) -> Grounded {
    let query = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map_or("", |m| m.content.as_str());
    let found = retrieval
        .sources
        .retrieve(names, query, HITS_PER_SOURCE, retrieval.budget)
        .await;
    let report: Vec<RetrievalReport> = found
        .outcomes
        .iter()
        .map(|o| {
            retrieval
                .metrics
                .record(&o.source, o.outcome.as_str(), o.latency.as_secs_f64());
            RetrievalReport {
                source: o.source.to_string(),
                outcome: o.outcome.as_str(),
                hits: o.hits,
                latency_ms: u64::try_from(o.latency.as_millis()).unwrap_or(u64::MAX),
            }
        })
        .collect();
    let best = found
        .hits
        .first()
        .map_or(1.0, |h| h.score)
        .max(f64::MIN_POSITIVE);
    let budget = room.min(MAX_PASSAGE_TOKENS);
    let packed = pack(&found.hits, budget, PASSAGE_OVERHEAD, &approximate_tokens);

    let mut blocks = Vec::with_capacity(packed.len());
    let mut sources = Vec::with_capacity(packed.len());
    let mut refs = Vec::with_capacity(packed.len());
    let bodies: Vec<(String, String)> = packed
        .iter()
        .map(|p| {
            let Some(ranked) = found.hits.get(p.index) else {
                return (String::new(), String::new());
            };
            let hit = &ranked.hit;
            let body = if hit.locator.is_empty() || hit.locator == hit.title {
                format!("Title: {}\n\n{}", hit.title, p.text)
            } else {
                format!("Title: {} ({})\n\n{}", hit.title, hit.locator, p.text)
            };
            (ranked.source.to_string(), body)
        })
        .collect();
    // Every passage screened at once, off the async workers when the guard
    // runs its sentence encoder (milliseconds per passage).
    let mut screened: Vec<Option<orinari_guard::Retrieved>> = match screening {
        Some((s, action)) if action != PromptInjection::Off => {
            let (s, texts) = (s.clone(), bodies.clone());
            let run = move || -> Vec<Option<orinari_guard::Retrieved>> {
                texts
                    .iter()
                    .map(|(source, body)| Some(s.guard().screen_retrieved(source, body)))
                    .collect()
            };
            if screening.is_some_and(|(s, _)| s.guard().has_encoder()) {
                tokio::task::spawn_blocking(run)
                    .await
                    // A screening that failed keeps no passage unscreened.
                    .unwrap_or_default()
            } else {
                run()
            }
        }
        _ => Vec::new(),
    };
    screened.resize_with(bodies.len(), || None);
    for ((p, (_, body)), screened) in packed.iter().zip(bodies).zip(screened) {
        let Some(ranked) = found.hits.get(p.index) else {
            continue;
        };
        let hit = &ranked.hit;
        let (flagged, delimited) = match screening {
            Some((_, action)) if action != PromptInjection::Off => {
                // Not screened (the screening itself failed): dropped.
                let Some(screened) = screened else { continue };
                guard_metrics.score("retrieved", screened.verdict.score);
                match (screened.verdict.rule, action) {
                    (Some(rule), PromptInjection::Block) => {
                        guard_metrics.record(rule, "drop_retrieved");
                        tracing::info!(source = %ranked.source, rule, "retrieved passage dropped");
                        continue;
                    }
                    (Some(rule), _) => {
                        guard_metrics.record(rule, "flag_retrieved");
                        tracing::info!(source = %ranked.source, rule, "retrieved passage flagged");
                        (true, screened.delimited)
                    }
                    (None, _) => (false, screened.delimited),
                }
            }
            _ => (
                false,
                orinari_guard::retrieved::delimit(&ranked.source, &body, false),
            ),
        };
        let index = sources.len() + 1;
        blocks.push(format!("[{index}]\n{delimited}"));
        refs.push((hit.title.clone(), hit.url.clone()));
        sources.push(SourceRef {
            index,
            source: ranked.source.to_string(),
            document: hit.document.clone(),
            title: hit.title.clone(),
            url: hit.url.clone(),
            snippet: snippet(&p.text),
            score: ((ranked.score / best) * 1000.0).round() / 1000.0,
            flagged,
        });
    }
    let message = (!blocks.is_empty()).then(|| {
        ChatMessage::text(
            Role::System,
            format!(
                "{}\n{INSTRUCTIONS}\n\n{}",
                orinari_guard::PREAMBLE,
                blocks.join("\n\n")
            ),
        )
    });
    Grounded {
        message,
        grounding: Grounding {
            sources,
            retrieval: report,
        },
        refs,
    }
}

/// The start of a passage, cut at a word boundary.
fn snippet(text: &str) -> String {
    let text = text.trim();
    if text.chars().count() <= SNIPPET_CHARS {
        return text.to_string();
    }
    let cut: String = text.chars().take(SNIPPET_CHARS).collect();
    let cut = match cut.rfind(char::is_whitespace) {
        Some(i) if i > SNIPPET_CHARS / 2 => &cut[..i],
        _ => &cut,
    };
    format!("{} …", cut.trim_end())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    fn retrieval() -> Retrieval {
        Retrieval::new(
            Sources::default(),
            Duration::from_millis(100),
            [
                (
                    "docs".to_string(),
                    vec!["handbook".to_string(), "wiki".to_string()],
                ),
                ("plain".to_string(), Vec::new()),
            ],
            RetrievalMetrics::default(),
        )
    }

    fn caller(allowed: Option<&[&str]>) -> Caller {
        let limits = orinari_config::admission::AdmissionConfig::default().limits;
        let mut c = Caller::anonymous("ip:test".into(), &limits);
        c.allowed_sources = allowed.map(|a| a.iter().map(|s| s.to_string()).collect());
        c
    }

    #[test]
    fn the_model_the_request_and_the_caller_choose_the_sources() {
        let r = retrieval();
        let all = caller(None);
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            choose(Some(&r), "docs", &all, None).unwrap(),
            names(&["handbook", "wiki"])
        );
        assert!(choose(Some(&r), "plain", &all, None).unwrap().is_empty());
        assert!(choose(None, "docs", &all, None).unwrap().is_empty());
        let wiki = names(&["wiki"]);
        assert_eq!(choose(Some(&r), "docs", &all, Some(&wiki)).unwrap(), wiki);
        assert!(
            choose(Some(&r), "docs", &all, Some(&[]))
                .unwrap()
                .is_empty()
        );
        let e = choose(Some(&r), "plain", &all, Some(&wiki)).unwrap_err();
        assert_eq!(
            (e.status, e.param.as_deref()),
            (400, Some("orinari.sources[0]"))
        );
        // A caller limited to some sources searches only those, and is
        // refused (403) when it names another.
        let limited = caller(Some(&["wiki"]));
        assert_eq!(choose(Some(&r), "docs", &limited, None).unwrap(), wiki);
        let handbook = names(&["handbook"]);
        let e = choose(Some(&r), "docs", &limited, Some(&handbook)).unwrap_err();
        assert_eq!((e.status, e.code), (403, Some("source_not_allowed")));
        assert_eq!(e.param.as_deref(), Some("orinari.sources[0]"));
    }

    #[test]
    fn snippets_are_cut_at_words() {
        assert_eq!(snippet("  short text "), "short text");
        let long = "word ".repeat(100);
        let s = snippet(&long);
        assert!(
            s.ends_with(" …") && s.chars().count() <= SNIPPET_CHARS + 2,
            "{s}"
        );
        assert!(!s.contains("wor …"));
    }
}
