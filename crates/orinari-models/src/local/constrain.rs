//! Structured output for the embedded model, by constrained decoding: JSON
//! (any object, or following a JSON Schema) and tool calls.
//!
//! A request's shape ([`Shape`]) becomes a grammar; llguidance compiles it
//! into a token-level parser over the model's own vocabulary, and at every
//! step the engine masks out each token that could not continue a valid
//! answer before it samples ([`Constraint::mask`]). The answer therefore
//! always parses, and validates against the schema as far as llguidance
//! supports the schema's keywords (all of OpenAI's strict subset; with
//! `strict` unset, keywords it does not know are ignored instead of refused).
//!
//! Why llguidance: it is the structured-output engine of llama.cpp
//! (`--llguidance`), vLLM and SGLang, compiles JSON Schema and Lark grammars
//! (nested and recursive schemas, `$ref`, `anyOf`) lazily instead of building
//! every automaton state up front as regex-index approaches do (seconds for
//! a large schema), bounds the work of each step (its "fuel" limits, so a
//! hostile schema cannot stall the inference thread), and depends on no
//! tokenizer or HTTP stack (default features off: no rayon, no referencing).
//!
//! Tool calls use SmolLM2's function-calling format: the tools are listed in
//! the system turn as `<tools>[…]</tools>`, and the model answers
//! `<tool_call>[{"name": …, "arguments": {…}}]</tool_call>`. The grammar
//! fixes the names to the declared tools and the arguments to each tool's
//! parameter schema; with `tool_choice: "auto"` the answer is either such a
//! call or text that does not start with `<`.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::{Value, json};
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenizerEnv};

use super::tokenizer::Tokenizer;
use crate::{Message, ModelError, Options, ResponseFormat, Tool, ToolCall, ToolChoice};

/// Added to the logits of closing tokens while wrapping up: far above any
/// logit the model gives, so one of them is chosen whenever one is allowed.
const WRAP_UP_BONUS: f32 = 1.0e4;

/// Opens a tool call in SmolLM2's format.
const CALL_OPEN: &str = "<tool_call>";
/// Closes it.
const CALL_CLOSE: &str = "</tool_call>";

/// The grammar compiler for one vocabulary, built once per model.
pub struct Grammars {
    factory: ParserFactory,
    /// Tokens that close what is open (see [`Closers`]).
    closers: Arc<Closers>,
    eos: u32,
}

/// The vocabulary as llguidance sees it: each token's bytes (control tokens
/// as `\xFF<|name|>`), and the model's own tokenizer for text.
struct Env {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        std::str::from_utf8(s)
            .ok()
            .and_then(|text| self.tokenizer.encode_text(text).ok())
            .unwrap_or_else(|| self.trie.greedy_tokenize(s))
    }
}

impl Grammars {
    /// Index the vocabulary (once per model, at the first structured
    /// request).
    pub fn new(tokenizer: Arc<Tokenizer>) -> Result<Self, String> {
        let words = tokenizer.trie_words();
        let eos = tokenizer.eos();
        let closers = Closers::of(&words);
        let info = TokRxInfo {
            vocab_size: words.len() as u32,
            tok_eos: eos,
            tok_bos: None,
            tok_pad: None,
            tok_unk: None,
            tok_end_of_turn: Some(eos),
        };
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(Env { trie, tokenizer });
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| format!("cannot index the vocabulary for constrained decoding: {e}"))?;
        // Warnings name parts of a client's schema: never on stderr.
        factory.quiet();
        Ok(Self {
            factory,
            closers: Arc::new(closers),
            eos,
        })
    }

    /// Compile a request's shape into the constraint of one generation.
    /// A grammar llguidance cannot build is the client's error, named by
    /// field.
    pub fn compile(&self, shape: &Shape) -> Result<Constraint, ModelError> {
        let lark = shape.lark();
        let parser = self
            .factory
            .create_parser(TopLevelGrammar::from_lark(lark))
            .map_err(|e| ModelError::Invalid {
                param: shape.param().into(),
                message: format!("cannot be enforced on the embedded model: {}", short(&e)),
            })?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ModelError::Invalid {
                param: shape.param().into(),
                message: format!("cannot be enforced on the embedded model: {e}"),
            });
        }
        Ok(Constraint {
            matcher,
            calls: shape.calls(),
            json: shape.json.is_some(),
            closers: self.closers.clone(),
            eos: self.eos,
        })
    }
}

