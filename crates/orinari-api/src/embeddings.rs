//! `POST /v1/embeddings`: OpenAI's embeddings request, validated field by
//! field, and its response — written from our vectors, or read from an
//! upstream's answer to pass it on.
//!
//! `input` is a string, an array of strings, an array of token ids or an
//! array of token-id arrays, at most [`MAX_INPUTS`], none empty;
//! `encoding_format` is `float` (default) or `base64` (the vector's
//! little-endian f32 bytes, as OpenAI sends them); `dimensions` is checked
//! by whoever knows the model (the embedded model takes only its own size;
//! an upstream gets it passed on).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::ApiError;
use crate::chat::{expected, json_body, known_object};

const KNOWN_FIELDS: &[&str] = &["model", "input", "encoding_format", "dimensions", "user"];

/// Inputs in one request at most (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// Characters a token id counts as against the input limit (the token
/// estimate's ratio).
pub const CHARS_PER_TOKEN: usize = 4;

/// How vectors are written in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncodingFormat {
    /// JSON numbers.
    #[default]
    Float,
    /// A base64 string of the little-endian f32 bytes.
    Base64,
}

impl EncodingFormat {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Float => "float",
            Self::Base64 => "base64",
        }
    }
}

/// What to embed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbeddingInput {
    /// Texts (a lone string is one of them).
    Texts(Vec<String>),
    /// Token-id sequences (a lone array of ids is one of them).
    Tokens {
        /// The sequences.
        ids: Vec<Vec<u32>>,
        /// Sent as an array of arrays (else one flat array).
        nested: bool,
    },
}

impl EmbeddingInput {
    /// How many vectors the request asks for.
    pub fn len(&self) -> usize {
        match self {
            Self::Texts(t) => t.len(),
            Self::Tokens { ids, .. } => ids.len(),
        }
    }

    /// Never true for a parsed request.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Characters of text, a token id counting as [`CHARS_PER_TOKEN`]
    /// (so `max_input_chars` bounds token inputs as it bounds text).
    pub fn chars(&self) -> usize {
        match self {
            Self::Texts(t) => t.iter().map(|s| s.chars().count()).sum(),
            Self::Tokens { ids, .. } => ids.iter().map(Vec::len).sum::<usize>() * CHARS_PER_TOKEN,
        }
    }

    /// The field naming token `position` of input `index`.
    pub fn token_param(&self, index: usize, position: usize) -> String {
        match self {
            Self::Tokens { nested: false, .. } => format!("input[{position}]"),
            _ => format!("input[{index}][{position}]"),
        }
    }
}

/// A validated embeddings request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingsRequest {
    /// The model asked for.
    pub model: String,
    /// What to embed.
    pub input: EmbeddingInput,
    /// How to write the vectors.
    pub encoding_format: EncodingFormat,
    /// The vector length asked for, if any.
    pub dimensions: Option<u32>,
    /// The end user's id, passed on to upstreams.
    pub user: Option<String>,
}

fn invalid_input(param: String, why: &str) -> ApiError {
    ApiError::invalid(param, why.to_string())
}

fn token_id(param: String, v: &Value) -> Result<u32, ApiError> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            invalid_input(
                param,
                "A token id must be a non-negative integer below 2^32.",
            )
        })
}

