//! The learned half of the guard: a sentence encoder's vector of a text
//! (all-MiniLM-L6-v2, run by `orinari-embed`, handed in by the caller as a
//! [`SentenceEncoder`] so this crate stays pure computation) scored by a
//! small trained [`Head`], and the [`Ensemble`] that combines that score
//! with the n-gram classifier's and holds one threshold per [`Channel`]
//! — fitted on validation splits, never on test splits
//! (`bench/guard/train.sh`).
//!
//! The encoder costs milliseconds per text where everything else costs
//! microseconds, so it runs only where it can change the decision: the
//! [`Band`] of n-gram probabilities, per channel, fitted on validation
//! splits (`train::fit_band`). Below the band a text passes on the n-gram
//! model's word, above it the n-gram model convicts; inside it the
//! ensemble decides.
//!
//! File format of `model/ensemble.bin` (little endian): magic `ORGE`,
//! version u32 (1, 2 or 3), dimensions u32, hidden units u32 (0: the head
//! is linear), then f32s: the stacker's n-gram weight, encoder weight and
//! bias; three thresholds with the encoder (user, tool, retrieved); three
//! without it (n-gram probability alone); versions 2 and 3: the band's
//! three lower and three upper bounds (n-gram probabilities; version 1: the
//! encoder runs on every text); then the head's weights — with hidden
//! units, `hidden × dims` first-layer weights row by row, `hidden` biases
//! and `hidden` output weights; linear, `dims` weights — and its bias;
//! version 3 only: the length u32 and UTF-8 bytes of the id of the encoder
//! whose vectors the head was fitted on ([`SentenceEncoder::id`]), which
//! [`crate::Guard::with_encoder`] checks.

use crate::GuardError;

const MAGIC: &[u8; 4] = b"ORGE";
const VERSION: u32 = 3;
/// An upper bound above every probability: the n-gram model never
/// convicts alone.
pub const NEVER: f32 = 2.0;

/// Where a text comes from; each has a threshold of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// A user message (`user` role, or the chat form).
    User,
    /// A tool's result (`tool` role): indirect injection.
    Tool,
    /// Text retrieved from a data source: indirect injection.
    Retrieved,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 3] = [Channel::User, Channel::Tool, Channel::Retrieved];

    /// The channel's name (metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Tool => "tool",
            Self::Retrieved => "retrieved",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::User => 0,
            Self::Tool => 1,
            Self::Retrieved => 2,
        }
    }
}

/// A sentence encoder: each text to one unit-length vector. Implemented
/// by the caller over `orinari-embed` (the guard never loads files).
pub trait SentenceEncoder: Send + Sync {
    /// What the vectors are: the model, its files and the arithmetic
    /// (`orinari_embed::Encoder::id`, for example
    /// `all-MiniLM-L6-v2-int8@…`). A head fitted on one encoder's vectors
    /// is used only with that encoder.
    fn id(&self) -> &str;
    /// One vector per text, in order. An error means "no vectors": the
    /// guard then decides on the n-gram model alone.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String>;
}

/// Per-channel decision thresholds (probabilities; attack when ≥).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds(
    /// User, tool, retrieved.
    pub [f32; 3],
);

impl Thresholds {
    /// The threshold of `channel`.
    pub fn get(&self, channel: Channel) -> f32 {
        self.0[channel.index()]
    }

    /// Set the threshold of `channel`.
    pub fn set(&mut self, channel: Channel, value: f32) {
        self.0[channel.index()] = value;
    }
}

/// Where the encoder runs, per channel: texts whose n-gram probability `q`
/// lies in `[lower, upper)` are encoded and decided by the ensemble; below,
/// they pass; at or above `upper` (≤ 1), the n-gram model convicts alone.
/// `lower` 0 and `upper` [`NEVER`]: the encoder runs on every text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    /// Lower bounds (user, tool, retrieved).
    pub lower: Thresholds,
    /// Upper bounds.
    pub upper: Thresholds,
}

impl Band {
    /// The band that encodes every text (version 1 files).
    pub const EVERYTHING: Band = Band {
        lower: Thresholds([0.0; 3]),
        upper: Thresholds([NEVER; 3]),
    };

    /// Where a text of n-gram probability `q` on `channel` falls.
    pub fn place(&self, channel: Channel, q: f32) -> Place {
        if q < self.lower.get(channel) {
            Place::Below
        } else if q >= self.upper.get(channel) {
            Place::Above
        } else {
            Place::Inside
        }
    }
}

/// Where a text falls with respect to a [`Band`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Benign on the n-gram model's word; no encoder.
    Below,
    /// The encoder runs and the ensemble decides.
    Inside,
    /// An attack on the n-gram model's word; no encoder.
    Above,
}

