//! The BERT encoder of all-MiniLM-L6-v2 and sentence-transformers' head on
//! it: token, position and segment embeddings with a layer norm; six
//! post-norm layers of 12-head self-attention and a GELU (erf) feed-forward
//! network; then the mean of the last hidden states over the attention mask
//! and L2 normalisation — `Transformer → Pooling(mean) → Normalize`, as the
//! model's `modules.json` lists them. Padded positions are masked out of
//! attention (a large negative bias on their keys) and out of the mean, so
//! a text's vector does not depend on the batch it is in.
//!
//! The dense products (the six layers' projections and feed-forward
//! networks, 99 % of the arithmetic) run in the [`Precision`] asked for at
//! load: f32 through candle, or int8 through `orinari-kernels` (weights
//! quantized to Q8_0 at load, activations per row and per 32 inputs), which
//! compute every output row the same way whatever the batch. Attention,
//! layer norms, GELU and pooling stay f32 in both; their last bits follow
//! the batch's shape, which in int8 can move an activation across a
//! quantization step (a text alone and in a padded batch: 5e-5 apart in
//! cosine distance, against 1e-7 in f32).

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use orinari_kernels::{Activations, Format, Matrix};

use crate::{EmbedError, Precision};

/// The hyper-parameters read from the model's `config.json`.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Config {
    pub(crate) vocab_size: usize,
    pub(crate) hidden_size: usize,
    pub(crate) num_hidden_layers: usize,
    pub(crate) num_attention_heads: usize,
    pub(crate) intermediate_size: usize,
    pub(crate) max_position_embeddings: usize,
    pub(crate) type_vocab_size: usize,
    pub(crate) layer_norm_eps: f64,
    pub(crate) hidden_act: String,
}

struct Layer {
    /// Query, key and value: three projections of the same input.
    qkv: Dense,
    attention_out: Dense,
    attention_norm: LayerNorm,
    intermediate: Dense,
    output: Dense,
    output_norm: LayerNorm,
}

/// Dense layers of the same input, `x · Wᵀ + b` for each part, in the
/// encoder's precision.
enum Dense {
    /// candle's f32 matmul (gemm), one per part.
    F32(Vec<Linear>),
    /// The parts' Q8_0 weights stacked and repacked for `orinari-kernels`
    /// (one pass for all parts: activations quantized once, one dispatch
    /// to the thread pool), each part's row count, and its f32 bias.
    Int8 {
        weights: Matrix,
        widths: Vec<usize>,
        biases: Vec<Tensor>,
    },
}