fn token_ids(param: &str, items: &[Value]) -> Result<Vec<u32>, ApiError> {
    if items.is_empty() {
        return Err(invalid_input(
            param.to_string(),
            "A token-id input must not be empty.",
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(j, v)| token_id(format!("{param}[{j}]"), v))
        .collect()
}

fn parse_input(v: Option<&Value>) -> Result<EmbeddingInput, ApiError> {
    const WHAT: &str =
        "a string, an array of strings, an array of token ids or an array of token-id arrays";
    let items = match v {
        None | Some(Value::Null) => {
            return Err(
                ApiError::invalid("input", "Missing required parameter: 'input'.")
                    .with_code("missing_required_parameter"),
            );
        }
        Some(Value::String(s)) if s.is_empty() => {
            return Err(invalid_input(
                "input".into(),
                "`input` must not be an empty string.",
            ));
        }
        Some(Value::String(s)) => return Ok(EmbeddingInput::Texts(vec![s.clone()])),
        Some(Value::Array(a)) => a,
        Some(v) => return Err(expected("input", WHAT, v)),
    };
    if items.is_empty() {
        return Err(invalid_input(
            "input".into(),
            "`input` must not be an empty array.",
        ));
    }
    if items.len() > MAX_INPUTS {
        return Err(invalid_input(
            "input".into(),
            &format!(
                "`input` holds {} items; at most {MAX_INPUTS} may be embedded in one request.",
                items.len()
            ),
        ));
    }
    match &items[0] {
        Value::String(_) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) if s.is_empty() => Err(invalid_input(
                    format!("input[{i}]"),
                    "An input must not be an empty string.",
                )),
                Value::String(s) => Ok(s.clone()),
                v => Err(expected(
                    &format!("input[{i}]"),
                    "a string, like the first item",
                    v,
                )),
            })
            .collect::<Result<_, _>>()
            .map(EmbeddingInput::Texts),
        Value::Number(_) => Ok(EmbeddingInput::Tokens {
            ids: vec![token_ids("input", items)?],
            nested: false,
        }),
        Value::Array(_) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Array(ids) => token_ids(&format!("input[{i}]"), ids),
                v => Err(expected(
                    &format!("input[{i}]"),
                    "an array of token ids, like the first item",
                    v,
                )),
            })
            .collect::<Result<_, _>>()
            .map(|ids| EmbeddingInput::Tokens { ids, nested: true }),
        v => Err(expected(
            "input[0]",
            "a string, a token id or an array of token ids",
            v,
        )),
    }
}

impl EmbeddingsRequest {
    /// Parse and validate a request body.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value = json_body(body)?;
        Self::from_object(known_object(&value, KNOWN_FIELDS)?)
    }

    fn from_object(o: &Map<String, Value>) -> Result<Self, ApiError> {
        let model = match o.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            Some(Value::String(_)) => {
                return Err(ApiError::invalid("model", "`model` must not be empty."));
            }
            None | Some(Value::Null) => {
                return Err(
                    ApiError::invalid("model", "Missing required parameter: 'model'.")
                        .with_code("missing_required_parameter"),
                );
            }
            Some(v) => return Err(expected("model", "a string", v)),
        };
        let input = parse_input(o.get("input"))?;
        let encoding_format = match o.get("encoding_format") {
            None | Some(Value::Null) => EncodingFormat::Float,
            Some(Value::String(f)) if f == "float" => EncodingFormat::Float,
            Some(Value::String(f)) if f == "base64" => EncodingFormat::Base64,
            Some(Value::String(f)) => {
                return Err(ApiError::invalid(
                    "encoding_format",
                    format!("`encoding_format` must be `float` or `base64`, not `{f}`."),
                ));
            }
            Some(v) => return Err(expected("encoding_format", "a string", v)),
        };
        let dimensions = crate::chat::opt_count(o, "dimensions")?;
        let user = match o.get("user") {
            None | Some(Value::Null) => None,
            Some(Value::String(u)) => Some(u.clone()),
            Some(v) => return Err(expected("user", "a string", v)),
        };
        Ok(Self {
            model,
            input,
            encoding_format,
            dimensions,
            user,
        })
    }

    /// The request as an upstream gets it: the same fields, its own model name.
    pub fn upstream_body(&self, model: &str) -> Vec<u8> {
        let mut body = json!({
            "model": model,
            "encoding_format": self.encoding_format.as_str(),
        });
        body["input"] = match &self.input {
            EmbeddingInput::Texts(t) => json!(t),
            EmbeddingInput::Tokens { ids, nested: true } => json!(ids),
            EmbeddingInput::Tokens { ids, nested: false } => json!(ids.concat()),
        };
        if let Some(d) = self.dimensions {
            body["dimensions"] = json!(d);
        }
        if let Some(u) = &self.user {
            body["user"] = json!(u);
        }
        body.to_string().into_bytes()
    }
}

/// One vector as it is written.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Vector {
    /// JSON numbers.
    Float(Vec<f32>),
    /// Base64 of the little-endian f32 bytes.
    Base64(String),
}

impl Vector {
    /// `v` written as `format` asks.
    pub fn encode(v: Vec<f32>, format: EncodingFormat) -> Self {
        match format {
            EncodingFormat::Float => Self::Float(v),
            EncodingFormat::Base64 => {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Self::Base64(STANDARD.encode(bytes))
            }
        }
    }