/// The trained head over a sentence vector: logistic regression
/// (`hidden` = 0) or one ReLU hidden layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    /// Input dimensions.
    pub dims: usize,
    /// Hidden units (0: linear).
    pub hidden: usize,
    /// First-layer weights, `hidden × dims` (empty when linear).
    pub w1: Vec<f32>,
    /// First-layer biases (empty when linear).
    pub b1: Vec<f32>,
    /// Output weights: `hidden` (or `dims` when linear).
    pub w2: Vec<f32>,
    /// Output bias.
    pub b2: f32,
}

impl Head {
    /// The head's logit (attack log-odds) for one vector; `None` for a
    /// vector of another size or one that is not finite.
    pub fn logit(&self, v: &[f32]) -> Option<f32> {
        if self.dims == 0 || v.len() != self.dims || v.iter().any(|x| !x.is_finite()) {
            return None;
        }
        if self.hidden == 0 {
            return Some(self.b2 + dot(&self.w2, v));
        }
        let mut z = self.b2;
        for (j, (row, b)) in self.w1.chunks_exact(self.dims).zip(&self.b1).enumerate() {
            let h = (b + dot(row, v)).max(0.0);
            z += self.w2.get(j).copied().unwrap_or(0.0) * h;
        }
        Some(z)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// How the two scores become one, and the thresholds per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Ensemble {
    /// Weight of the n-gram model's logit.
    pub w_ngram: f32,
    /// Weight of the head's logit.
    pub w_embed: f32,
    /// Bias.
    pub bias: f32,
    /// Thresholds on the ensemble's probability (encoder present).
    pub with_encoder: Thresholds,
    /// Thresholds on the n-gram probability alone (no encoder).
    pub without_encoder: Thresholds,
    /// Where the encoder runs (with an encoder).
    pub band: Band,
    /// The head.
    pub head: Head,
    /// The id of the encoder whose vectors the head was fitted on
    /// ([`SentenceEncoder::id`]); `None` in files before version 3, whose
    /// head is used with any encoder.
    pub encoder: Option<String>,
}

impl Ensemble {
    /// The ensemble's attack probability from the two logits.
    pub fn probability(&self, ngram_logit: f32, embed_logit: f32) -> f32 {
        sigmoid(self.bias + self.w_ngram * ngram_logit + self.w_embed * embed_logit)
    }

    /// Read the committed format.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, GuardError> {
        let bad = |why: &str| GuardError::Model(format!("ensemble: {why}"));
        if bytes.len() < 16 || &bytes[..4] != MAGIC {
            return Err(bad("not an ORGE file"));
        }
        let mut words = bytes[4..].chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
        let mut u = || words.next().map(u32::from_le_bytes);
        let version = u().unwrap_or(0);
        if !(1..=VERSION).contains(&version) {
            return Err(bad("unsupported version"));
        }
        let fixed = if version == 1 { 9 } else { 15 };
        let dims = u().ok_or_else(|| bad("truncated"))? as usize;
        let hidden = u().ok_or_else(|| bad("truncated"))? as usize;
        if !(1..=4096).contains(&dims) || hidden > 1024 {
            return Err(bad("sizes out of range"));
        }
        let head_len = if hidden == 0 {
            dims
        } else {
            hidden * dims + 2 * hidden
        };
        let end = 16 + 4 * (fixed + head_len + 1);
        let (Some(numbers), Some(tail)) = (bytes.get(16..end), bytes.get(end..)) else {
            return Err(bad("length does not match the sizes"));
        };
        let encoder = match (version, tail) {
            (VERSION, [a, b, c, d, id @ ..])
                if u32::from_le_bytes([*a, *b, *c, *d]) as usize == id.len() =>
            {
                let id = std::str::from_utf8(id).map_err(|_| bad("the encoder id is not UTF-8"))?;
                if id.is_empty() {
                    return Err(bad("no encoder id"));
                }
                Some(id.to_string())
            }
            (1 | 2, []) => None,
            _ => return Err(bad("length does not match the sizes")),
        };
        let floats: Vec<f32> = numbers
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if floats.iter().any(|f| !f.is_finite()) {
            return Err(bad("a weight is not finite"));
        }
        let t = |i: usize| Thresholds([floats[i], floats[i + 1], floats[i + 2]]);
        let band = if version == 1 {
            Band::EVERYTHING
        } else {
            Band {
                lower: t(9),
                upper: t(12),
            }
        };
        let rest = &floats[fixed..];
        let (w1, b1, w2) = if hidden == 0 {
            (Vec::new(), Vec::new(), rest[..dims].to_vec())
        } else {
            let (w1, r) = rest.split_at(hidden * dims);
            let (b1, r) = r.split_at(hidden);
            (w1.to_vec(), b1.to_vec(), r[..hidden].to_vec())
        };
        Ok(Self {
            w_ngram: floats[0],
            w_embed: floats[1],
            bias: floats[2],
            with_encoder: t(3),
            without_encoder: t(6),
            band,
            head: Head {
                dims,
                hidden,
                w1,
                b1,
                w2,
                b2: rest[head_len],
            },
            encoder,
        })
    }

