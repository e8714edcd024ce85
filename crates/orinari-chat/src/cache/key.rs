//! Which requests the response cache may answer, and the key of one: the
//! SHA-256 of a secret generated in memory at start followed by a canonical
//! serialisation of the normalised request.
//!
//! The serialisation is length-prefixed (every string and list carries its
//! length, every optional field a presence byte), so two different
//! requests never serialise alike. It covers everything that changes the
//! answer: the model name, whether it streams (a stream is replayed in its
//! own chunks), every message as the backend gets it — the grounded
//! model's retrieved passages included, so an answer grounded on other
//! passages is another entry —, every sampling parameter and every option
//! (response format, log probabilities, penalties, biases, reasoning
//! effort, prediction, provider hints). It never covers the caller: the API
//! key, the client address and the caller's limits change nothing in the
//! answer. The secret makes the key useless outside this process (a
//! Redis key tells nothing about the conversation, and a guessed prompt
//! cannot be confirmed from it).

use orinari_api::{ChatMessage, ContentPart, Options};
use orinari_models::Sampling;
use sha2::{Digest, Sha256};

use crate::ChatRequest;

/// Format version of the serialisation, hashed first.
const VERSION: &[u8] = b"orinari-response-cache-1";

/// Whether the cache may answer or store `request`: deterministic
/// (temperature 0, or a seed), offering no tools, and not opted out.
///
/// Requests that offer `tools` always bypass the cache: an answer may be a
/// tool call, which tells the client to act (possibly with side effects),
/// and a replayed call would make it act again on a decision the model
/// never took for this turn. Tool *results* in the messages are part of
/// the key, so a later turn without `tools` is cacheable.
pub(crate) fn cacheable(request: &ChatRequest) -> bool {
    let s = &request.sampling;
    let deterministic = s.temperature <= 0.0 || s.seed.is_some();
    deterministic && request.options.tools.is_empty() && request.cache != Some(false)
}

/// The key of `request` (after retrieval joined its passages).
pub(crate) fn key(secret: &[u8; 32], request: &ChatRequest) -> [u8; 32] {
    let mut c = Canon(Sha256::new());
    c.0.update(secret);
    c.bytes(VERSION);
    c.str(&request.model);
    c.flag(request.stream);
    c.len(request.messages.len());
    for m in &request.messages {
        message(&mut c, m);
    }
    sampling(&mut c, &request.sampling);
    options(&mut c, &request.options);
    c.0.finalize().into()
}

fn message(c: &mut Canon, m: &ChatMessage) {
    c.str(m.role.as_str());
    c.str(&m.content);
    c.len(m.parts.len());
    for p in &m.parts {
        match p {
            ContentPart::Text(t) => {
                c.bytes(b"t");
                c.str(t);
            }
            ContentPart::Image { url, detail } => {
                c.bytes(b"i");
                c.str(url);
                c.opt_str(detail.as_deref());
            }
        }
    }
    c.opt_str(m.name.as_deref());
    c.len(m.tool_calls.len());
    for call in &m.tool_calls {
        c.str(&call.id);
        c.str(&call.name);
        c.str(&call.arguments);
    }
    c.opt_str(m.tool_call_id.as_deref());
}

fn sampling(c: &mut Canon, s: &Sampling) {
    // Greedy decoding ignores top_p; any seed or none, temperature 0 is
    // the same answer only when no seed is given, so both stay in the key.
    c.f32(s.temperature);
    c.f32(s.top_p);
    c.opt_u64(s.seed);
    c.opt_u64(s.max_tokens.map(u64::from));
    c.len(s.stop.len());
    for stop in &s.stop {
        c.str(stop);
    }
}

