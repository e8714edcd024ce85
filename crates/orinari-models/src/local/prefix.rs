//! The prefix KV cache: keys and values of recent prompts, kept in memory
//! under a byte budget (least recently used first out) and matched by token
//! prefix, so that turn N of a conversation prefills only what turn N-1's
//! prompt did not already hold.
//!
//! Reuse is exact: a request answered from the cache computes the same
//! logits, bit for bit, as the same request on an empty cache, so greedy
//! answers never depend on what ran before. That holds because only whole
//! prefill chunks are kept and reused. The engine feeds a prompt in chunks
//! of [`PREFILL_CHUNK`] tokens starting at position 0, and a chunk's keys and
//! values depend only on the tokens up to its end and on the chunk's shape
//! (matrix kernels may sum in a different order for a different number of
//! rows, so a token computed alone while generating, or in a shorter last
//! chunk, can differ in the last bits from the same token inside a full
//! chunk). So an entry holds the full chunks of a finished sequence's prompt,
//! and a new prompt resumes at a chunk boundary: every chunk it then computes
//! has the shape an uncached run would give it.
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

use super::engine::PREFILL_CHUNK;
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
        let reused = chunk_floor(common.min(limit));
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

    /// Keep the full prefill chunks of a finished sequence: `tokens` are
    /// the ones it fed, of which the first `prefilled` were its prompt
    /// (generated tokens, computed one by one, are not kept). Entries that
    /// are prefixes of it are dropped (it supersedes them); the least
    /// recently used go when over budget.
    pub fn insert(
        &mut self,
        model: &Llama,
        mut tokens: Vec<u32>,
        mut cache: KvCache,
        prefilled: usize,
    ) {
        let keep = chunk_floor(prefilled.min(cache.len()));
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

/// `n` rounded down to whole prefill chunks.
fn chunk_floor(n: usize) -> usize {
    n - n % PREFILL_CHUNK
}

/// Length of the common prefix of two token sequences.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::{PREFILL_CHUNK, chunk_floor, common_prefix};

    #[test]
    fn reuse_stops_at_a_chunk_boundary() {
        assert_eq!(chunk_floor(0), 0);
        assert_eq!(chunk_floor(PREFILL_CHUNK - 1), 0);
        assert_eq!(chunk_floor(PREFILL_CHUNK), PREFILL_CHUNK);
        assert_eq!(chunk_floor(3 * PREFILL_CHUNK + 5), 3 * PREFILL_CHUNK);
    }

    #[test]
    fn common_prefix_counts_equal_leading_tokens() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        assert_eq!(common_prefix(&[5], &[1]), 0);
    }
}
