//! Picking the next token: greedy, temperature, nucleus (top-p), seeded;
//! before it, OpenAI's penalties and `logit_bias` ([`Adjustments`]).

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Candidates sorted first when looking for the nucleus; the full sort runs
/// only when these do not reach `top_p`.
const NUCLEUS_FAST_PATH: usize = 256;

/// A seeded sampler for one sequence.
pub struct Sampler {
    rng: StdRng,
    temperature: f32,
    top_p: f32,
    probs: Vec<(u32, f32)>,
}

impl Sampler {
    /// `seed = None` draws a seed from the OS.
    pub fn new(temperature: f32, top_p: f32, seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Self {
            rng,
            temperature,
            top_p,
            probs: Vec::new(),
        }
    }

    /// The most likely token (the first of equals).
    pub fn argmax(logits: &[f32]) -> u32 {
        let mut best = 0usize;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        best as u32
    }

    /// Choose a token id from raw logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let argmax = || Self::argmax(logits);
        if self.temperature <= 0.0 || logits.is_empty() {
            return argmax();
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let inv_t = 1.0 / self.temperature;
        self.probs.clear();
        self.probs.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, ((l - max) * inv_t).exp())),
        );
        let total: f32 = self.probs.iter().map(|p| p.1).sum();
        if !(total.is_finite() && total > 0.0) {
            return argmax();
        }
        let candidates = if self.top_p < 1.0 {
            nucleus(&mut self.probs, self.top_p * total)
        } else {
            self.probs.len()
        };
        let mass: f32 = self.probs[..candidates].iter().map(|p| p.1).sum();
        let mut r = self.rng.random::<f32>() * mass;
        for &(id, p) in &self.probs[..candidates] {
            if r < p {
                return id;
            }
            r -= p;
        }
        self.probs[candidates - 1].0
    }
}

/// Changes to the logits before sampling, as OpenAI defines them: each
/// token's logit minus `frequency × its count so far + presence × (count >
/// 0)`, plus its `logit_bias`.
#[derive(Debug, Clone, Default)]
pub struct Adjustments {
    frequency: f32,
    presence: f32,
    bias: Vec<(u32, f32)>,
    counts: HashMap<u32, u32>,
}

impl Adjustments {
    /// Penalties (0 leaves sampling unchanged) and biases by token id.
    pub fn new(frequency: f32, presence: f32, bias: Vec<(u32, f32)>) -> Self {
        Self {
            frequency,
            presence,
            bias,
            counts: HashMap::new(),
        }
    }

    /// Apply to one step's logits.
    pub fn apply(&self, logits: &mut [f32]) {
        for &(id, b) in &self.bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += b;
            }
        }
        if self.frequency == 0.0 && self.presence == 0.0 {
            return;
        }
        for (&id, &n) in &self.counts {
            if let Some(l) = logits.get_mut(id as usize) {
                *l -= self.frequency * n as f32 + self.presence;
            }
        }
    }

    /// Count a generated token.
    pub fn record(&mut self, token: u32) {
        if self.frequency != 0.0 || self.presence != 0.0 {
            *self.counts.entry(token).or_default() += 1;
        }
    }
}

/// Reorder `probs` so the smallest set of most likely tokens whose mass
/// reaches `target` comes first; returns its length.
fn nucleus(probs: &mut [(u32, f32)], target: f32) -> usize {
    let by_prob_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let fast = NUCLEUS_FAST_PATH.min(probs.len());
    if fast < probs.len() {
        probs.select_nth_unstable_by(fast - 1, by_prob_desc);
    }
    probs[..fast].sort_unstable_by(by_prob_desc);
    if let Some(n) = prefix_reaching(&probs[..fast], target) {
        return n;
    }
    probs.sort_unstable_by(by_prob_desc);
    prefix_reaching(probs, target).unwrap_or(probs.len())
}

fn prefix_reaching(sorted: &[(u32, f32)], target: f32) -> Option<usize> {
    let mut acc = 0.0;
    for (i, p) in sorted.iter().enumerate() {
        acc += p.1;
        if acc >= target {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_largest_logit() {
        let mut s = Sampler::new(0.0, 1.0, Some(1));
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]), 1);
    }

    #[test]
    fn same_seed_same_choices() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 97) as f32 / 10.0).collect();
        let run = |seed| {
            let mut s = Sampler::new(1.0, 0.9, Some(seed));
            (0..50).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn tiny_top_p_is_greedy() {
        let logits = [1.0, 5.0, 4.9, 0.0];
        let mut s = Sampler::new(1.0, 0.01, Some(7));
        for _ in 0..20 {
            assert_eq!(s.sample(&logits), 1);
        }
    }

    #[test]
    fn nucleus_keeps_smallest_set_reaching_mass() {
        let mut p: Vec<(u32, f32)> = vec![(0, 0.1), (1, 0.5), (2, 0.3), (3, 0.1)];
        let n = nucleus(&mut p, 0.75);
        assert_eq!(n, 2);
        assert_eq!(p[0].0, 1);
        assert_eq!(p[1].0, 2);
    }

    #[test]
    fn penalties_and_bias_change_the_logits_as_openai_defines_them() {
        let mut a = Adjustments::new(0.5, 1.0, vec![(3, -100.0), (9, 1.0)]);
        a.record(1);
        a.record(1);
        a.record(2);
        let mut logits = [0.0f32; 4];
        a.apply(&mut logits);
        assert_eq!(logits, [0.0, -2.0, -1.5, -100.0]);
        // Without penalties nothing is counted.
        let mut b = Adjustments::new(0.0, 0.0, Vec::new());
        b.record(1);
        assert!(b.counts.is_empty());
    }

    #[test]
    fn nucleus_falls_back_to_full_sort_beyond_fast_path() {
        let mut p: Vec<(u32, f32)> = (0..1000).map(|i| (i, 1.0)).collect();
        assert_eq!(nucleus(&mut p, 600.0), 600);
    }
}
