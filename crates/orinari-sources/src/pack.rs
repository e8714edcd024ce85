//! Packing: the fused passages that fit the model's context, best first,
//! under a token budget counted by the caller's tokenizer (this crate knows
//! no model's tokenizer).

use crate::fusion::RankedHit;

/// One passage chosen for the context.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    /// Its index in the fused list it was chosen from.
    pub index: usize,
    /// The passage's text as it goes into the context (cut at a word
    /// boundary when only part of it fit).
    pub text: String,
    /// Whether `text` is a cut-down prefix of the passage.
    pub truncated: bool,
    /// Tokens it costs, its fixed overhead included.
    pub tokens: usize,
}

/// The smallest remainder worth filling with the start of a passage that
/// does not fit whole.
pub const MIN_PARTIAL_TOKENS: usize = 32;

/// Choose passages in rank order while they fit `budget` tokens. Each costs
/// `count(title + "\n" + text) + overhead` (`overhead`: the caller's fence
/// and numbering around each passage). A passage that does not fit is
/// skipped for smaller ones after it; the first that does not fit while at
/// least [`MIN_PARTIAL_TOKENS`] remain goes in cut at a word boundary.
pub fn pack(
    hits: &[RankedHit],
    budget: usize,
    overhead: usize,
    count: &dyn Fn(&str) -> usize,
) -> Vec<Packed> {
    let mut out = Vec::new();
    let mut left = budget;
    let mut cut_one = false;
    for (index, h) in hits.iter().enumerate() {
        if left <= overhead {
            break;
        }
        let cost = |text: &str| count(&format!("{}\n{}", h.hit.title, text)) + overhead;
        let whole = cost(&h.hit.text);
        if whole <= left {
            left -= whole;
            out.push(Packed {
                index,
                text: h.hit.text.clone(),
                truncated: false,
                tokens: whole,
            });
        } else if !cut_one && left >= MIN_PARTIAL_TOKENS + overhead {
            cut_one = true;
            if let Some((text, tokens)) = longest_prefix(&h.hit.text, left, &cost) {
                left -= tokens;
                out.push(Packed {
                    index,
                    text,
                    truncated: true,
                    tokens,
                });
            }
        }
    }
    out
}

/// The longest word-boundary prefix of `text` whose cost fits `left`
/// (binary search over word ends; cost grows with length).
fn longest_prefix(
    text: &str,
    left: usize,
    cost: &dyn Fn(&str) -> usize,
) -> Option<(String, usize)> {
    let ends: Vec<usize> = text
        .char_indices()
        .filter(|(_, c)| c.is_whitespace())
        .map(|(i, _)| i)
        .collect();
    let (mut lo, mut hi) = (0usize, ends.len());
    let mut best = None;
    while lo < hi {
        let mid = (lo + hi) / 2;
        let prefix = text[..ends[mid]].trim_end();
        let candidate = format!("{prefix} …");
        let c = cost(&candidate);
        if c <= left && !prefix.is_empty() {
            best = Some((candidate, c));
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::Hit;

    fn ranked(text: &str) -> RankedHit {
        RankedHit {
            source: "s".into(),
            hit: Hit {
                document: "d".into(),
                title: "T".into(),
                locator: String::new(),
                url: None,
                text: text.into(),
                score: 1.0,
            },
            score: 1.0,
        }
    }

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    #[test]
    fn fills_in_rank_order_and_skips_what_does_not_fit() {
        let hits = [
            ranked(&"a ".repeat(50)),  // 51 with the title, 53 with overhead
            ranked(&"b ".repeat(100)), // does not fit in the 27 left
            ranked(&"c ".repeat(20)),  // 23: fits
        ];
        let p = pack(&hits, 80, 2, &words);
        assert_eq!(p.iter().map(|p| p.index).collect::<Vec<_>>(), [0, 2]);
        assert!(p.iter().all(|p| !p.truncated));
        assert_eq!(p[0].tokens, 53);
        assert_eq!(p[1].tokens, 23);
    }

    #[test]
    fn the_first_that_does_not_fit_is_cut_to_fill_the_rest() {
        let hits = [ranked(&"a ".repeat(50)), ranked(&"b ".repeat(100))];
        let p = pack(&hits, 100, 2, &words);
        assert_eq!(p.len(), 2);
        assert!(p[1].truncated);
        assert!(p[1].text.starts_with("b b") && p[1].text.ends_with(" …"));
        assert_eq!(p[0].tokens + p[1].tokens, 100);
    }

    #[test]
    fn never_exceeds_the_budget() {
        let hits: Vec<RankedHit> = (1..40).map(|n| ranked(&"w ".repeat(n * 3))).collect();
        for budget in [0, 1, 10, 33, 100, 500, 5000] {
            let p = pack(&hits, budget, 5, &words);
            let used: usize = p.iter().map(|p| p.tokens).sum();
            assert!(used <= budget, "{budget}: {used}");
            for item in &p {
                assert_eq!(item.tokens, words(&format!("T\n{}", item.text)) + 5);
            }
        }
    }

    #[test]
    fn a_small_remainder_is_not_filled_with_a_stub() {
        let hits = [ranked(&"a ".repeat(90)), ranked(&"b ".repeat(90))];
        let p = pack(&hits, 100, 0, &words);
        assert_eq!(p.len(), 1, "9 tokens left is under MIN_PARTIAL_TOKENS");
    }
}