fn options(c: &mut Canon, o: &Options) {
    // Tools bypass the cache (see `cacheable`); the rest is each field in
    // order. JSON values serialise with serde_json, whose object keys come
    // in one order for one input; two spellings of one schema are two
    // entries, never one wrong one.
    c.opt_str(o.tool_choice.as_ref().map(|t| format!("{t:?}")).as_deref());
    c.opt_u64(o.parallel_tool_calls.map(u64::from));
    c.opt_str(
        o.response_format
            .as_ref()
            .map(|f| format!("{f:?}"))
            .as_deref(),
    );
    c.flag(o.logprobs);
    c.opt_u64(o.top_logprobs.map(u64::from));
    c.opt_f32(o.frequency_penalty);
    c.opt_f32(o.presence_penalty);
    c.opt_str(o.logit_bias.as_ref().map(json).as_deref());
    c.opt_str(o.reasoning_effort.as_deref());
    c.opt_str(o.prediction.as_ref().map(json).as_deref());
    c.len(o.hints.len());
    for (name, value) in &o.hints {
        c.str(name);
        c.str(&json(value));
    }
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The hash being fed, one length-prefixed field at a time.
struct Canon(Sha256);

impl Canon {
    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.update(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn len(&mut self, n: usize) {
        self.0.update((n as u64).to_le_bytes());
    }
    fn flag(&mut self, b: bool) {
        self.0.update([u8::from(b)]);
    }
    fn f32(&mut self, x: f32) {
        self.0.update(x.to_bits().to_le_bytes());
    }
    fn opt_f32(&mut self, x: Option<f32>) {
        self.flag(x.is_some());
        if let Some(x) = x {
            self.f32(x);
        }
    }
    fn opt_u64(&mut self, x: Option<u64>) {
        self.flag(x.is_some());
        if let Some(x) = x {
            self.0.update(x.to_le_bytes());
        }
    }
    fn opt_str(&mut self, s: Option<&str>) {
        self.flag(s.is_some());
        if let Some(s) = s {
            self.str(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orinari_api::Role;

    fn request(content: &str) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: vec![ChatMessage::text(Role::User, content)],
            sampling: Sampling {
                temperature: 0.0,
                ..Sampling::default()
            },
            stream: false,
            options: Options::default(),
            size: content.len(),
            fields: None,
            sources: None,
            cache: None,
        }
    }

    #[test]
    fn only_deterministic_requests_without_tools_or_opt_out_are_cacheable() {
        let greedy = request("hi");
        assert!(cacheable(&greedy));
        let mut sampled = request("hi");
        sampled.sampling.temperature = 0.7;
        assert!(!cacheable(&sampled));
        sampled.sampling.seed = Some(1);
        assert!(cacheable(&sampled));
        let mut off = request("hi");
        off.cache = Some(false);
        assert!(!cacheable(&off));
        off.cache = Some(true);
        assert!(cacheable(&off));
        let mut tools = request("hi");
        tools.options.tools.push(orinari_api::Tool {
            name: "f".into(),
            description: None,
            parameters: None,
            strict: None,
        });
        assert!(!cacheable(&tools));
    }

    #[test]
    fn the_key_changes_with_what_changes_the_answer_and_with_the_secret() {
        let secret = [7; 32];
        let base = key(&secret, &request("hi"));
        assert_eq!(base, key(&secret, &request("hi")));
        assert_ne!(base, key(&[8; 32], &request("hi")));
        let mut changed: Vec<ChatRequest> = Vec::new();
        changed.push(request("hi!"));
        let mut r = request("hi");
        r.stream = true;
        changed.push(r);
        let mut r = request("hi");
        r.model = "n".into();
        changed.push(r);
        let mut r = request("hi");
        r.sampling.max_tokens = Some(3);
        changed.push(r);
        let mut r = request("hi");
        r.sampling.seed = Some(0);
        changed.push(r);
        let mut r = request("hi");
        r.options.logprobs = true;
        changed.push(r);
        let mut r = request("hi");
        r.messages
            .insert(0, ChatMessage::text(Role::System, "passages"));
        changed.push(r);
        // Length prefixes: moving text between fields is another request.
        let mut a = request("ab");
        a.messages.push(ChatMessage::text(Role::User, "c"));
        let mut b = request("a");
        b.messages.push(ChatMessage::text(Role::User, "bc"));
        assert_ne!(key(&secret, &a), key(&secret, &b));
        for (i, r) in changed.iter().enumerate() {
            assert_ne!(base, key(&secret, r), "change {i}");
        }
        // What only sizes the estimate or names fields is not in it.
        let mut r = request("hi");
        r.size = 999;
        r.cache = Some(true);
        assert_eq!(base, key(&secret, &r));
    }
}