/// llguidance's first error line (it may add a backtrace-like context).
fn short(e: &impl std::fmt::Display) -> String {
    let s = e.to_string();
    s.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

/// Whether the answer is, may be, or is never a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    /// No tools offered (or `tool_choice: "none"`).
    Never,
    /// `auto`: a call or an answer, the model chooses.
    Maybe,
    /// `required` or a named function.
    Always,
}

/// What the answer must look like, from a request's options.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// Tools the model may call, with the calling rule.
    tools: Vec<Tool>,
    calls: Calls,
    /// Only this function (`tool_choice` naming one).
    only: Option<String>,
    /// More than one call per answer.
    parallel: bool,
    /// A text answer must be JSON following this schema (`json_object`:
    /// any object).
    json: Option<JsonShape>,
}

#[derive(Debug, Clone, PartialEq)]
struct JsonShape {
    schema: Value,
    strict: bool,
}

impl Shape {
    /// The shape a request asks for, or `None` for free text.
    pub fn of(options: &Options) -> Option<Self> {
        let json = match &options.response_format {
            Some(ResponseFormat::JsonObject) => Some(JsonShape {
                schema: json!({"type": "object"}),
                strict: false,
            }),
            Some(ResponseFormat::JsonSchema(s)) => Some(JsonShape {
                schema: s
                    .schema
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object"})),
                strict: s.strict.unwrap_or(false),
            }),
            Some(ResponseFormat::Text) | None => None,
        };
        let (calls, only) = match (&options.tool_choice, options.tools.is_empty()) {
            (_, true) | (Some(ToolChoice::None), _) => (Calls::Never, None),
            (Some(ToolChoice::Auto) | None, false) => (Calls::Maybe, None),
            (Some(ToolChoice::Required), false) => (Calls::Always, None),
            (Some(ToolChoice::Function(name)), false) => (Calls::Always, Some(name.clone())),
        };
        if calls == Calls::Never && json.is_none() {
            return None;
        }
        let tools = match calls {
            Calls::Never => Vec::new(),
            _ => options.tools.clone(),
        };
        Some(Self {
            tools,
            calls,
            only,
            parallel: options.parallel_tool_calls.unwrap_or(true),
            json,
        })
    }

    /// The request field a grammar error is about.
    fn param(&self) -> &'static str {
        if self.calls == Calls::Never {
            "response_format.json_schema.schema"
        } else {
            "tools"
        }
    }

    /// How tool calls are expected.
    pub fn calls(&self) -> Calls {
        self.calls
    }

    /// The grammar, in llguidance's Lark dialect.
    fn lark(&self) -> String {
        let answer = match &self.json {
            Some(j) => format!("answer: %json {}", with_layout(&j.schema, j.strict)),
            // Text that cannot be mistaken for a call: it does not start with `<`.
            None => "answer: TEXT\nTEXT: /[^<](?s:.)*/".to_string(),
        };
        let start = match self.calls {
            Calls::Never => "start: answer",
            Calls::Maybe => "start: calls | answer",
            Calls::Always => "start: calls",
        };
        let mut g = format!("{start}\n{answer}\n");
        if self.calls != Calls::Never {
            let more = if self.parallel { " (\", \" call)*" } else { "" };
            g.push_str(&format!(
                "calls: {} \"[\" call{more} \"]\" {}\n",
                lark_string(CALL_OPEN),
                lark_string(CALL_CLOSE)
            ));
            let variants: Vec<Value> = self
                .tools
                .iter()
                .filter(|t| self.only.as_ref().is_none_or(|n| *n == t.name))
                .map(|t| {
                    json!({
                        "type": "object",
                        "properties": {
                            "name": {"const": t.name},
                            "arguments": t.parameters.clone().unwrap_or_else(|| json!({"type": "object"})),
                        },
                        "required": ["name", "arguments"],
                        "additionalProperties": false,
                    })
                })
                .collect();
            let strict = self.tools.iter().all(|t| t.strict.unwrap_or(false));
            let call = with_layout(&json!({"anyOf": variants}), strict);
            g.push_str(&format!("call: %json {call}\n"));
        }
        g
    }

    /// What the system turn says of this shape: the tools, and the JSON
    /// schema.
    fn instructions(&self) -> String {
        let mut system = String::new();
        if self.calls != Calls::Never {
            let listed: Vec<String> = self.tools.iter().map(tool_listing).collect();
            system.push_str(&format!(
                "You are an expert in composing functions. You are given a question and a set of possible functions. \
                 Based on the question, you will need to make one or more function/tool calls to achieve the purpose.\n\n\
                 You have access to the following tools:\n<tools>[{}]</tools>\n\n\
                 To call tools, answer in this format and with no other text:\n\
                 {CALL_OPEN}[{{\"name\": \"func_name1\", \"arguments\": {{\"argument1\": \"value1\"}}}}]{CALL_CLOSE}",
                listed.join(", ")
            ));
            if self.calls == Calls::Maybe {
                system.push_str("\nIf no function is needed, answer the question directly.");
            }
        }
        if let Some(j) = &self.json {
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str(&format!(
                "Answer with JSON only, following this JSON Schema: {}",
                j.schema
            ));
        }
        system
    }
}

