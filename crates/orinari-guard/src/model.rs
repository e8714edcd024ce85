//! The trained classifier: logistic regression over hashed features
//! (`features.rs`), stored as 8-bit weights with one scale. The committed
//! weights (`model/prompt-injection.bin`) come from `bench/guard/train.sh`.
//!
//! File format (little endian): magic `ORGD`, version u32 = 1, log2 of the
//! bucket count u32, bias f32, scale f32, threshold f32, then one i8 per bucket.

use crate::GuardError;
use crate::features::{self, Sparse};

const MAGIC: &[u8; 4] = b"ORGD";
const VERSION: u32 = 1;
const HEADER: usize = 24;

/// A linear model over hashed features.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// log2 of the number of hash buckets.
    pub log2_buckets: u32,
    /// The intercept.
    pub bias: f32,
    /// One weight per bucket.
    pub weights: Vec<f32>,
    /// Probability at or above which a text is an attack.
    pub threshold: f32,
}

impl Model {
    /// The number of hash buckets.
    pub fn buckets(&self) -> u32 {
        1 << self.log2_buckets
    }

    /// Attack probability of a normalized text.
    pub fn probability(&self, normalized: &str) -> f32 {
        self.probability_of(&features::extract(normalized, self.buckets()))
    }

    /// Attack probability of extracted features.
    pub fn probability_of(&self, x: &Sparse) -> f32 {
        crate::learned::sigmoid(self.logit_of(x))
    }

    /// Attack log-odds of a normalized text.
    pub fn logit(&self, normalized: &str) -> f32 {
        self.logit_of(&features::extract(normalized, self.buckets()))
    }

    /// Attack log-odds of extracted features.
    pub fn logit_of(&self, x: &Sparse) -> f32 {
        self.bias
            + x.iter()
                .map(|&(b, v)| self.weights.get(b as usize).copied().unwrap_or(0.0) * v)
                .sum::<f32>()
    }

    /// Read the committed format.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, GuardError> {
        let bad = |why: &str| GuardError::Model(why.to_string());
        if bytes.len() < HEADER || &bytes[..4] != MAGIC {
            return Err(bad("not an ORGD model file"));
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let f32_at = |i: usize| f32::from_bits(u32_at(i));
        if u32_at(4) != VERSION {
            return Err(bad("unsupported model version"));
        }
        let log2_buckets = u32_at(8);
        if !(8..=24).contains(&log2_buckets) {
            return Err(bad("bucket count out of range"));
        }
        let n = 1usize << log2_buckets;
        if bytes.len() != HEADER + n {
            return Err(bad("weights do not match the bucket count"));
        }
        let scale = f32_at(16);
        let weights = bytes[HEADER..]
            .iter()
            .map(|&q| f32::from(q as i8) * scale)
            .collect();
        Ok(Self {
            log2_buckets,
            bias: f32_at(12),
            weights,
            threshold: f32_at(20),
        })
    }

    /// Write the committed format (weights quantized to 8 bits).
    pub fn to_bytes(&self) -> Vec<u8> {
        let max = self.weights.iter().fold(0.0f32, |m, w| m.max(w.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        let mut out = Vec::with_capacity(HEADER + self.weights.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.log2_buckets.to_le_bytes());
        out.extend_from_slice(&self.bias.to_le_bytes());
        out.extend_from_slice(&scale.to_le_bytes());
        out.extend_from_slice(&self.threshold.to_le_bytes());
        out.extend(
            self.weights
                .iter()
                .map(|w| (w / scale).round().clamp(-127.0, 127.0) as i8 as u8),
        );
        out
    }
}
