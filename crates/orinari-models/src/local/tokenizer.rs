//! The tokenizer, built from the GGUF's own vocabulary and merges.
//!
//! SmolLM2 declares the `smollm` pre-tokenizer: every digit is its own piece,
//! then the GPT-2 split rules apply, with no leading space added. candle's
//! GGUF tokenizer ignores that and falls back to plain GPT-2 rules, which
//! splits numbers differently from llama.cpp; here we build the pipeline
//! explicitly with the `tokenizers` crate. `tests/tokenizer.rs` checks the ids
//! against llama.cpp's on a varied set of strings.
//!
//! Two encoders share one vocabulary: [`Tokenizer::encode_trusted`] turns
//! special-token text such as `<|im_start|>` into the special token (used for
//! the chat template's own markup), while [`Tokenizer::encode_text`] treats it
//! as plain text (used for anything a client wrote), so a user cannot forge a
//! turn boundary.

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper};

use super::gguf::Vocabulary;

/// GGUF token type for control tokens (`<|im_start|>`, `<|endoftext|>`…).
const TOKEN_TYPE_CONTROL: i32 = 3;
/// GGUF token type for user-defined tokens, also matched as whole pieces.
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// Encodes text to token ids and token ids back to bytes.
pub struct Tokenizer {
    trusted: tokenizers::Tokenizer,
    text: tokenizers::Tokenizer,
    /// The raw bytes of each token; empty for control tokens.
    bytes: Vec<Vec<u8>>,
    /// Control tokens by id, with their names.
    controls: Vec<(u32, String)>,
    /// Ids that end a turn.
    pub(crate) end_of_turn: Vec<u32>,
}

impl Tokenizer {
    /// Build from the GGUF vocabulary.
    pub fn new(vocab: &Vocabulary) -> Result<Self, String> {
        let map: ahash::AHashMap<String, u32> = vocab
            .tokens
            .iter()
            .enumerate()
            .map(|(id, t)| (t.clone(), id as u32))
            .collect();
        let merges = vocab
            .merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| format!("malformed merge rule {m:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(map, merges)
            .build()
            .map_err(|e| format!("cannot build the BPE model: {e}"))?;
        let mut trusted = tokenizers::Tokenizer::new(bpe);
        let pre = Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
        ]);
        trusted.with_pre_tokenizer(Some(pre));
        let specials: Vec<AddedToken> = vocab
            .tokens
            .iter()
            .zip(&vocab.token_types)
            .filter(|(_, ty)| matches!(**ty, TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED))
            .map(|(t, _)| AddedToken::from(t.clone(), true))
            .collect();
        trusted.add_special_tokens(&specials);
        let mut text = trusted.clone();
        text.set_encode_special_tokens(true);

        let unicode_to_byte = byte_level_decoder();
        let bytes = vocab
            .tokens
            .iter()
            .zip(&vocab.token_types)
            .map(|(t, ty)| {
                if *ty == TOKEN_TYPE_CONTROL {
                    Vec::new()
                } else {
                    t.chars()
                        .map(|c| unicode_to_byte(c).unwrap_or(b'?'))
                        .collect()
                }
            })
            .collect();
        let controls = vocab
            .tokens
            .iter()
            .zip(&vocab.token_types)
            .enumerate()
            .filter(|(_, (_, ty))| **ty == TOKEN_TYPE_CONTROL)
            .map(|(id, (t, _))| (id as u32, t.clone()))
            .collect();
        let mut end_of_turn = vec![vocab.eos_token_id];
        if let Some(id) = vocab.tokens.iter().position(|t| t == "<|endoftext|>")
            && id as u32 != vocab.eos_token_id
        {
            end_of_turn.push(id as u32);
        }
        Ok(Self {
            trusted,
            text,
            bytes,
            controls,
            end_of_turn,
        })
    }

    /// Encode template markup: special-token text becomes special tokens.
    pub fn encode_trusted(&self, s: &str) -> Result<Vec<u32>, String> {
        encode(&self.trusted, s)
    }

    /// Encode client text: special-token text stays plain text.
    pub fn encode_text(&self, s: &str) -> Result<Vec<u32>, String> {
        encode(&self.text, s)
    }

    /// The bytes a token stands for (empty for control tokens).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// A token as `logprobs` show it: its text (lossy inside a character)
    /// and bytes, or a control token's name and no bytes.
    pub fn token_text(&self, id: u32) -> (String, Option<Vec<u8>>) {
        if let Some((_, name)) = self.controls.iter().find(|(c, _)| *c == id) {
            return (name.clone(), None);
        }
        let bytes = self.token_bytes(id).to_vec();
        (String::from_utf8_lossy(&bytes).into_owned(), Some(bytes))
    }

    /// The token that ends the assistant's turn.
    pub fn eos(&self) -> u32 {
        self.end_of_turn.first().copied().unwrap_or_default()
    }

    /// Every token's bytes for a byte trie: control tokens as `\xFF` and
    /// their name (`\xFF<|im_end|>`), so they never match text.
    pub fn trie_words(&self) -> Vec<Vec<u8>> {
        let mut words = self.bytes.clone();
        for (id, name) in &self.controls {
            if let Some(w) = words.get_mut(*id as usize) {
                *w = [&[0xFF], name.as_bytes()].concat();
            }
        }
        words
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }
}

fn encode(t: &tokenizers::Tokenizer, s: &str) -> Result<Vec<u32>, String> {
    t.encode_fast(s, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| format!("tokenization failed: {e}"))
}

/// GPT-2's reversible byte ↔ printable-char table, inverted: printable bytes
/// map to themselves, the other 68 byte values to U+0100 onwards in order.
fn byte_level_decoder() -> impl Fn(char) -> Option<u8> {
    let mut table = std::collections::HashMap::with_capacity(256);
    let mut next = 256u32;
    for b in 0u8..=255 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or('\u{FFFD}');
            next += 1;
            c
        };
        table.insert(c, b);
    }
    move |c| table.get(&c).copied()
}
