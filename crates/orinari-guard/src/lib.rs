//! Prompt-injection screening for ORINARI. A text is normalized
//! (`normalize.rs`), checked against named rules (`rules.rs`), read as
//! word-for-word English when it is German, French, Spanish, Italian or
//! Portuguese (`crosslingual.rs`), and scored
//! by two trained classifiers combined (`learned.rs`'s [`Ensemble`]): a
//! hashed n-gram logistic regression (`model.rs` over `features.rs`,
//! trained by `train.rs`) and, when the caller hands in a
//! [`SentenceEncoder`] (all-MiniLM-L6-v2 through `orinari-embed`), a head
//! over the text's sentence vector. The encoder runs only on texts whose
//! n-gram probability lies in a [`learned::Band`] fitted on validation
//! data (a cascade: the n-gram model costs microseconds, the encoder
//! milliseconds), and then on one window. Each [`Channel`] — user
//! messages, tool results, retrieved text — has a threshold and a band of
//! its own (a tool result or passage under [`SHORT_RESULT_CHARS`] is held
//! to the user channel's); retrieved text is also delimited
//! (`retrieved.rs`). Without an encoder the guard decides on the n-gram
//! model alone, with thresholds fitted for that case.
//! Pure computation: this crate never touches the network or the disk.

pub mod crosslingual;
pub mod features;
pub mod learned;
pub mod model;
pub mod normalize;
pub mod retrieved;
pub mod rules;
pub mod train;

use std::sync::Arc;

pub use crosslingual::Language;
pub use learned::{Band, Channel, Ensemble, Place, SentenceEncoder};
pub use model::Model;
pub use normalize::{Normalized, normalize};
pub use retrieved::{PREAMBLE, Retrieved};

use rules::Rules;

/// The committed n-gram classifier's weights (see `bench/guard/train.sh`).
const EMBEDDED_MODEL: &[u8] = include_bytes!("../model/prompt-injection.bin");
/// The committed head, stacker and per-channel thresholds (same script).
const EMBEDDED_ENSEMBLE: &[u8] = include_bytes!("../model/ensemble.bin");

/// Texts longer than this many characters are scored in overlapping windows
/// (the classifiers were trained on prompts; one injected sentence must not
/// be diluted by a long benign text around it).
pub const WINDOW_CHARS: usize = 600;

/// At most this many windows of a long text go through the encoder: the
/// one the n-gram model finds most suspicious. Bounds the encoder's cost
/// per message (a window is ≤ 600 characters, about 150 tokens; the
/// encoder cuts at 256).
pub const MAX_ENCODED_WINDOWS: usize = 1;

/// A tool result or retrieved passage shorter than this many characters
/// is judged at the user channel's threshold and band. The tool and
/// retrieved thresholds are lower than the user's because they were fitted
/// on attacks inside documents (a search result, an e-mail, a web page, a
/// handbook section), where benign text around an attack dilutes its score.
/// A short result has nothing around it: `{"ok": true}`, "Deployment
/// complete: version 2.3.1 is live.". It is as bare as a user message and
/// is held to the threshold fitted on bare messages. Every tool-output
/// attack of the held-out bastion set is longer (87 characters and up).
pub const SHORT_RESULT_CHARS: usize = 80;

/// The rule label used when the classifiers, not a named rule, decide.
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
    /// The classifiers' attack probability: the ensemble's when the encoder
    /// ran, else the n-gram model's (highest over windows).
    pub score: f32,
    /// The channel the text arrived on (a short tool result or retrieved
    /// passage is held to the user channel's threshold: see
    /// [`SHORT_RESULT_CHARS`]).
    pub channel: Channel,
    /// Whether the sentence encoder took part (with an encoder: the
    /// n-gram probability fell inside the channel's band).
    pub learned: bool,
}

/// The raw scores of one text, before any threshold (training, evaluation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// The first named rule that matched.
    pub rule: Option<&'static str>,
    /// The n-gram model's log-odds (highest over windows).
    pub ngram: f32,
    /// The head's log-odds over the sentence vector (highest over the
    /// windows encoded); `None` without an encoder or when it failed.
    pub embed: Option<f32>,
}

/// The screening engine: rules plus classifiers. Build once, share freely.
#[derive(Clone)]
pub struct Guard {
    rules: Rules,
    model: Model,
    ensemble: Ensemble,
    encoder: Option<Arc<dyn SentenceEncoder>>,
    /// Whether the band applies (false: the encoder runs on every text no
    /// rule convicts, as before the cascade; evaluation).
    cascade: bool,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("encoder", &self.encoder.is_some())
            .field("cascade", &self.cascade)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// The guard with the committed weights and no encoder (n-gram model
    /// alone); add one with [`Guard::with_encoder`].
    pub fn new() -> Result<Self, GuardError> {
        Self::with_parts(
            Model::from_bytes(EMBEDDED_MODEL)?,
            Ensemble::from_bytes(EMBEDDED_ENSEMBLE)?,
        )
    }

