//! Training the classifier (used by `examples/guard-train.rs`; pure
//! computation, deterministic for a given input order and seed):
//! logistic regression by AdaGrad SGD with L2, then a threshold picked on
//! held-out data for a target false-positive rate; the head over sentence
//! vectors (`fit_head`), the stacker that combines both (`fit_stacker`),
//! and the band of n-gram scores where the encoder runs (`fit_band`).

use crate::features::{self, Sparse};
use crate::learned::Head;
use crate::model::Model;

/// Training settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// log2 of the hash bucket count.
    pub log2_buckets: u32,
    /// Passes over the data.
    pub epochs: usize,
    /// AdaGrad base learning rate.
    pub learning_rate: f32,
    /// L2 penalty per example.
    pub l2: f32,
    /// Shuffle seed.
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            log2_buckets: 18,
            epochs: 2,
            learning_rate: 0.5,
            l2: 1e-6,
            seed: 0x6f72_696e_6172_6921,
        }
    }
}

/// Fit a model to (normalized text, is attack) pairs. The threshold is 0.5
/// until [`pick_threshold`] sets it.
pub fn fit(examples: &[(String, bool)], s: Settings) -> Model {
    let buckets = 1usize << s.log2_buckets;
    let xs: Vec<(Sparse, f32)> = examples
        .iter()
        .map(|(t, y)| {
            (
                features::extract(t, 1 << s.log2_buckets),
                f32::from(u8::from(*y)),
            )
        })
        .collect();
    let mut w = vec![0.0f32; buckets];
    let mut g2 = vec![1e-8f32; buckets];
    let (mut bias, mut bias_g2) = (0.0f32, 1e-8f32);
    let mut order: Vec<usize> = (0..xs.len()).collect();
    let mut rng = s.seed | 1;
    for _ in 0..s.epochs {
        // Fisher–Yates with xorshift64: reproducible without a dependency.
        for i in (1..order.len()).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            order.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        for &i in &order {
            let (x, y) = &xs[i];
            let z = bias + x.iter().map(|&(b, v)| w[b as usize] * v).sum::<f32>();
            let p = 1.0 / (1.0 + (-z).exp());
            let err = p - y;
            for &(b, v) in x {
                let b = b as usize;
                let g = err * v + s.l2 * w[b];
                g2[b] += g * g;
                w[b] -= s.learning_rate * g / g2[b].sqrt();
            }
            bias_g2 += err * err;
            bias -= s.learning_rate * err / bias_g2.sqrt();
        }
    }
    Model {
        log2_buckets: s.log2_buckets,
        bias,
        weights: w,
        threshold: 0.5,
    }
}

/// The lowest threshold whose false-positive rate on every benign set is at
/// most `max_fpr` (each set: the probabilities of its benign texts).
pub fn pick_threshold(benign_sets: &[Vec<f32>], max_fpr: f64) -> f32 {
    let mut threshold = 0.0f32;
    for set in benign_sets {
        let mut scores = set.clone();
        scores.sort_by(|a, b| b.total_cmp(a));
        let allowed = (max_fpr * scores.len() as f64).floor() as usize;
        // Flag strictly above the (allowed+1)-th highest benign score.
        if let Some(&s) = scores.get(allowed) {
            threshold = threshold.max(next_up(s));
        }
    }
    threshold
}

fn next_up(x: f32) -> f32 {
    f32::from_bits(x.to_bits() + 1)
}

/// Settings for the head over sentence vectors.
#[derive(Debug, Clone, Copy)]
pub struct HeadSettings {
    /// Hidden ReLU units (0: logistic regression).
    pub hidden: usize,
    /// Passes over the data.
    pub epochs: usize,
    /// Adam's learning rate.
    pub learning_rate: f32,
    /// L2 penalty (weight decay per step, times the learning rate).
    pub l2: f32,
    /// Examples per step.
    pub batch: usize,
    /// Initialisation and shuffle seed.
    pub seed: u64,
}

impl Default for HeadSettings {
    fn default() -> Self {
        Self {
            hidden: 0,
            epochs: 30,
            learning_rate: 1e-2,
            l2: 1e-4,
            batch: 32,
            seed: 0x6865_6164_2121_2121,
        }
    }
}