    /// This vector written as `format` asks (an upstream may answer in the
    /// other one); `None` if its base64 is not whole f32s.
    pub fn into_format(self, format: EncodingFormat) -> Option<Self> {
        match (self, format) {
            (v @ Self::Float(_), EncodingFormat::Float)
            | (v @ Self::Base64(_), EncodingFormat::Base64) => Some(v),
            (Self::Float(v), f) => Some(Self::encode(v, f)),
            (Self::Base64(s), EncodingFormat::Float) => {
                let bytes = STANDARD.decode(s).ok()?;
                if bytes.len() % 4 != 0 {
                    return None;
                }
                Some(Self::Float(
                    bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ))
            }
        }
    }
}

/// An embeddings answer: one vector per input, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// The vectors, written as the request asked.
    pub vectors: Vec<Vector>,
    /// Tokens embedded.
    pub prompt_tokens: u32,
}

#[derive(Serialize)]
struct Item<'a> {
    object: &'static str,
    index: usize,
    embedding: &'a Vector,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u32,
    total_tokens: u32,
}

#[derive(Serialize)]
struct List<'a> {
    object: &'static str,
    data: Vec<Item<'a>>,
    model: &'a str,
    usage: Usage,
}

impl Embeddings {
    /// The OpenAI response body, for the model the client asked for.
    pub fn to_json(&self, model: &str) -> Vec<u8> {
        let list = List {
            object: "list",
            data: self
                .vectors
                .iter()
                .enumerate()
                .map(|(index, embedding)| Item {
                    object: "embedding",
                    index,
                    embedding,
                })
                .collect(),
            model,
            usage: Usage {
                prompt_tokens: self.prompt_tokens,
                total_tokens: self.prompt_tokens,
            },
        };
        serde_json::to_vec(&list).unwrap_or_default()
    }