    /// The guard with another n-gram classifier alone, deciding at the
    /// model's own threshold on every channel (training and evaluation).
    pub fn with_model(model: Model) -> Result<Self, GuardError> {
        let mut ensemble = Ensemble::from_bytes(EMBEDDED_ENSEMBLE)?;
        ensemble.without_encoder = learned::Thresholds([model.threshold; 3]);
        Self::with_parts(model, ensemble)
    }

    /// The guard with these weights (training and evaluation).
    pub fn with_parts(model: Model, ensemble: Ensemble) -> Result<Self, GuardError> {
        Ok(Self {
            rules: Rules::new()?,
            model,
            ensemble,
            encoder: None,
            cascade: true,
        })
    }

    /// The same guard using `encoder` for the learned half. Refused when
    /// the head was fitted on another encoder's vectors (another model,
    /// other files, or the same model in another precision): it would score
    /// vectors unlike those its thresholds were chosen on.
    pub fn with_encoder(self, encoder: Arc<dyn SentenceEncoder>) -> Result<Self, GuardError> {
        if let Some(fitted) = &self.ensemble.encoder
            && fitted != encoder.id()
        {
            return Err(GuardError::Model(format!(
                "the head was fitted on `{fitted}` vectors, not on `{}`'s",
                encoder.id()
            )));
        }
        Ok(Self {
            encoder: Some(encoder),
            ..self
        })
    }

    /// The same guard running its encoder on every text no rule convicts,
    /// whatever the band says (the guard before the cascade; evaluation).
    pub fn always_encode(self) -> Self {
        Self {
            cascade: false,
            ..self
        }
    }

    /// Whether a sentence encoder is in use.
    pub fn has_encoder(&self) -> bool {
        self.encoder.is_some()
    }

    /// The n-gram classifier.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The head, stacker and thresholds.
    pub fn ensemble(&self) -> &Ensemble {
        &self.ensemble
    }

    /// Every `rule` label a verdict can carry.
    pub fn rule_names() -> impl Iterator<Item = &'static str> {
        Rules::names().chain(std::iter::once(CLASSIFIER_RULE))
    }

    /// Screen a user message.
    pub fn screen(&self, text: &str) -> Verdict {
        self.screen_as(Channel::User, text)
    }

    /// Screen a text arriving on `channel`, at that channel's threshold
    /// (the user channel's for a short result: [`judged_as`]).
    /// A text a named rule already convicts skips the encoder (the rule
    /// decides; the score is the n-gram model's), and so does a text whose
    /// n-gram probability lies outside the channel's band: below it the
    /// text passes, above it the n-gram model convicts.
    pub fn screen_as(&self, channel: Channel, text: &str) -> Verdict {
        let judged = judged_as(channel, text);
        let scan = self.scan(text);
        let q = learned::sigmoid(scan.ngram);
        let place = self.place(judged, &scan, q);
        let embed = match place {
            Some(Place::Inside) => self.embed(&scan),
            _ => None,
        };
        let (score, attack) = match (embed, place) {
            (Some(embed), _) => {
                let p = self.ensemble.probability(scan.ngram, embed);
                (p, p >= self.ensemble.with_encoder.get(judged))
            }
            (None, Some(Place::Below)) => (q, false),
            (None, Some(Place::Above)) => (q, true),
            // No encoder, or it failed: the n-gram model's own thresholds.
            (None, _) => (q, q >= self.ensemble.without_encoder.get(judged)),
        };
        let rule = scan.rule.or_else(|| attack.then_some(CLASSIFIER_RULE));
        Verdict {
            attack: rule.is_some(),
            rule,
            score,
            channel,
            learned: embed.is_some(),
        }
    }

    /// The windows the encoder would see for this text on `channel` (none
    /// when a rule convicts or the n-gram probability is outside the
    /// band); lets a caller embed ahead in batches (evaluation).
    pub fn encoder_windows(&self, channel: Channel, text: &str) -> Vec<String> {
        let scan = self.scan(text);
        let q = learned::sigmoid(scan.ngram);
        match self.place(judged_as(channel, text), &scan, q) {
            Some(Place::Inside) => scan.suspicious().map(str::to_string).collect(),
            _ => Vec::new(),
        }
    }

    /// The raw scores of a text (no threshold applied), the encoder's
    /// included whatever the rules and the band say (training, evaluation).
    pub fn scores(&self, text: &str) -> Scores {
        let scan = self.scan(text);
        let embed = self.embed(&scan);
        Scores {
            rule: scan.rule,
            ngram: scan.ngram,
            embed,
        }
    }

    /// Where the text falls for the encoder: `None` when it does not run
    /// (no encoder, or a rule convicts), else its place in the band (always
    /// inside without the cascade).
    fn place(&self, channel: Channel, scan: &Scan, q: f32) -> Option<Place> {
        if self.encoder.is_none() || scan.rule.is_some() {
            return None;
        }
        if !self.cascade {
            return Some(Place::Inside);
        }
        Some(self.ensemble.band.place(channel, q))
    }

    /// Normalize, match the rules, read a text in one of five languages as
    /// word-for-word English and score every window with the n-gram model
    /// (microseconds).
    fn scan(&self, text: &str) -> Scan {
        let normalized = normalize(text).text;
        let rule = self.rules.first_match(&normalized);
        let text = crosslingual::into_english(normalized);
        let windows = windows(&text);
        let logits: Vec<f32> = windows
            .iter()
            .map(|&(a, b)| self.model.logit(&text[a..b]))
            .collect();
        let ngram = logits.iter().copied().reduce(f32::max).unwrap_or(f32::MIN);
        Scan {
            text,
            rule,
            windows,
            logits,
            ngram,
        }
    }

    /// The head's logit: highest over the windows encoded (at most
    /// [`MAX_ENCODED_WINDOWS`], the most suspicious); `None` without an
    /// encoder or when it failed.
    fn embed(&self, scan: &Scan) -> Option<f32> {
        let encoder = self.encoder.as_ref()?;
        let texts: Vec<&str> = scan.suspicious().collect();
        let vectors = encoder.embed(&texts).ok()?;
        if vectors.len() != texts.len() {
            return None;
        }
        vectors
            .iter()
            .map(|v| self.ensemble.head.logit(v))
            .collect::<Option<Vec<f32>>>()?
            .into_iter()
            .reduce(f32::max)
    }
}