/// A reproducible xorshift64 stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [-1, 1).
    fn symmetric(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn shuffle(&mut self, order: &mut [usize]) {
        for i in (1..order.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
    }
}

/// Adam's state for one parameter vector.
struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    fn new(n: usize) -> Self {
        Self {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    #[allow(
        clippy::needless_range_loop,
        reason = "one index over four parallel arrays"
    )]
    fn step(&mut self, w: &mut [f32], g: &[f32], lr: f32, l2: f32, t: i32) {
        let (b1, b2) = (0.9f32, 0.999f32);
        let c1 = 1.0 - b1.powi(t);
        let c2 = 1.0 - b2.powi(t);
        for i in 0..w.len() {
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g[i];
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g[i] * g[i];
            w[i] -= lr * ((self.m[i] / c1) / ((self.v[i] / c2).sqrt() + 1e-8) + l2 * w[i]);
        }
    }
}

#[allow(
    clippy::needless_range_loop,
    reason = "one index over several parallel arrays reads clearer"
)]
/// Fit a head to (vector, is attack, weight) examples: mini-batch Adam on
/// the weighted log loss, deterministic for a given input order and seed.
pub fn fit_head(examples: &[(&[f32], bool, f32)], s: HeadSettings) -> Head {
    let dims = examples.first().map_or(0, |e| e.0.len());
    let hidden = if dims == 0 { 0 } else { s.hidden };
    let mut rng = Rng(s.seed | 1);
    let mut head = Head {
        dims,
        hidden,
        w1: Vec::new(),
        b1: Vec::new(),
        w2: vec![0.0; if hidden == 0 { dims } else { hidden }],
        b2: 0.0,
    };
    if hidden > 0 {
        let r1 = (6.0 / (dims + hidden) as f32).sqrt();
        head.w1 = (0..hidden * dims).map(|_| rng.symmetric() * r1).collect();
        head.b1 = vec![0.0; hidden];
        let r2 = (6.0 / (hidden + 1) as f32).sqrt();
        head.w2 = (0..hidden).map(|_| rng.symmetric() * r2).collect();
    }
    let (mut a1, mut ab1, mut a2, mut ab2) = (
        Adam::new(head.w1.len()),
        Adam::new(head.b1.len()),
        Adam::new(head.w2.len()),
        Adam::new(1),
    );
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut t = 0;
    let mut h = vec![0.0f32; hidden];
    for _ in 0..s.epochs {
        rng.shuffle(&mut order);
        for batch in order.chunks(s.batch.max(1)) {
            let mut g1 = vec![0.0f32; head.w1.len()];
            let mut gb1 = vec![0.0f32; head.b1.len()];
            let mut g2 = vec![0.0f32; head.w2.len()];
            let mut gb2 = 0.0f32;
            let mut total = 0.0f32;
            for &i in batch {
                let (x, y, weight) = examples[i];
                total += weight;
                if hidden == 0 {
                    let z = head.b2 + dot(&head.w2, x);
                    let err = weight * (crate::learned::sigmoid(z) - f32::from(u8::from(y)));
                    for (g, xi) in g2.iter_mut().zip(x) {
                        *g += err * xi;
                    }
                    gb2 += err;
                    continue;
                }
                let mut z = head.b2;
                for (j, row) in head.w1.chunks_exact(dims).enumerate() {
                    h[j] = (head.b1[j] + dot(row, x)).max(0.0);
                    z += head.w2[j] * h[j];
                }
                let err = weight * (crate::learned::sigmoid(z) - f32::from(u8::from(y)));
                gb2 += err;
                for j in 0..hidden {
                    g2[j] += err * h[j];
                    if h[j] > 0.0 {
                        let d = err * head.w2[j];
                        gb1[j] += d;
                        for (g, xi) in g1[j * dims..(j + 1) * dims].iter_mut().zip(x) {
                            *g += d * xi;
                        }
                    }
                }
            }
            let scale = 1.0 / total.max(f32::MIN_POSITIVE);
            for g in g1.iter_mut().chain(&mut gb1).chain(&mut g2) {
                *g *= scale;
            }
            t += 1;
            a1.step(&mut head.w1, &g1, s.learning_rate, s.l2, t);
            ab1.step(&mut head.b1, &gb1, s.learning_rate, 0.0, t);
            a2.step(&mut head.w2, &g2, s.learning_rate, s.l2, t);
            let mut b2 = [head.b2];
            ab2.step(&mut b2, &[gb2 * scale], s.learning_rate, 0.0, t);
            head.b2 = b2[0];
        }
    }
    head
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Fit the stacker — p = σ(bias + a·ngram + b·embed) — to (n-gram
/// logit, head logit, is attack) triples of a validation split, by
/// Newton's method on the log loss with a small ridge (deterministic).
/// Returns (a, b, bias).
#[allow(clippy::needless_range_loop, reason = "3×3 matrix arithmetic")]
pub fn fit_stacker(rows: &[(f32, f32, bool)]) -> (f32, f32, f32) {
    let mut w = [0.0f64; 3]; // a, b, bias
    let ridge = 1.0;
    for _ in 0..50 {
        let mut g = [0.0f64; 3];
        let mut hess = [[0.0f64; 3]; 3];
        for &(ng, em, y) in rows {
            let x = [f64::from(ng), f64::from(em), 1.0];
            let z = w[0] * x[0] + w[1] * x[1] + w[2];
            let p = 1.0 / (1.0 + (-z).exp());
            let r = p * (1.0 - p);
            for i in 0..3 {
                g[i] += (p - f64::from(u8::from(y))) * x[i];
                for j in 0..3 {
                    hess[i][j] += r * x[i] * x[j];
                }
            }
        }
        for i in 0..3 {
            g[i] += ridge * w[i];
            hess[i][i] += ridge;
        }
        let Some(step) = solve3(hess, g) else { break };
        for i in 0..3 {
            w[i] -= step[i];
        }
        if step.iter().all(|s| s.abs() < 1e-9) {
            break;
        }
    }
    (w[0] as f32, w[1] as f32, w[2] as f32)
}

/// One validation text as [`fit_band`] sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandRow {
    /// The n-gram model's probability.
    pub ngram: f32,
    /// The decision of the ensemble with the encoder run on it.
    pub full: bool,
    /// Whether it is an attack.
    pub label: bool,
    /// Its benign group (each held to `max_fpr` on its own).
    pub group: usize,
    /// Whether a named rule convicts it (then neither model matters).
    pub rule: bool,
}

/// Candidate bounds: at most this many n-gram probabilities (quantiles).
const BAND_CANDIDATES: usize = 200;

/// Fit the band `[lower, upper)` of n-gram probabilities inside which the
/// encoder runs (below: benign, at or above: attack without it), on one
/// channel's validation texts: the band holding the fewest texts such that
/// every benign group keeps at most `max_fpr` false positives and the
/// cascade loses at most `max_recall_loss` (a fraction of the attacks) of
/// the recall of the ensemble run on every text. Ties: the better recall,
/// then the fewer false positives. The band `[0, NEVER)` (encode
/// everything) always qualifies when the full ensemble does; with no
/// text qualifying at all, it is returned.
pub fn fit_band(rows: &[BandRow], max_fpr: f64, max_recall_loss: f64) -> (f32, f32) {
    let mut qs: Vec<f32> = rows.iter().map(|r| r.ngram).collect();
    qs.sort_by(f32::total_cmp);
    qs.dedup();
    let step = qs.len().div_ceil(BAND_CANDIDATES).max(1);
    let mut cuts: Vec<f32> = qs.iter().copied().step_by(step).collect();
    // Every n-gram probability is at most 1: NEVER is "no upper bound".
    cuts.push(crate::learned::NEVER);
    let lowers: Vec<f32> = std::iter::once(0.0).chain(cuts.iter().copied()).collect();
    let groups = rows.iter().map(|r| r.group + 1).max().unwrap_or(0);
    let mut benign = vec![0usize; groups];
    for r in rows.iter().filter(|r| !r.label) {
        benign[r.group] += 1;
    }
    let allowed: Vec<usize> = benign
        .iter()
        .map(|&n| (max_fpr * n as f64).floor() as usize)
        .collect();
    let attacks = rows.iter().filter(|r| r.label).count();
    let full_tp = rows.iter().filter(|r| r.label && r.full).count();
    let min_tp = full_tp.saturating_sub((max_recall_loss * attacks as f64).floor() as usize);
    // (inside, -tp, fp, lower, upper)
    let mut best: Option<(usize, isize, usize, f32, f32)> = None;
    let mut fp = vec![0usize; groups];
    for &lower in &lowers {
        for &upper in cuts.iter().filter(|&&u| u >= lower) {
            fp.fill(0);
            let (mut tp, mut inside) = (0usize, 0usize);
            for r in rows {
                let attack = if r.rule {
                    true
                } else if r.ngram < lower {
                    false
                } else if r.ngram >= upper {
                    true
                } else {
                    inside += 1;
                    r.full
                };
                if attack && r.label {
                    tp += 1;
                } else if attack {
                    fp[r.group] += 1;
                }
            }
            if tp < min_tp || fp.iter().zip(&allowed).any(|(f, a)| f > a) {
                continue;
            }
            let key = (inside, -(tp as isize), fp.iter().sum(), lower, upper);
            if best.is_none_or(|b| (key.0, key.1, key.2) < (b.0, b.1, b.2)) {
                best = Some(key);
            }
        }
    }
    best.map_or((0.0, crate::learned::NEVER), |b| (b.3, b.4))
}

/// Solve a 3×3 system by Gaussian elimination with partial pivoting.
#[allow(clippy::needless_range_loop, reason = "3×3 matrix arithmetic")]
fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> Option<[f64; 3]> {
    for c in 0..3 {
        let p = (c..3).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].abs() < 1e-12 {
            return None;
        }
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..3 {
            let f = a[r][c] / a[c][c];
            for k in c..3 {
                a[r][k] -= f * a[c][k];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = [0.0f64; 3];
    for r in (0..3).rev() {
        let s: f64 = (r + 1..3).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_stacker_learn_a_separable_problem() {
        let xs: Vec<Vec<f32>> = (0..200)
            .map(|i| {
                let s = if i % 2 == 0 { 1.0 } else { -1.0 };
                vec![s, 0.1 * (i % 7) as f32, -0.2 * s]
            })
            .collect();
        let ex: Vec<(&[f32], bool, f32)> = xs
            .iter()
            .enumerate()
            .map(|(i, x)| (x.as_slice(), i % 2 == 0, 1.0))
            .collect();
        for hidden in [0, 4] {
            let s = HeadSettings {
                hidden,
                epochs: 40,
                learning_rate: 0.05,
                ..HeadSettings::default()
            };
            let head = fit_head(&ex, s);
            assert_eq!(head, fit_head(&ex, s), "deterministic");
            for (x, y, _) in &ex {
                let z = head.logit(x).unwrap_or(0.0);
                assert_eq!(z > 0.0, *y, "hidden {hidden}");
            }
        }
        let rows: Vec<(f32, f32, bool)> = (0..100)
            .map(|i| {
                let y = i % 3 == 0;
                let e = if y { 2.0 } else { -2.0 };
                (0.3 * (i % 5) as f32 - 0.6, e + 0.1 * (i % 4) as f32, y)
            })
            .collect();
        let (a, b, _) = fit_stacker(&rows);
        assert!(b > a.abs(), "the informative score dominates: {a} {b}");
    }

    #[test]
    fn the_band_holds_only_texts_where_the_encoder_decides() {
        // 1,000 benign texts spread over [0, 0.5), 1,000 attacks over
        // [0.3, 1.0). The full ensemble gets everything right except two
        // benign texts; where the n-gram scores overlap ([0.3, 0.5)) only
        // the encoder can tell them apart.
        let mut rows = Vec::new();
        for i in 0..1000 {
            let q = 0.5 * i as f32 / 1000.0;
            rows.push(BandRow {
                ngram: q,
                full: i == 10 || i == 990,
                label: false,
                group: i % 2,
                rule: false,
            });
            rows.push(BandRow {
                ngram: 0.3 + 0.7 * i as f32 / 1000.0,
                full: true,
                label: true,
                group: 0,
                rule: i % 100 == 0,
            });
        }
        // One false positive allowed per group of 500.
        let (lower, upper) = fit_band(&rows, 0.002, 0.0);
        // (The attack at 0.3 is a named rule's: the band may start above it.)
        assert!(lower > 0.25 && lower <= 0.301, "{lower}");
        assert!((0.49..=0.55).contains(&upper), "{upper}");
        for group in 0..2 {
            let fp = rows
                .iter()
                .filter(|r| !r.label && r.group == group)
                .filter(|r| r.ngram >= lower && (r.ngram >= upper || r.full))
                .count();
            assert!(fp <= 1, "group {group}: {fp}");
        }
        let missed = rows
            .iter()
            .filter(|r| r.label && !r.rule)
            .filter(|r| r.ngram < lower || (r.ngram < upper && !r.full))
            .count();
        assert_eq!(missed, 0);
        // Allowed to lose 10 % of recall, the band shrinks.
        let (l2, u2) = fit_band(&rows, 0.002, 0.1);
        assert!(u2 - l2 < upper - lower, "{l2}..{u2} vs {lower}..{upper}");
        // An attack and a benign text the same to both models: no band
        // keeps both the recall and the false-positive budget, so the
        // encoder runs on everything.
        let bad = [
            BandRow {
                ngram: 0.9,
                full: true,
                label: true,
                group: 0,
                rule: false,
            },
            BandRow {
                ngram: 0.9,
                full: true,
                label: false,
                group: 0,
                rule: false,
            },
        ];
        assert_eq!(fit_band(&bad, 0.01, 0.0), (0.0, crate::learned::NEVER));
    }
}