    /// An upstream's answer to a request for `inputs` vectors, checked
    /// (one vector per input, each index once) and put in input order,
    /// each vector written as `format` asks. The error says what is wrong
    /// with it, for logs.
    pub fn from_upstream(
        body: &[u8],
        inputs: usize,
        format: EncodingFormat,
    ) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct UpItem {
            index: usize,
            embedding: UpVector,
        }
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum UpVector {
            Float(Vec<f32>),
            Base64(String),
        }
        #[derive(serde::Deserialize, Default)]
        struct UpUsage {
            #[serde(default)]
            prompt_tokens: u32,
        }
        #[derive(serde::Deserialize)]
        struct UpList {
            data: Vec<UpItem>,
            #[serde(default)]
            usage: Option<UpUsage>,
        }
        let list: UpList =
            serde_json::from_slice(body).map_err(|e| format!("not an embeddings list: {e}"))?;
        if list.data.len() != inputs {
            return Err(format!("{} vectors for {inputs} inputs", list.data.len()));
        }
        let mut vectors: Vec<Option<Vector>> = vec![None; inputs];
        for item in list.data {
            let slot = vectors
                .get_mut(item.index)
                .filter(|s| s.is_none())
                .ok_or_else(|| format!("index {} is out of range or repeated", item.index))?;
            let v = match item.embedding {
                UpVector::Float(v) => Vector::Float(v),
                UpVector::Base64(s) => Vector::Base64(s),
            };
            *slot = Some(
                v.into_format(format)
                    .ok_or("a base64 vector is not whole f32s")?,
            );
        }
        Ok(Self {
            vectors: vectors.into_iter().flatten().collect(),
            prompt_tokens: list.usage.unwrap_or_default().prompt_tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    fn parse(v: Value) -> Result<EmbeddingsRequest, ApiError> {
        EmbeddingsRequest::parse(v.to_string().as_bytes())
    }

    fn param(v: Value) -> String {
        parse(v).unwrap_err().param.unwrap()
    }

    #[test]
    fn every_input_shape_parses() {
        let r = parse(json!({"model": "m", "input": "hi"})).unwrap();
        assert_eq!(r.input, EmbeddingInput::Texts(vec!["hi".into()]));
        assert_eq!(r.encoding_format, EncodingFormat::Float);
        let r = parse(
            json!({"model": "m", "input": ["a", "b"], "encoding_format": "base64",
            "dimensions": 384, "user": "u"}),
        )
        .unwrap();
        assert_eq!(r.input.len(), 2);
        assert_eq!(
            (r.encoding_format, r.dimensions),
            (EncodingFormat::Base64, Some(384))
        );
        let r = parse(json!({"model": "m", "input": [1, 2, 3]})).unwrap();
        assert_eq!(
            r.input,
            EmbeddingInput::Tokens {
                ids: vec![vec![1, 2, 3]],
                nested: false
            }
        );
        assert_eq!(r.input.token_param(0, 2), "input[2]");
        let r = parse(json!({"model": "m", "input": [[1], [2, 3]]})).unwrap();
        assert_eq!(
            r.input,
            EmbeddingInput::Tokens {
                ids: vec![vec![1], vec![2, 3]],
                nested: true
            }
        );
        assert_eq!(r.input.token_param(1, 0), "input[1][0]");
    }

    #[test]
    fn bad_inputs_name_their_field() {
        assert_eq!(param(json!({"input": "x"})), "model");
        assert_eq!(param(json!({"model": "m"})), "input");
        assert_eq!(param(json!({"model": "m", "input": ""})), "input");
        assert_eq!(param(json!({"model": "m", "input": []})), "input");
        assert_eq!(param(json!({"model": "m", "input": 7})), "input");
        assert_eq!(param(json!({"model": "m", "input": ["a", ""]})), "input[1]");
        assert_eq!(param(json!({"model": "m", "input": ["a", 3]})), "input[1]");
        assert_eq!(param(json!({"model": "m", "input": [1, -2]})), "input[1]");
        assert_eq!(param(json!({"model": "m", "input": [[1], []]})), "input[1]");
        assert_eq!(
            param(json!({"model": "m", "input": [[1], [2, "x"]]})),
            "input[1][1]"
        );
        assert_eq!(
            param(json!({"model": "m", "input": [{"a": 1}]})),
            "input[0]"
        );
        let many: Vec<&str> = vec!["x"; MAX_INPUTS + 1];
        assert_eq!(param(json!({"model": "m", "input": many})), "input");
        assert_eq!(
            param(json!({"model": "m", "input": "x", "encoding_format": "int8"})),
            "encoding_format"
        );
        assert_eq!(
            param(json!({"model": "m", "input": "x", "dimensions": 0})),
            "dimensions"
        );
        assert_eq!(
            param(json!({"model": "m", "input": "x", "user": 1})),
            "user"
        );
        let unknown = parse(json!({"model": "m", "input": "x", "task": "q"})).unwrap_err();
        assert_eq!(unknown.param.as_deref(), Some("task"));
        assert_eq!(unknown.code, Some("unknown_parameter"));
        assert!(
            EmbeddingsRequest::parse(b"[1]")
                .unwrap_err()
                .param
                .is_none()
        );
    }

    #[test]
    fn base64_is_little_endian_f32_both_ways() {
        let v = vec![1.0f32, -0.5, 0.25];
        let Vector::Base64(s) = Vector::encode(v.clone(), EncodingFormat::Base64) else {
            panic!("base64 expected")
        };
        assert_eq!(s, "AACAPwAAAL8AAIA+");
        let back = Vector::Base64(s)
            .into_format(EncodingFormat::Float)
            .unwrap();
        assert_eq!(back, Vector::Float(v));
    }

    #[test]
    fn responses_are_written_and_upstream_answers_read_in_order() {
        let e = Embeddings {
            vectors: vec![Vector::Float(vec![0.5]), Vector::Base64("AAAAPw==".into())],
            prompt_tokens: 3,
        };
        let written: Value = serde_json::from_slice(&e.to_json("m")).unwrap();
        assert_eq!(
            written,
            json!({"object": "list", "model": "m",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5]},
                         {"object": "embedding", "index": 1, "embedding": "AAAAPw=="}],
                "usage": {"prompt_tokens": 3, "total_tokens": 3}})
        );
        let up = json!({"object": "list", "model": "x", "usage": {"prompt_tokens": 4, "total_tokens": 4},
            "data": [{"object": "embedding", "index": 1, "embedding": [0.5]},
                     {"object": "embedding", "index": 0, "embedding": "AAAAPw=="}]});
        let read =
            Embeddings::from_upstream(up.to_string().as_bytes(), 2, EncodingFormat::Float).unwrap();
        assert_eq!(
            read.vectors,
            vec![Vector::Float(vec![0.5]), Vector::Float(vec![0.5])]
        );
        assert_eq!(read.prompt_tokens, 4);
        let short = json!({"data": [{"index": 0, "embedding": [1.0]}]});
        assert!(
            Embeddings::from_upstream(short.to_string().as_bytes(), 2, EncodingFormat::Float)
                .is_err()
        );
        let twice =
            json!({"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]});
        assert!(
            Embeddings::from_upstream(twice.to_string().as_bytes(), 2, EncodingFormat::Float)
                .is_err()
        );
    }
}