    /// Write the committed format: version 3 with the encoder's id,
    /// version 2 without one.
    pub fn to_bytes(&self) -> Vec<u8> {
        let h = &self.head;
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        let version = if self.encoder.is_some() { VERSION } else { 2 };
        for v in [version, h.dims as u32, h.hidden as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let floats = [self.w_ngram, self.w_embed, self.bias]
            .into_iter()
            .chain(self.with_encoder.0)
            .chain(self.without_encoder.0)
            .chain(self.band.lower.0)
            .chain(self.band.upper.0)
            .chain(h.w1.iter().copied())
            .chain(h.b1.iter().copied())
            .chain(h.w2.iter().copied())
            .chain(std::iter::once(h.b2));
        for f in floats {
            out.extend_from_slice(&f.to_le_bytes());
        }
        if let Some(id) = &self.encoder {
            out.extend_from_slice(&(id.len() as u32).to_le_bytes());
            out.extend_from_slice(id.as_bytes());
        }
        out
    }
}

/// The logistic function.
pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// The log-odds of a probability (clamped away from 0 and 1).
pub fn logit(p: f32) -> f32 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let e = Ensemble {
            w_ngram: 0.5,
            w_embed: 1.5,
            bias: -2.0,
            with_encoder: Thresholds([0.9, 0.8, 0.7]),
            without_encoder: Thresholds([0.6, 0.5, 0.4]),
            band: Band {
                lower: Thresholds([0.1, 0.2, 0.3]),
                upper: Thresholds([0.95, NEVER, 0.99]),
            },
            head: Head {
                dims: 3,
                hidden: 2,
                w1: vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                b1: vec![0.0, -1.0],
                w2: vec![2.0, 3.0],
                b2: 0.25,
            },
            encoder: Some("mini-int8@0123".into()),
        };
        let bytes = e.to_bytes();
        assert_eq!(Ensemble::from_bytes(&bytes).unwrap(), e);
        assert!(Ensemble::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(Ensemble::from_bytes(&[&bytes[..], b"x"].concat()).is_err());
        // Version 3 names its encoder; version 2 has none to name.
        let mut unnamed = bytes[..bytes.len() - 4 - "mini-int8@0123".len()].to_vec();
        assert!(Ensemble::from_bytes(&unnamed).is_err());
        unnamed[4] = 2;
        let read = Ensemble::from_bytes(&unnamed).unwrap();
        assert_eq!(read.encoder, None);
        assert_eq!(read.to_bytes(), unnamed);
        assert!(Ensemble::from_bytes(b"ORGE").is_err());
        // relu(1) * 2 + relu(2 - 1) * 3 + 0.25
        assert_eq!(e.head.logit(&[1.0, 2.0, 5.0]), Some(5.25));
        // A vector of the wrong size is no vector.
        assert_eq!(e.head.logit(&[1.0]), None);
        assert_eq!(e.head.logit(&[1.0, f32::NAN, 0.0]), None);
        assert_eq!(Channel::Tool.as_str(), "tool");
    }

    #[test]
    fn reads_version_1_as_encoding_everything() {
        let mut e = Ensemble {
            w_ngram: 1.0,
            w_embed: 2.0,
            bias: -1.0,
            with_encoder: Thresholds([0.9; 3]),
            without_encoder: Thresholds([0.8; 3]),
            band: Band::EVERYTHING,
            head: Head {
                dims: 2,
                hidden: 0,
                w1: Vec::new(),
                b1: Vec::new(),
                w2: vec![0.5, -0.5],
                b2: 0.1,
            },
            encoder: None,
        };
        // Version 1: no band floats.
        let v2 = e.to_bytes();
        let mut v1 = v2[..4].to_vec();
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&v2[8..16 + 9 * 4]);
        v1.extend_from_slice(&v2[16 + 15 * 4..]);
        assert_eq!(Ensemble::from_bytes(&v1).unwrap(), e);
        let mut v4 = v2.clone();
        v4[4] = 4;
        assert!(Ensemble::from_bytes(&v4).is_err());
        e.band.lower.set(Channel::User, 0.25);
        e.band.upper.set(Channel::User, 0.75);
        let back = Ensemble::from_bytes(&e.to_bytes()).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.band.place(Channel::User, 0.1), Place::Below);
        assert_eq!(back.band.place(Channel::User, 0.25), Place::Inside);
        assert_eq!(back.band.place(Channel::User, 0.75), Place::Above);
        // The other channels still encode everything, certainty included.
        assert_eq!(back.band.place(Channel::Tool, 1.0), Place::Inside);
        assert_eq!(back.band.place(Channel::Tool, 0.0), Place::Inside);
    }
}
