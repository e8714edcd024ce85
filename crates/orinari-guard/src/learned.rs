//! The learned half of the guard: a sentence encoder's vector of a text
//! (all-MiniLM-L6-v2, run by `orinari-embed`, handed in by the caller as a
//! [`SentenceEncoder`] so this crate stays pure computation) scored by a
//! small trained [`Head`], and the [`Ensemble`] that combines that score
//! with the n-gram classifier's and holds one threshold per [`Channel`]
//! — fitted on validation splits, never on test splits
//! (`bench/guard/train.sh`).
//!
//! File format of `model/ensemble.bin` (little endian): magic `ORGE`,
//! version u32 = 1, dimensions u32, hidden units u32 (0: the head is
//! linear), then f32s: the stacker's n-gram weight, encoder weight and
//! bias; three thresholds with the encoder (user, tool, retrieved); three
//! without it (n-gram probability alone); then the head's weights — with
//! hidden units, `hidden × dims` first-layer weights row by row, `hidden`
//! biases and `hidden` output weights; linear, `dims` weights — and its
//! bias.

use crate::GuardError;

const MAGIC: &[u8; 4] = b"ORGE";
const VERSION: u32 = 1;

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
    /// The head.
    pub head: Head,
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
        if u() != Some(VERSION) {
            return Err(bad("unsupported version"));
        }
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
        let floats: Vec<f32> = bytes[16..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if !bytes.len().is_multiple_of(4) || floats.len() != 9 + head_len + 1 {
            return Err(bad("length does not match the sizes"));
        }
        if floats.iter().any(|f| !f.is_finite()) {
            return Err(bad("a weight is not finite"));
        }
        let t = |i: usize| Thresholds([floats[i], floats[i + 1], floats[i + 2]]);
        let rest = &floats[9..];
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
            head: Head {
                dims,
                hidden,
                w1,
                b1,
                w2,
                b2: rest[head_len],
            },
        })
    }

    /// Write the committed format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let h = &self.head;
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        for v in [VERSION, h.dims as u32, h.hidden as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let floats = [self.w_ngram, self.w_embed, self.bias]
            .into_iter()
            .chain(self.with_encoder.0)
            .chain(self.without_encoder.0)
            .chain(h.w1.iter().copied())
            .chain(h.b1.iter().copied())
            .chain(h.w2.iter().copied())
            .chain(std::iter::once(h.b2));
        for f in floats {
            out.extend_from_slice(&f.to_le_bytes());
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
            head: Head {
                dims: 3,
                hidden: 2,
                w1: vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                b1: vec![0.0, -1.0],
                w2: vec![2.0, 3.0],
                b2: 0.25,
            },
        };
        let bytes = e.to_bytes();
        assert_eq!(Ensemble::from_bytes(&bytes).unwrap(), e);
        assert!(Ensemble::from_bytes(&bytes[..bytes.len() - 4]).is_err());
        assert!(Ensemble::from_bytes(b"ORGE").is_err());
        // relu(1) * 2 + relu(2 - 1) * 3 + 0.25
        assert_eq!(e.head.logit(&[1.0, 2.0, 5.0]), Some(5.25));
        // A vector of the wrong size is no vector.
        assert_eq!(e.head.logit(&[1.0]), None);
        assert_eq!(e.head.logit(&[1.0, f32::NAN, 0.0]), None);
        assert_eq!(Channel::Tool.as_str(), "tool");
    }
}
