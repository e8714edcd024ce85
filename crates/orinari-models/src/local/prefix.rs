//! The prefix KV cache: keys and values of recent prompts, kept in memory
//! under a byte budget (least recently used first out) and matched by token
//! prefix, so that turn N of a conversation prefills only what turn N-1's
//! prompt did not already hold.
//!
//! Reuse is exact: a request answered from the cache computes the same
//! logits, bit for bit, as the same request on an empty cache, so greedy
//! answers never depend on what ran before. That holds because the forward
//! pass computes every row the same way however it is grouped (see
//! the `llama` module): a position's keys and values are the same bits
//! whether its token was fed alone while generating or inside a prompt
//! chunk. So an entry holds every position a finished sequence fed — its
//! prompt and the answer it generated — and the next turn of a conversation,
//! which sends that answer back as history, recomputes only what is new:
//! the end of the answer's turn and the next question.
//!
//! A new prompt reuses the entry sharing its longest common prefix:
//! - a continuation (the prompt starts with the whole entry: the next turn
//!   of the same conversation) takes the entry's cache itself, no copy;
//! - a partial match (a shared system prompt or document) copies the common
//!   chunks into a fresh cache and leaves the entry for others.
//!
//! The last prompt token is always fed again: its logits choose the first
//! new token. Entries live in this process's memory only: nothing is written
//! to disk, logged or shared, and they are dropped with the model.

use super::llama::{KvCache, Llama};

/// Positions of free room an entry keeps so that the next turn's prompt
/// usually fits without growing (and copying) the cache.
const HEADROOM: usize = 256;

struct Entry {
    tokens: Vec<u32>,
    cache: KvCache,
    last_used: u64,
}

/// A reused prefix handed to a new sequence.
pub struct Hit {
    /// The cache, holding exactly `reused` positions.
    pub cache: KvCache,
    /// Prompt tokens that need not be fed again.
    pub reused: usize,
}

/// Recent sequences' KV caches, bounded in bytes.
pub struct PrefixCache {
    budget: usize,
    used: usize,
    clock: u64,
    entries: Vec<Entry>,
}

impl PrefixCache {
    /// An empty cache that holds at most `budget` bytes (0 turns it off).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            used: 0,
            clock: 0,
            entries: Vec::new(),
        }
    }

    /// Bytes held by the entries.
    pub fn bytes(&self) -> usize {
        self.used
    }

    /// The longest reusable prefix of `prompt`, if any entry shares one.
    /// `capacity` is the room a copied cache gets (the prompt's length is a
    /// good value).
    pub fn lookup(&mut self, model: &Llama, prompt: &[u32], capacity: usize) -> Option<Hit> {
        let limit = prompt.len().saturating_sub(1);
        let (best, common) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt)))
            .max_by_key(|&(_, n)| n)?;
        let reused = common.min(limit);
        if reused == 0 {
            return None;
        }
        self.clock += 1;
        if common == self.entries[best].tokens.len() {
            let entry = self.entries.swap_remove(best);
            self.used -= entry.cache.bytes();
            let mut cache = entry.cache;
            cache.truncate(reused);
            return Some(Hit { cache, reused });
        }
        let entry = &mut self.entries[best];
        entry.last_used = self.clock;
        // A failed copy (out of memory) is only a miss.
        let cache = model
            .copy_prefix(&entry.cache, reused, capacity.max(reused))
            .ok()?;
        Some(Hit { cache, reused })
    }

    /// Keep what a finished sequence fed: the first `fed` of `tokens` (its
    /// prompt, then the tokens it generated; the last one sampled was never
    /// fed) are in `cache`. Entries that are prefixes of it are dropped (it
    /// supersedes them); the least recently used go when over budget.
    pub fn insert(&mut self, model: &Llama, mut tokens: Vec<u32>, mut cache: KvCache, fed: usize) {
        let keep = fed.min(cache.len());
        tokens.truncate(keep);
        cache.truncate(keep);
        if self.budget == 0 || tokens.is_empty() {
            return;
        }
        self.clock += 1;
        // Already known: an entry that starts with all of these tokens.
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.tokens.len() >= tokens.len() && e.tokens.starts_with(&tokens))
        {
            e.last_used = self.clock;
            return;
        }
        let mut i = 0;
        while i < self.entries.len() {
            if tokens.starts_with(&self.entries[i].tokens) {
                let gone = self.entries.swap_remove(i);
                self.used -= gone.cache.bytes();
            } else {
                i += 1;
            }
        }
        if model.compact(&mut cache, HEADROOM).is_err() || cache.bytes() > self.budget {
            return;
        }
        self.used += cache.bytes();
        self.entries.push(Entry {
            tokens,
            cache,
            last_used: self.clock,
        });
        while self.used > self.budget {
            let Some((oldest, _)) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
            else {
                break;
            };
            let gone = self.entries.swap_remove(oldest);
            self.used -= gone.cache.bytes();
        }
    }
}

/// Length of the common prefix of two token sequences.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::common_prefix;

    #[test]
    fn common_prefix_counts_equal_leading_tokens() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        assert_eq!(common_prefix(&[5], &[1]), 0);
    }
}
