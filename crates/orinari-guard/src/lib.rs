//! Prompt-injection screening for ORINARI. A text is normalized
//! (`normalize.rs`), checked against named rules (`rules.rs`), and scored by a
//! small trained classifier (`model.rs` over `features.rs`; trained by
//! `train.rs`). Retrieved text is screened and delimited (`retrieved.rs`).
//! Pure computation: this crate never touches the network or the disk.

pub mod features;
pub mod model;
pub mod normalize;
pub mod retrieved;
pub mod rules;
pub mod train;

pub use model::Model;
pub use normalize::{Normalized, normalize};
pub use retrieved::{PREAMBLE, Retrieved};

use rules::Rules;

/// The committed classifier weights (see `bench/guard/train.sh`).
const EMBEDDED_MODEL: &[u8] = include_bytes!("../model/prompt-injection.bin");

/// Texts longer than this many characters are scored in overlapping windows
/// (the classifier was trained on prompts; one injected sentence must not be
/// diluted by a long benign text around it).
const WINDOW_CHARS: usize = 600;

/// The rule label used when the classifier, not a named rule, decides.
pub const CLASSIFIER_RULE: &str = "classifier";

/// This crate's one error type.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The classifier's weights could not be read.
    #[error("guard model: {0}")]
    Model(String),
    /// A rule failed to compile.
    #[error("guard rule: {0}")]
    Rule(String),
}

/// What the guard concluded about one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Whether the text is a prompt-injection attempt.
    pub attack: bool,
    /// The rule that decided (a rule name or [`CLASSIFIER_RULE`]), when `attack`.
    pub rule: Option<&'static str>,
    /// The classifier's attack probability (highest over windows).
    pub score: f32,
}

/// The screening engine: rules plus classifier. Build once, share freely.
#[derive(Debug, Clone)]
pub struct Guard {
    rules: Rules,
    model: Model,
}

impl Guard {
    /// The guard with the committed classifier.
    pub fn new() -> Result<Self, GuardError> {
        Self::with_model(Model::from_bytes(EMBEDDED_MODEL)?)
    }

    /// The guard with another classifier (training and evaluation).
    pub fn with_model(model: Model) -> Result<Self, GuardError> {
        Ok(Self {
            rules: Rules::new()?,
            model,
        })
    }

    /// The classifier.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Every `rule` label a verdict can carry.
    pub fn rule_names() -> impl Iterator<Item = &'static str> {
        Rules::names().chain(std::iter::once(CLASSIFIER_RULE))
    }

    /// Screen one text (a user message or retrieved text).
    pub fn screen(&self, text: &str) -> Verdict {
        let normalized = normalize(text);
        let score = self.score_normalized(&normalized.text);
        let rule = self
            .rules
            .first_match(&normalized.text)
            .or_else(|| (score >= self.model.threshold).then_some(CLASSIFIER_RULE));
        Verdict {
            attack: rule.is_some(),
            rule,
            score,
        }
    }

    /// The classifier's score over windows of a normalized text.
    fn score_normalized(&self, text: &str) -> f32 {
        let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        if bounds.len() <= WINDOW_CHARS {
            return self.model.probability(text);
        }
        let step = WINDOW_CHARS / 2;
        let mut best = 0.0f32;
        let mut start = 0;
        while start < bounds.len() {
            let end = bounds
                .get(start + WINDOW_CHARS)
                .copied()
                .unwrap_or(text.len());
            best = best.max(self.model.probability(&text[bounds[start]..end]));
            if start + WINDOW_CHARS >= bounds.len() {
                break;
            }
            start += step;
        }
        best
    }
}