/// The conversation as the model is shown it: the shape's tools and JSON
/// schema described in the system turn, earlier calls written in the format
/// the model answers in, tool results as `tool` turns.
pub fn prompt(shape: Option<&Shape>, messages: Vec<Message>) -> Vec<Message> {
    let mut out: Vec<Message> = messages.into_iter().map(written_calls).collect();
    let Some(system) = shape.map(Shape::instructions) else {
        return out;
    };
    match out.first_mut() {
        Some(first) if first.role == "system" || first.role == "developer" => {
            first.content.push_str("\n\n");
            first.content.push_str(&system);
        }
        _ => out.insert(0, Message::text("system", system)),
    }
    out
}

/// A tool as listed to the model: name, description, parameters.
fn tool_listing(t: &Tool) -> String {
    let description = t
        .description
        .as_ref()
        .map(|d| format!(", \"description\": {}", Value::String(d.clone())))
        .unwrap_or_default();
    let parameters = t
        .parameters
        .clone()
        .unwrap_or_else(|| json!({"type": "object"}));
    format!(
        "{{\"name\": {}{description}, \"parameters\": {parameters}}}",
        Value::String(t.name.clone())
    )
}

/// One call as the model writes it: name first, then the arguments.
fn call_text(name: &str, arguments: &Value) -> String {
    format!(
        "{{\"name\": {}, \"arguments\": {arguments}}}",
        Value::String(name.into())
    )
}

/// An assistant turn's calls written out as the model writes them; tool
/// results keep their role. The template sees text only.
fn written_calls(mut m: Message) -> Message {
    if !m.tool_calls.is_empty() {
        let calls: Vec<String> = m
            .tool_calls
            .iter()
            .map(|c| {
                let arguments = serde_json::from_str::<Value>(&c.arguments)
                    .unwrap_or_else(|_| Value::String(c.arguments.clone()));
                call_text(&c.name, &arguments)
            })
            .collect();
        if !m.content.is_empty() {
            m.content.push('\n');
        }
        m.content
            .push_str(&format!("{CALL_OPEN}[{}]{CALL_CLOSE}", calls.join(", ")));
        m.tool_calls.clear();
    }
    m.tool_call_id = None;
    m
}

/// The schema with llguidance's layout options: `, ` and `: ` separators and
/// no free whitespace (a small model otherwise may pad without end), and
/// unknown keywords ignored unless the client asked for `strict`.
fn with_layout(schema: &Value, strict: bool) -> Value {
    let mut s = schema.clone();
    if let Value::Object(o) = &mut s {
        o.insert(
            "x-guidance".into(),
            json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
                "lenient": !strict,
            }),
        );
    }
    s
}

/// A Lark string literal.
fn lark_string(s: &str) -> String {
    Value::String(s.into()).to_string()
}

/// One generation's grammar state.
pub struct Constraint {
    matcher: Matcher,
    calls: Calls,
    /// A text answer is JSON.
    json: bool,
    closers: Arc<Closers>,
    eos: u32,
}

