//! Reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009) across
//! the sources' ranked lists, with de-duplication: a passage found twice
//! (by two sources, or twice by one) is one result whose fused score is
//! the sum of its contributions, as RRF defines for an item in several lists.

use std::collections::HashMap;
use std::sync::Arc;

use crate::connector::Hit;

/// RRF's constant `k`: 60, the paper's value, damps the weight of the very
/// first ranks so that no single list dominates.
pub const RRF_K: f64 = 60.0;

/// One fused result.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedHit {
    /// The source it came from (the first that found it, in list order).
    pub source: Arc<str>,
    /// The passage.
    pub hit: Hit,
    /// Its fused score: Σ 1 / (RRF_K + rank) over the lists that hold it.
    pub score: f64,
}

/// Fuse ranked lists (best first within each) into one list, best first.
/// Ties keep the order of the lists and of their ranks.
pub fn fuse(lists: Vec<(Arc<str>, Vec<Hit>)>) -> Vec<RankedHit> {
    let mut by_key: HashMap<u64, usize> = HashMap::new();
    let mut fused: Vec<(RankedHit, usize)> = Vec::new();
    for (source, hits) in lists {
        for (rank, hit) in hits.into_iter().enumerate() {
            let contribution = 1.0 / (RRF_K + rank as f64 + 1.0);
            let key = dedup_key(&hit.text);
            match by_key.get(&key) {
                Some(&i) => fused[i].0.score += contribution,
                None => {
                    by_key.insert(key, fused.len());
                    let order = fused.len();
                    fused.push((
                        RankedHit {
                            source: source.clone(),
                            hit,
                            score: contribution,
                        },
                        order,
                    ));
                }
            }
        }
    }
    fused.sort_by(|a, b| b.0.score.total_cmp(&a.0.score).then(a.1.cmp(&b.1)));
    fused.into_iter().map(|(h, _)| h).collect()
}

/// Two passages are the same when their words are, regardless of case,
/// spacing and punctuation.
fn dedup_key(text: &str) -> u64 {
    let mut normal = String::with_capacity(text.len());
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if !normal.is_empty() {
            normal.push(' ');
        }
        normal.extend(word.chars().flat_map(char::to_lowercase));
    }
    xxhash_rust::xxh3::xxh3_64(normal.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(doc: &str, text: &str) -> Hit {
        Hit {
            document: doc.into(),
            title: doc.into(),
            locator: String::new(),
            url: None,
            text: text.into(),
            score: 1.0,
        }
    }

    #[test]
    fn rrf_rewards_agreement_between_lists() {
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        let fused = fuse(vec![
            (
                a.clone(),
                vec![
                    hit("x", "only in a"),
                    hit("shared", "Both lists hold this."),
                ],
            ),
            (
                b.clone(),
                vec![
                    hit("y", "only in b"),
                    hit("shared2", "both lists  hold THIS"),
                ],
            ),
        ]);
        // The shared passage ranks 2nd in both: 2/(60+2) beats 1/(60+1).
        assert_eq!(fused.len(), 3, "the duplicate is merged");
        assert_eq!(fused[0].hit.document, "shared");
        assert_eq!(&*fused[0].source, "a");
        assert!((fused[0].score - 2.0 / 62.0).abs() < 1e-12);
        // Equal scores keep list order: a's first, then b's first.
        assert_eq!(fused[1].hit.document, "x");
        assert_eq!(fused[2].hit.document, "y");
        assert!((fused[1].score - 1.0 / 61.0).abs() < 1e-12);
    }

    #[test]
    fn ranks_not_raw_scores_decide() {
        let mut loud = hit("loud", "first of a");
        loud.score = 1000.0;
        let mut quiet = hit("quiet", "first of b");
        quiet.score = 0.001;
        let fused = fuse(vec![
            ("a".into(), vec![hit("a2", "zero"), loud]),
            ("b".into(), vec![quiet]),
        ]);
        assert_eq!(fused[0].hit.document, "a2");
        assert_eq!(fused[1].hit.document, "quiet");
        assert_eq!(fused[2].hit.document, "loud");
    }

    #[test]
    fn duplicates_within_one_list_are_merged() {
        let fused = fuse(vec![(
            "a".into(),
            vec![hit("1", "same"), hit("2", "Same!")],
        )]);
        assert_eq!(fused.len(), 1);
        assert_eq!(fused[0].hit.document, "1");
    }

    #[test]
    fn nothing_in_nothing_out() {
        assert!(fuse(vec![]).is_empty());
        assert!(fuse(vec![("a".into(), vec![])]).is_empty());
    }
}
