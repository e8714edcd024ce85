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
    query: Dense,
    key: Dense,
    value: Dense,
    attention_out: Dense,
    attention_norm: LayerNorm,
    intermediate: Dense,
    output: Dense,
    output_norm: LayerNorm,
}

/// One dense layer, `x · Wᵀ + b`, in the encoder's precision.
enum Dense {
    /// candle's f32 matmul (gemm).
    F32(Linear),
    /// Q8_0 weights repacked for `orinari-kernels`, and the f32 bias.
    Int8 { weights: Matrix, bias: Tensor },
}

impl Dense {
    fn load(
        vb: &VarBuilder,
        input: usize,
        output: usize,
        name: &str,
        precision: Precision,
    ) -> candle_core::Result<Self> {
        let linear = candle_nn::linear(input, output, vb.pp(name))?;
        match precision {
            Precision::F32 => Ok(Self::F32(linear)),
            Precision::Int8 => {
                let blocks = QTensor::quantize(linear.weight(), GgmlDType::Q8_0)?;
                let weights = Matrix::from_gguf(Format::Q8_0, &blocks.data()?, output, input)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                let bias = linear
                    .bias()
                    .ok_or_else(|| candle_core::Error::Msg(format!("{name}: no bias")))?
                    .clone();
                Ok(Self::Int8 { weights, bias })
            }
        }
    }

    /// `x` is `batch × len × input`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::F32(linear) => linear.forward(x),
            Self::Int8 { weights, bias } => {
                let (batch, len, input) = x.dims3()?;
                let kernel_error =
                    |e: orinari_kernels::ShapeError| candle_core::Error::Msg(e.to_string());
                let rows = x.flatten_all()?.to_vec1::<f32>()?;
                let activations = Activations::quantize(&rows, input).map_err(kernel_error)?;
                let mut out = vec![0.0; batch * len * weights.rows()];
                weights
                    .mul(&activations, &mut out, |n, f| {
                        candle_core::utils::barrier_pool().execute_chunked(n, f);
                    })
                    .map_err(kernel_error)?;
                Tensor::from_vec(out, (batch, len, weights.rows()), x.device())?.broadcast_add(bias)
            }
        }
    }
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
    /// its dense products in `precision`.
    pub(crate) fn load(
        weights: Vec<u8>,
        config: &Config,
        precision: Precision,
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
        let words = candle_nn::embedding(config.vocab_size, h, e.pp("word_embeddings"))?;
        let positions = candle_nn::embedding(
            config.max_position_embeddings,
            h,
            e.pp("position_embeddings"),
        )?;
        let segments =
            candle_nn::embedding(config.type_vocab_size, h, e.pp("token_type_embeddings"))?;
        let embeddings_norm = norm(&e, h, eps, "LayerNorm")?;
        let linear = |vb: &VarBuilder, input, output, name: &str| {
            Dense::load(vb, input, output, name, precision)
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                let a = l.pp("attention");
                let s = a.pp("self");
                Ok(Layer {
                    query: linear(&s, h, h, "query")?,
                    key: linear(&s, h, h, "key")?,
                    value: linear(&s, h, h, "value")?,
                    attention_out: linear(&a, h, h, "output.dense")?,
                    attention_norm: norm(&a, h, eps, "output.LayerNorm")?,
                    intermediate: linear(&l, h, config.intermediate_size, "intermediate.dense")?,
                    output: linear(&l, config.intermediate_size, h, "output.dense")?,
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
        let q = heads(l.query.forward(x)?)?;
        let k = heads(l.key.forward(x)?)?;
        let v = heads(l.value.forward(x)?)?;
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
            .forward(&(l.attention_out.forward(&context)? + x)?)?;
        let inner = l.intermediate.forward(&attended)?.gelu_erf()?;
        l.output_norm
            .forward(&(l.output.forward(&inner)? + attended)?)
    }
}

/// The vectors of a `batch × hidden` tensor, one `Vec` per row.
pub(crate) fn rows(t: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
    t.to_dtype(DType::F32)?.to_vec2::<f32>()
}
