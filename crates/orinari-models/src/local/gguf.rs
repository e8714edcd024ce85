//! Reading a GGUF file: hyper-parameters, vocabulary, chat template, weights.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::Device;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};

/// Llama hyper-parameters from the `llama.*` metadata.
#[derive(Debug, Clone)]
pub struct Hyper {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub context_length: usize,
    pub rope_theta: f32,
    pub rms_eps: f32,
}

/// The tokenizer as the GGUF stores it.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    pub merges: Vec<String>,
    pub eos_token_id: u32,
}

/// Everything read from one GGUF file.
pub struct GgufModel {
    pub hyper: Hyper,
    pub vocab: Vocabulary,
    pub chat_template: String,
    pub tensors: HashMap<String, QTensor>,
}

fn meta<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<&'a Value, String> {
    md.get(key)
        .ok_or_else(|| format!("the GGUF has no `{key}` metadata"))
}

fn meta_usize(md: &HashMap<String, Value>, key: &str) -> Result<usize, String> {
    let v = meta(md, key)?;
    v.to_u32()
        .map(|n| n as usize)
        .or_else(|_| v.to_u64().map(|n| n as usize))
        .map_err(|e| format!("`{key}`: {e}"))
}

fn meta_f32(md: &HashMap<String, Value>, key: &str) -> Result<f32, String> {
    meta(md, key)?.to_f32().map_err(|e| format!("`{key}`: {e}"))
}

fn meta_strings(md: &HashMap<String, Value>, key: &str) -> Result<Vec<String>, String> {
    meta(md, key)?
        .to_vec()
        .map_err(|e| format!("`{key}`: {e}"))?
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| format!("`{key}`: {e}")))
        .collect()
}

fn open(path: &Path) -> Result<(BufReader<File>, Content), String> {
    let file = File::open(path).map_err(|e| format!("cannot open the model file: {e}"))?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader).map_err(|e| format!("not a GGUF file: {e}"))?;
    Ok((reader, content))
}

/// Read only the metadata (hyper-parameters, vocabulary, template).
pub fn load_metadata(path: &Path) -> Result<GgufModel, String> {
    let (_, content) = open(path)?;
    metadata(&content)
}

/// Load a GGUF file. Weights stored as Q4_1 are re-quantized to Q8_0 when
/// `requantize` is set: candle has SIMD kernels for Q8_0 (AVX2, AVX-512 VNNI)
/// but only a scalar one for Q4_1, so this trades ~50 MB for ~2x speed.
pub fn load(path: &Path, requantize: bool) -> Result<GgufModel, String> {
    let (mut reader, content) = open(path)?;
    let mut model = metadata(&content)?;
    for (name, _) in content.tensor_infos.iter() {
        let t = content
            .tensor(&mut reader, name, &Device::Cpu)
            .map_err(|e| format!("tensor `{name}`: {e}"))?;
        let t = if requantize && matches!(t.dtype(), GgmlDType::Q4_0 | GgmlDType::Q4_1) {
            let f = t.dequantize(&Device::Cpu).map_err(|e| e.to_string())?;
            QTensor::quantize(&f, GgmlDType::Q8_0).map_err(|e| e.to_string())?
        } else {
            t
        };
        model.tensors.insert(name.clone(), t);
    }
    Ok(model)
}

fn metadata(content: &Content) -> Result<GgufModel, String> {
    let md = &content.metadata;
    let arch = meta(md, "general.architecture")?
        .to_string()
        .map_err(|e| e.to_string())?;
    if arch != "llama" {
        return Err(format!(
            "unsupported architecture `{arch}` (expected llama)"
        ));
    }
    let hyper = Hyper {
        n_layer: meta_usize(md, "llama.block_count")?,
        n_embd: meta_usize(md, "llama.embedding_length")?,
        n_head: meta_usize(md, "llama.attention.head_count")?,
        n_head_kv: meta_usize(md, "llama.attention.head_count_kv")?,
        context_length: meta_usize(md, "llama.context_length")?,
        rope_theta: meta_f32(md, "llama.rope.freq_base").unwrap_or(10_000.0),
        rms_eps: meta_f32(md, "llama.attention.layer_norm_rms_epsilon")?,
    };
    if hyper.n_head == 0 || hyper.n_head_kv == 0 || !hyper.n_head.is_multiple_of(hyper.n_head_kv) {
        return Err("inconsistent attention head counts".into());
    }
    let model = meta(md, "tokenizer.ggml.model")?
        .to_string()
        .map_err(|e| e.to_string())?;
    if model != "gpt2" {
        return Err(format!(
            "unsupported tokenizer `{model}` (expected gpt2 BPE)"
        ));
    }
    let token_types = meta(md, "tokenizer.ggml.token_type")?
        .to_vec()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|v| v.to_i32().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let vocab = Vocabulary {
        tokens: meta_strings(md, "tokenizer.ggml.tokens")?,
        token_types,
        merges: meta_strings(md, "tokenizer.ggml.merges")?,
        eos_token_id: meta_usize(md, "tokenizer.ggml.eos_token_id")? as u32,
    };
    if vocab.tokens.len() != vocab.token_types.len() {
        return Err("token and token-type arrays differ in length".into());
    }
    let chat_template = meta(md, "tokenizer.chat_template")?
        .to_string()
        .map_err(|e| e.to_string())?
        .clone();

    Ok(GgufModel {
        hyper,
        vocab,
        chat_template,
        tensors: HashMap::new(),
    })
}