/// Token ids that close what is open, made only of `"`, `[`, `]`, `{`, `}`
/// and spaces.
#[derive(Debug, Default)]
struct Closers {
    /// Start with `"` and open nothing (`"`, `"}`, `"]}`): end the string
    /// being written.
    string: Vec<u32>,
    /// Open no more than they close, quotes paired (`]`, `}]`, `[]`, `""`,
    /// `{}`): end an array or object, or give the shortest value.
    value: Vec<u32>,
}

impl Closers {
    fn of(words: &[Vec<u8>]) -> Self {
        let mut c = Self::default();
        for (id, w) in words.iter().enumerate() {
            let only = w
                .iter()
                .all(|b| matches!(b, b'"' | b'[' | b']' | b'{' | b'}' | b' '));
            if !only || w.iter().all(|&b| b == b' ') {
                continue;
            }
            let opens = w.iter().filter(|&&b| matches!(b, b'[' | b'{')).count();
            let closes = w.iter().filter(|&&b| matches!(b, b']' | b'}')).count();
            let quotes = w.iter().filter(|&&b| b == b'"').count();
            if w.first() == Some(&b'"') && opens == 0 {
                c.string.push(id as u32);
            }
            if opens <= closes && quotes % 2 == 0 {
                c.value.push(id as u32);
            }
        }
        c
    }
}

/// Where a structured answer that is wrapping up stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrapUp {
    /// Budget left: no steering.
    No,
    /// Inside a string: close it.
    InString,
    /// Between values: close arrays and objects.
    Outside,
}

impl Constraint {
    /// How tool calls are expected.
    pub fn calls(&self) -> Calls {
        self.calls
    }

    /// Whether a text answer must be JSON.
    pub fn json(&self) -> bool {
        self.json
    }

    /// Mask every logit whose token would leave the grammar. Wrapping up
    /// (the token budget nearly spent on a JSON answer or a call), the
    /// answer is steered to its end: the end-of-turn token when the
    /// grammar is complete, else the model's preferred token among those
    /// that close a string, array or object, when one is allowed; required
    /// keys and values still come as the grammar demands.
    pub fn mask(&mut self, logits: &mut [f32], wrap_up: WrapUp) -> Result<(), String> {
        let allowed = self
            .matcher
            .compute_mask()
            .map_err(|e| format!("constrained decoding failed: {e}"))?;
        if allowed.is_zero() {
            return Err("constrained decoding allows no token".into());
        }
        for (i, l) in logits.iter_mut().enumerate() {
            if !allowed.is_allowed(i as u32) {
                *l = f32::NEG_INFINITY;
            }
        }
        let closers = match wrap_up {
            WrapUp::No => return Ok(()),
            WrapUp::InString => &self.closers.string,
            WrapUp::Outside => &self.closers.value,
        };
        if allowed.is_allowed(self.eos) {
            for (i, l) in logits.iter_mut().enumerate() {
                if i as u32 != self.eos {
                    *l = f32::NEG_INFINITY;
                }
            }
            return Ok(());
        }
        for &id in closers {
            if allowed.is_allowed(id)
                && let Some(l) = logits.get_mut(id as usize)
            {
                *l += WRAP_UP_BONUS;
            }
        }
        Ok(())
    }

    /// Advance past the sampled token; `true` once the grammar is complete
    /// and nothing may follow.
    pub fn commit(&mut self, token: u32) -> Result<bool, String> {
        self.matcher
            .consume_token(token)
            .map_err(|e| format!("constrained decoding failed: {e}"))?;
        Ok(self.matcher.is_stopped())
    }
}

/// How deeply the JSON written so far is nested: open arrays and objects,
/// brackets inside strings not counted.
#[derive(Debug, Default)]
pub struct Depth {
    open: u32,
    in_string: bool,
    escaped: bool,
}

impl Depth {
    /// Follow more output.
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.open += 1,
                b'}' | b']' => self.open = self.open.saturating_sub(1),
                _ => {}
            }
        }
    }

    /// Arrays and objects open now.
    pub fn get(&self) -> u32 {
        self.open
    }

    /// Inside a string now.
    pub fn in_string(&self) -> bool {
        self.in_string
    }
}

