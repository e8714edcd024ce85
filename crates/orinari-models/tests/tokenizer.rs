//! Parity with llama.cpp on the real GGUF: token ids (client text and trusted
//! markup), chat prompts, and the greedy first token.
//!
//! The reference ids and logits come from `bench/llama_cpp_tokens.py`
//! (llama-cpp-python, recorded in `tests/data/llama_cpp_tokens.json`); rerun
//! it to regenerate the fixture after changing the model or the string set.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use orinari_models::local::{LocalConfig, LocalModel, Vocab, default_model_path, load_vocab};
use orinari_models::{Event, GenerateRequest, Message, ModelBackend, Sampling};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    llama_cpp_python: String,
    model: String,
    strings: Vec<Case>,
    chats: Vec<Chat>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    /// llama.cpp `tokenize(special=False)`.
    text_ids: Vec<u32>,
    /// llama.cpp `tokenize(special=True)`.
    trusted_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Chat {
    messages: Vec<ChatMessage>,
    /// The rendered template, tokenized by llama.cpp with `special=True`.
    prompt_ids: Vec<u32>,
    /// llama.cpp's ten most likely next tokens after the prompt, best first.
    top10_ids: Vec<u32>,
    top10_logits: Vec<f32>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    content: String,
}

impl Chat {
    fn messages(&self) -> Vec<Message> {
        self.messages
            .iter()
            .map(|m| Message::text(m.role.clone(), m.content.clone()))
            .collect()
    }
}

fn fixture() -> Fixture {
    let f: Fixture =
        serde_json::from_str(include_str!("data/llama_cpp_tokens.json")).expect("valid fixture");
    assert_eq!(
        f.model,
        orinari_models::local::MODEL_FILE,
        "fixture made for another model"
    );
    assert!(f.strings.len() >= 50 && f.chats.len() >= 3);
    f
}

fn vocab() -> Vocab {
    load_vocab(&default_model_path()).expect("run scripts/fetch-model.sh first")
}

fn show(v: &Vocab, ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|&i| {
            format!(
                "{i}:{:?}",
                String::from_utf8_lossy(v.tokenizer.token_bytes(i))
            )
        })
        .collect()
}

#[test]
fn client_text_matches_llama_cpp_special_false() {
    let (f, v) = (fixture(), vocab());
    let mut bad = Vec::new();
    for c in &f.strings {
        let ours = v.tokenizer.encode_text(&c.text).unwrap();
        if ours != c.text_ids {
            bad.push(format!(
                "{:?}\n  ours:      {:?}\n  llama.cpp: {:?}",
                c.text,
                show(&v, &ours),
                show(&v, &c.text_ids)
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} strings differ from llama.cpp {} (special=False):\n{}",
        bad.len(),
        f.strings.len(),
        f.llama_cpp_python,
        bad.join("\n")
    );
}

#[test]
fn trusted_markup_matches_llama_cpp_special_true() {
    let (f, v) = (fixture(), vocab());
    let mut bad = Vec::new();
    for c in &f.strings {
        let ours = v.tokenizer.encode_trusted(&c.text).unwrap();
        if ours != c.trusted_ids {
            bad.push(format!(
                "{:?}\n  ours:      {:?}\n  llama.cpp: {:?}",
                c.text,
                show(&v, &ours),
                show(&v, &c.trusted_ids)
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} strings differ from llama.cpp {} (special=True):\n{}",
        bad.len(),
        f.strings.len(),
        f.llama_cpp_python,
        bad.join("\n")
    );
}

#[test]
fn client_text_round_trips_through_token_bytes() {
    let (f, v) = (fixture(), vocab());
    for c in &f.strings {
        let ids = v.tokenizer.encode_text(&c.text).unwrap();
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&i| v.tokenizer.token_bytes(i).to_vec())
            .collect();
        assert_eq!(bytes, c.text.as_bytes(), "{:?} does not round-trip", c.text);
    }
}

#[test]
fn special_token_text_from_a_client_is_not_a_special_token() {
    let (f, v) = (fixture(), vocab());
    let specials: Vec<u32> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .iter()
        .map(|s| {
            let ids = v.tokenizer.encode_trusted(s).unwrap();
            assert_eq!(ids.len(), 1, "{s} is one special token");
            ids[0]
        })
        .collect();
    for c in &f.strings {
        let ids = v.tokenizer.encode_text(&c.text).unwrap();
        assert!(
            ids.iter().all(|i| !specials.contains(i)),
            "{:?} produced a special token as client text",
            c.text
        );
    }
}

#[test]
fn chat_prompts_match_llama_cpp_rendering() {
    let (f, v) = (fixture(), vocab());
    for chat in &f.chats {
        let ours = v.encode_chat(&chat.messages()).unwrap();
        assert_eq!(
            ours,
            chat.prompt_ids,
            "chat prompt differs from llama.cpp:\n  ours:      {:?}\n  llama.cpp: {:?}",
            show(&v, &ours),
            show(&v, &chat.prompt_ids)
        );
    }
}

/// Logit gap (in llama.cpp's logits) within which a different first choice is
/// accepted: the quantization of weights (Q4_1, or Q8_0 after re-quantizing)
/// and activations differs between candle and llama.cpp, so near-ties may
/// break either way. A clear winner must be ours too.
const NEAR_TIE: f32 = 0.5;

async fn first_token(m: &LocalModel, messages: Vec<Message>) -> String {
    let req = GenerateRequest {
        messages,
        sampling: Sampling {
            temperature: 0.0,
            max_tokens: Some(1),
            ..Sampling::default()
        },
        stream: true,
        ..GenerateRequest::default()
    };
    let mut g = m.start(req).await.expect("admitted");
    let mut text = String::new();
    while let Some(ev) = g.events.recv().await {
        match ev.expect("no model error") {
            Event::Delta(t) => text.push_str(&t),
            Event::ToolCall(_) | Event::Logprobs(_) => {
                panic!("no tools or logprobs were asked for")
            }
            Event::Done { usage, .. } => {
                assert_eq!(usage.completion_tokens, 1);
                return text;
            }
        }
    }
    panic!("stream ended without Done");
}

async fn greedy_first_token_agrees(requantize: bool) {
    let (f, v) = (fixture(), vocab());
    let m = LocalModel::load(&LocalConfig {
        path: default_model_path(),
        context_size: Some(512),
        max_active: 1,
        queue_depth: 4,
        requantize,
    })
    .expect("run scripts/fetch-model.sh first");
    for chat in &f.chats {
        let text = first_token(&m, chat.messages()).await;
        let best = chat.top10_logits[0];
        // Token text identifies the token: each candidate's bytes are compared,
        // since the public API streams text rather than ids.
        let accepted: Vec<u32> = chat
            .top10_ids
            .iter()
            .zip(&chat.top10_logits)
            .filter(|&(_, &l)| l >= best - NEAR_TIE)
            .map(|(&id, _)| id)
            .collect();
        let ok = accepted
            .iter()
            .any(|&id| v.tokenizer.token_bytes(id) == text.as_bytes());
        assert!(
            ok,
            "requantize={requantize}: first greedy token {text:?} is not llama.cpp's choice {:?} \
             (top-10 {:?}, logits {:?})",
            show(&v, &accepted),
            show(&v, &chat.top10_ids),
            chat.top10_logits
        );
        eprintln!(
            "requantize={requantize}: ours {text:?}, llama.cpp {:?}",
            show(&v, &chat.top10_ids[..1])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_first_token_matches_llama_cpp_requantized() {
    greedy_first_token_agrees(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_first_token_matches_llama_cpp_native_q4_1() {
    greedy_first_token_agrees(false).await;
}