/// A text normalized, with its rule match and n-gram scores.
struct Scan {
    text: String,
    rule: Option<&'static str>,
    windows: Vec<(usize, usize)>,
    /// The n-gram model's log-odds per window.
    logits: Vec<f32>,
    /// The highest of them.
    ngram: f32,
}

impl Scan {
    /// The windows the encoder sees: the most suspicious first (ties keep
    /// text order), at most [`MAX_ENCODED_WINDOWS`].
    fn suspicious(&self) -> impl Iterator<Item = &str> {
        let mut order: Vec<usize> = (0..self.windows.len()).collect();
        order.sort_by(|&i, &j| self.logits[j].total_cmp(&self.logits[i]).then(i.cmp(&j)));
        order.truncate(MAX_ENCODED_WINDOWS);
        order.into_iter().filter_map(|i| {
            let (a, b) = self.windows[i];
            self.text.get(a..b)
        })
    }
}

/// A text as the classifiers read it: normalized, and word-for-word
/// English when it is in one of [`Language::ALL`] (training: what the
/// n-gram model and the head learn from is what [`Guard`] scores).
pub fn classifier_text(text: &str) -> String {
    crosslingual::into_english(normalize(text).text)
}

/// The channel whose threshold and band apply to `text` arriving on
/// `channel`: the user channel's for a short tool result or retrieved
/// passage ([`SHORT_RESULT_CHARS`]), else its own.
pub fn judged_as(channel: Channel, text: &str) -> Channel {
    let short = text.chars().nth(SHORT_RESULT_CHARS - 1).is_none();
    if channel != Channel::User && short {
        Channel::User
    } else {
        channel
    }
}

/// Byte ranges of the overlapping windows of a text ([`WINDOW_CHARS`]
/// characters, half overlapping); one window for a short text.
pub fn windows(text: &str) -> Vec<(usize, usize)> {
    let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    if bounds.len() <= WINDOW_CHARS {
        return vec![(0, text.len())];
    }
    let step = WINDOW_CHARS / 2;
    let mut out = Vec::new();
    let mut start = 0;
    while start < bounds.len() {
        let end = bounds
            .get(start + WINDOW_CHARS)
            .copied()
            .unwrap_or(text.len());
        out.push((bounds[start], end));
        if start + WINDOW_CHARS >= bounds.len() {
            break;
        }
        start += step;
    }
    out
}