impl Dense {
    /// The parts named `(name, outputs)` under `vb`, each of `input` inputs.
    fn load(
        vb: &VarBuilder,
        input: usize,
        parts: &[(&str, usize)],
        precision: Precision,
    ) -> candle_core::Result<Self> {
        let linears = parts
            .iter()
            .map(|&(name, output)| candle_nn::linear(input, output, vb.pp(name)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        if precision == Precision::F32 {
            return Ok(Self::F32(linears));
        }
        let blocks = linears
            .iter()
            .map(|l| {
                QTensor::quantize(l.weight(), GgmlDType::Q8_0)?
                    .data()
                    .map(|d| d.to_vec())
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let widths: Vec<usize> = parts.iter().map(|&(_, output)| output).collect();
        let stack: Vec<(&[u8], usize)> = blocks
            .iter()
            .map(|b| &b[..])
            .zip(widths.iter().copied())
            .collect();
        let weights = Matrix::stacked(Format::Q8_0, &stack, input).map_err(kernel_error)?;
        let biases = linears
            .iter()
            .zip(parts)
            .map(|(l, (name, _))| {
                l.bias()
                    .cloned()
                    .ok_or_else(|| candle_core::Error::Msg(format!("{name}: no bias")))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self::Int8 {
            weights,
            widths,
            biases,
        })
    }

    /// Each part's output for `x`, `batch × len × input`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        match self {
            Self::F32(linears) => linears.iter().map(|l| l.forward(x)).collect(),
            Self::Int8 {
                weights,
                widths,
                biases,
            } => {
                let (batch, len, input) = x.dims3()?;
                let rows = x.flatten_all()?.to_vec1::<f32>()?;
                let activations = Activations::quantize(&rows, input).map_err(kernel_error)?;
                let outs = weights
                    .mul_split(&activations, widths, |n, f| {
                        candle_core::utils::barrier_pool().execute_chunked(n, f);
                    })
                    .map_err(kernel_error)?;
                outs.into_iter()
                    .zip(widths.iter().zip(biases))
                    .map(|(out, (&w, bias))| {
                        Tensor::from_vec(out, (batch, len, w), x.device())?.broadcast_add(bias)
                    })
                    .collect()
            }
        }
    }

    /// The output of a single part.
    fn forward1(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward(x)?
            .pop()
            .ok_or_else(|| candle_core::Error::Msg("a dense layer without parts".into()))
    }
}

fn kernel_error(e: orinari_kernels::ShapeError) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// The encoder with its pooling head.
pub(crate) struct Bert {
    words: Embedding,
    positions: Embedding,
    segments: Embedding,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    device: Device,
}

fn norm(vb: &VarBuilder, size: usize, eps: f64, name: &str) -> candle_core::Result<LayerNorm> {
    candle_nn::layer_norm(size, eps, vb.pp(name))
}

impl Bert {
    /// Build the encoder from `safetensors` bytes (HF `BertModel` names),
    /// its dense products in `precision`; `words`, when given, is the word
    /// embedding table of an encoder loaded from the same bytes, shared
    /// rather than read again.
    pub(crate) fn load(
        weights: Vec<u8>,
        config: &Config,
        precision: Precision,
        words: Option<Embedding>,
    ) -> Result<Self, EmbedError> {
        if config.hidden_act != "gelu" {
            return Err(EmbedError::Load(format!(
                "hidden_act `{}` is not supported (expected `gelu`)",
                config.hidden_act
            )));
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(EmbedError::Load(
                "hidden_size is not a multiple of num_attention_heads".into(),
            ));
        }
        let device = Device::Cpu;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)?;
        let (h, eps) = (config.hidden_size, config.layer_norm_eps);
        let e = vb.pp("embeddings");
        let words = match words {
            Some(words) => words,
            None => candle_nn::embedding(config.vocab_size, h, e.pp("word_embeddings"))?,
        };
        let positions = candle_nn::embedding(
            config.max_position_embeddings,
            h,
            e.pp("position_embeddings"),
        )?;
        let segments =
            candle_nn::embedding(config.type_vocab_size, h, e.pp("token_type_embeddings"))?;
        let embeddings_norm = norm(&e, h, eps, "LayerNorm")?;
        let dense = |vb: &VarBuilder, input, parts: &[(&str, usize)]| {
            Dense::load(vb, input, parts, precision)
        };
        let inner = config.intermediate_size;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                let a = l.pp("attention");
                Ok(Layer {
                    qkv: dense(&a.pp("self"), h, &[("query", h), ("key", h), ("value", h)])?,
                    attention_out: dense(&a, h, &[("output.dense", h)])?,
                    attention_norm: norm(&a, h, eps, "output.LayerNorm")?,
                    intermediate: dense(&l, h, &[("intermediate.dense", inner)])?,
                    output: dense(&l, inner, &[("output.dense", h)])?,
                    output_norm: norm(&l, h, eps, "output.LayerNorm")?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            words,
            positions,
            segments,
            embeddings_norm,
            layers,
            heads: config.num_attention_heads,
            head_dim: h / config.num_attention_heads,
            device,
        })
    }

    /// The word embedding table (47 MB, f32 in both precisions).
    pub(crate) fn words(&self) -> &Embedding {
        &self.words
    }

    /// Sentence vectors for one batch: `ids` are `batch × len` token ids
    /// padded with anything, `lengths` each row's real length (≥ 1). Returns
    /// `batch × hidden`, each row of length 1.
    pub(crate) fn embed(&self, ids: &[u32], lengths: &[usize]) -> candle_core::Result<Tensor> {
        let batch = lengths.len();
        let len = ids.len() / batch.max(1);
        let mask: Vec<f32> = lengths
            .iter()
            .flat_map(|&n| (0..len).map(move |j| if j < n { 1.0 } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (batch, len), &self.device)?;
        let ids = Tensor::from_slice(ids, (batch, len), &self.device)?;
        let hidden = self.encode(&ids, &mask)?;
        // Mean over the real tokens, then L2 normalisation.
        let summed = hidden.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?;
        let counts = mask.sum_keepdim(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        mean.broadcast_div(&norms)
    }

    /// The last hidden states, `batch × len × hidden`.
    fn encode(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, len) = ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, &self.device)?;
        let x = self
            .words
            .forward(ids)?
            .broadcast_add(&self.positions.forward(&positions)?)?
            // Every token is segment 0 (one sentence per input).
            .broadcast_add(&self.segments.forward(&Tensor::zeros(
                1,
                DType::U32,
                &self.device,
            )?)?)?;
        let mut x = self.embeddings_norm.forward(&x)?;
        // 0 for real keys, a large negative number for padding: softmax
        // gives padding no weight.
        let bias = ((mask - 1.0)? * 1e9)?.reshape((batch, 1, 1, len))?;
        for layer in &self.layers {
            x = self.layer(layer, &x, &bias)?;
        }
        Ok(x)
    }

    fn layer(&self, l: &Layer, x: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, len, hidden) = x.dims3()?;
        let heads = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((batch, len, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let [q, k, v] = <[Tensor; 3]>::try_from(l.qkv.forward(x)?)
            .map_err(|p| candle_core::Error::Msg(format!("{} projections, not 3", p.len())))?;
        let (q, k, v) = (heads(q)?, heads(k)?, heads(v)?);
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(bias)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch, len, hidden))?;
        let attended = l
            .attention_norm
            .forward(&(l.attention_out.forward1(&context)? + x)?)?;
        let inner = l.intermediate.forward1(&attended)?.gelu_erf()?;
        l.output_norm
            .forward(&(l.output.forward1(&inner)? + attended)?)
    }
}

/// The vectors of a `batch × hidden` tensor, one `Vec` per row.
pub(crate) fn rows(t: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
    t.to_dtype(DType::F32)?.to_vec2::<f32>()
}