/// The calls of an answer written as `<tool_call>[…]</tool_call>`, with
/// fresh ids; `None` when the text is not a complete call list.
pub fn parse_calls(text: &str) -> Option<Vec<ToolCall>> {
    let inner = text
        .trim()
        .strip_prefix(CALL_OPEN)?
        .strip_suffix(CALL_CLOSE)?;
    let Value::Array(items) = serde_json::from_str::<Value>(inner).ok()? else {
        return None;
    };
    items
        .into_iter()
        .map(|item| {
            let name = item.get("name")?.as_str()?.to_string();
            let arguments = item.get("arguments")?.to_string();
            Some(ToolCall {
                id: call_id(),
                name,
                arguments,
            })
        })
        .collect()
}

/// `call_` and 24 random alphanumerics, as OpenAI's ids look.
fn call_id() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("call_{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Tool {
        Tool {
            name: "get_weather".into(),
            description: Some("Weather in a city".into()),
            parameters: Some(json!({
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            })),
            strict: None,
        }
    }

    #[test]
    fn no_shape_for_plain_text_or_tool_choice_none() {
        assert_eq!(Shape::of(&Options::default()), None);
        let o = Options {
            tools: vec![weather()],
            tool_choice: Some(ToolChoice::None),
            ..Options::default()
        };
        assert_eq!(Shape::of(&o), None);
    }

    #[test]
    fn grammar_follows_tool_choice_and_parallel_calls() {
        let mut o = Options {
            tools: vec![weather()],
            ..Options::default()
        };
        let auto = Shape::of(&o).unwrap().lark();
        assert!(auto.starts_with("start: calls | answer"), "{auto}");
        assert!(auto.contains("TEXT: /[^<]"), "{auto}");
        assert!(auto.contains("(\", \" call)*"), "{auto}");
        o.tool_choice = Some(ToolChoice::Required);
        o.parallel_tool_calls = Some(false);
        let one = Shape::of(&o).unwrap().lark();
        assert!(one.starts_with("start: calls\n"), "{one}");
        assert!(!one.contains("call)*"), "{one}");
        assert!(one.contains("\"const\":\"get_weather\""), "{one}");
    }

    #[test]
    fn depth_counts_open_brackets_outside_strings() {
        let mut d = Depth::default();
        d.push(br#"{"a": [{"b": "x]}\"[{"#);
        assert_eq!(d.get(), 3);
        d.push(br#"", "c": 1}"#);
        assert_eq!(d.get(), 2);
        d.push(b"]}");
        assert_eq!(d.get(), 0);
    }

    #[test]
    fn calls_are_parsed_with_fresh_ids() {
        let calls = parse_calls(
            "<tool_call>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, \
             {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}]</tool_call>",
        )
        .unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, "{\"city\":\"Paris\"}");
        assert!(calls[0].id.starts_with("call_") && calls[0].id.len() == 29);
        assert_ne!(calls[0].id, calls[1].id);
        assert_eq!(parse_calls("<tool_call>[{\"name\": \"f\""), None);
        assert_eq!(parse_calls("Paris is sunny."), None);
    }

    #[test]
    fn the_prompt_lists_tools_and_writes_earlier_calls() {
        let o = Options {
            tools: vec![weather()],
            ..Options::default()
        };
        let shape = Shape::of(&o).unwrap();
        let mut assistant = Message::text("assistant", "");
        assistant.tool_calls = vec![ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: "{\"city\":\"Paris\"}".into(),
        }];
        let mut result = Message::text("tool", "Sunny");
        result.tool_call_id = Some("call_1".into());
        let shown = prompt(
            Some(&shape),
            vec![
                Message::text("user", "Weather in Paris?"),
                assistant,
                result,
            ],
        );
        assert_eq!(shown.len(), 4);
        assert_eq!(shown[0].role, "system");
        assert!(
            shown[0]
                .content
                .contains("<tools>[{\"name\": \"get_weather\", \"description\": \"Weather in a city\", \"parameters\": {"),
            "{}",
            shown[0].content
        );
        assert_eq!(
            shown[2].content,
            "<tool_call>[{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\"}}]</tool_call>"
        );
        assert!(shown[2].tool_calls.is_empty());
        assert_eq!(
            (shown[3].role.as_str(), shown[3].tool_call_id.as_deref()),
            ("tool", None)
        );
    }
}
