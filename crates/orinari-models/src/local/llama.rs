//! The llama forward pass over quantized weights, one sequence at a time.
//!
//! Each sequence owns a [`KvCache`] that grows on demand (no per-sequence
//! allocation of the whole context window), so many waiting conversations cost
//! memory in proportion to their length. Prompts may be fed in chunks at any
//! position: the causal mask is built for the chunk's offset, which lets the
//! scheduler interleave a long prompt with other sequences' decoding.

use std::collections::HashMap;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{D, DType, Device, Module, Tensor};

use super::gguf::Hyper;

type Result<T> = candle_core::Result<T>;

struct Layer {
    attn_norm: Tensor,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    ffn_norm: Tensor,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
}

/// How the matmul weights are laid out in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// As the GGUF loader left them (Q4_1, or Q8_0 after re-quantizing).
    AsLoaded,
    /// Re-quantized to this k-quant type with every input width zero-padded
    /// to a multiple of 256, so that candle's repacked x86 tile kernels can
    /// take every matmul (they need `k % 256 == 0`; SmolLM2's hidden width is
    /// 576).
    Padded(GgmlDType),
}

/// Candle's k-quant super-block: the tile kernels need input widths that
/// are a multiple of it.
const SUPER_BLOCK: usize = 256;

/// Model weights, shared read-only by all sequences.
pub struct Llama {
    hyper: Hyper,
    head_dim: usize,
    /// Zero columns appended to the hidden width for the padded layout.
    pad: usize,
    embed: QMatMul,
    output: QMatMul,
    norm: Tensor,
    layers: Vec<Layer>,
    cos: Tensor,
    sin: Tensor,
}

/// Keys and values of one sequence, per layer.
///
/// Positions `len..capacity` hold nothing meaningful: a forward pass writes
/// its keys and values before attention reads them, and attention reads only
/// up to the positions just written, so shortening `len` is a free truncation.
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    capacity: usize,
    /// Bytes one position takes across all layers (keys and values).
    token_bytes: usize,
}

impl KvCache {
    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes held (allocated capacity, not only the filled part).
    pub fn bytes(&self) -> usize {
        self.capacity * self.token_bytes
    }

    /// Forget every position from `len` on (no copy).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

fn take(tensors: &mut HashMap<String, QTensor>, name: &str) -> Result<QTensor> {
    tensors
        .remove(name)
        .ok_or_else(|| candle_core::Error::Msg(format!("the GGUF has no tensor `{name}`")))
}

fn dense(tensors: &mut HashMap<String, QTensor>, name: &str) -> Result<Tensor> {
    take(tensors, name)?.dequantize(&Device::Cpu)
}

fn qmm(tensors: &mut HashMap<String, QTensor>, name: &str, layout: Layout) -> Result<QMatMul> {
    let w = take(tensors, name)?;
    match layout {
        Layout::AsLoaded => QMatMul::from_qtensor(w),
        Layout::Padded(dtype) => QMatMul::from_qtensor(padded(&w, dtype)?),
    }
}

/// `w` (n x k) as `dtype` with k zero-padded to a multiple of
/// [`SUPER_BLOCK`]. The padded columns meet the zeros that [`Llama::widen`]
/// appends to the activations, so the product is unchanged.
fn padded(w: &QTensor, dtype: GgmlDType) -> Result<QTensor> {
    let f = w.dequantize(&Device::Cpu)?;
    let (_, k) = f.dims2()?;
    let pad = k.next_multiple_of(SUPER_BLOCK) - k;
    let f = if pad > 0 {
        f.pad_with_zeros(1, 0, pad)?
    } else {
        f
    };
    QTensor::quantize(&f, dtype)
}

impl Llama {
    /// Build the model from GGUF tensors (consumed).
    pub fn new(hyper: Hyper, mut t: HashMap<String, QTensor>, layout: Layout) -> Result<Self> {
        let head_dim = hyper.n_embd / hyper.n_head;
        let pad = match layout {
            Layout::AsLoaded => 0,
            Layout::Padded(_) => hyper.n_embd.next_multiple_of(SUPER_BLOCK) - hyper.n_embd,
        };
        let mut layers = Vec::with_capacity(hyper.n_layer);
        for i in 0..hyper.n_layer {
            let p = format!("blk.{i}");
            layers.push(Layer {
                attn_norm: dense(&mut t, &format!("{p}.attn_norm.weight"))?,
                wq: qmm(&mut t, &format!("{p}.attn_q.weight"), layout)?,
                wk: qmm(&mut t, &format!("{p}.attn_k.weight"), layout)?,
                wv: qmm(&mut t, &format!("{p}.attn_v.weight"), layout)?,
                wo: qmm(&mut t, &format!("{p}.attn_output.weight"), layout)?,
                ffn_norm: dense(&mut t, &format!("{p}.ffn_norm.weight"))?,
                gate: qmm(&mut t, &format!("{p}.ffn_gate.weight"), layout)?,
                up: qmm(&mut t, &format!("{p}.ffn_up.weight"), layout)?,
                down: qmm(&mut t, &format!("{p}.ffn_down.weight"), layout)?,
            });
        }
        let norm = dense(&mut t, "output_norm.weight")?;
        let embed_q = std::sync::Arc::new(take(&mut t, "token_embd.weight")?);
        // Tied embeddings: without `output.weight` the logits reuse the embedding matrix.
        let output = match (t.remove("output.weight"), layout) {
            (Some(o), Layout::AsLoaded) => QMatMul::from_qtensor(o)?,
            (Some(o), Layout::Padded(d)) => QMatMul::from_qtensor(padded(&o, d)?)?,
            (None, Layout::AsLoaded) => QMatMul::from_arc(embed_q.clone())?,
            (None, Layout::Padded(d)) => QMatMul::from_qtensor(padded(&embed_q, d)?)?,
        };
        let embed = QMatMul::from_arc(embed_q)?;

        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / hyper.rope_theta.powf(2.0 * i as f32 / head_dim as f32))
            .collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), &Device::Cpu)?;
        let positions = Tensor::arange(0u32, hyper.context_length as u32, &Device::Cpu)?
            .to_dtype(DType::F32)?
            .reshape((hyper.context_length, 1))?;
        let freqs = positions.matmul(&inv_freq)?;
        Ok(Self {
            head_dim,
            pad,
            embed,
            output,
            norm,
            layers,
            cos: freqs.cos()?,
            sin: freqs.sin()?,
            hyper,
        })
    }

    /// A new, empty cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: (0..self.hyper.n_layer).map(|_| None).collect(),
            len: 0,
            capacity: 0,
            token_bytes: self.hyper.n_layer * 2 * self.hyper.n_head_kv * self.head_dim * 4,
        }
    }

    /// A new cache holding a copy of the first `len` positions of `src`,
    /// with room for `capacity` positions (at least `len`).
    pub fn copy_prefix(&self, src: &KvCache, len: usize, capacity: usize) -> Result<KvCache> {
        let len = len.min(src.len);
        let mut dst = self.new_cache();
        self.resize(&mut dst, Some(src), len, capacity.max(len))?;
        Ok(dst)
    }

    /// Shrink `cache`'s allocation to `len + headroom` positions when it holds
    /// more than that plus `headroom` again (one copy of the filled part).
    pub fn compact(&self, cache: &mut KvCache, headroom: usize) -> Result<()> {
        let target = (cache.len + headroom).min(self.hyper.context_length);
        if cache.capacity <= target + headroom {
            return Ok(());
        }
        let mut dst = self.new_cache();
        self.resize(&mut dst, Some(cache), cache.len, target)?;
        *cache = dst;
        Ok(())
    }

    /// Feed `tokens` at the cache's current position; returns the logits of
    /// the last one. The caller keeps `cache.len() + tokens.len()` within the
    /// context window.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let x = self.hidden(tokens, cache)?;
        let n = tokens.len();
        self.logits(&x.narrow(1, n - 1, 1)?)?
            .flatten_all()?
            .to_vec1::<f32>()
    }

    /// Like [`Llama::forward`], but the logits of every fed position, one
    /// row each (for perplexity measurements).
    pub fn forward_all(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<Vec<f32>>> {
        let x = self.hidden(tokens, cache)?;
        self.logits(&x)?.squeeze(0)?.to_vec2::<f32>()
    }

    /// Final norm and output projection of hidden states `(1, n, n_embd)`.
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.widen(&candle_nn::ops::rms_norm(
            x,
            &self.norm,
            self.hyper.rms_eps,
        )?)?;
        self.output.forward(&x)
    }

    /// The last layer's hidden states for `tokens` fed at the cache's position.
    fn hidden(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let n = tokens.len();
        let pos = cache.len;
        if n == 0 || pos + n > self.hyper.context_length {
            candle_core::bail!("chunk of {n} tokens at {pos} does not fit the context");
        }
        self.reserve(cache, pos + n)?;
        let ids = Tensor::new(tokens, &Device::Cpu)?;
        let mut x = self.embed.embedding(&ids)?.unsqueeze(0)?;
        let cos = self.cos.narrow(0, pos, n)?;
        let sin = self.sin.narrow(0, pos, n)?;
        let mask = if n > 1 {
            Some(self.mask(pos, n)?)
        } else {
            None
        };
        for (layer, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, self.hyper.rms_eps)?;
            let Some((k_cache, v_cache)) = kv.as_mut() else {
                candle_core::bail!("cache not allocated");
            };
            let h = self.widen(&h)?;
            let attn =
                self.attention(layer, &h, k_cache, v_cache, pos, &cos, &sin, mask.as_ref())?;
            x = (x + attn)?;
            let h = self.widen(&candle_nn::ops::rms_norm(
                &x,
                &layer.ffn_norm,
                self.hyper.rms_eps,
            )?)?;
            let mlp = layer.down.forward(
                &(candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?,
            )?;
            x = (x + mlp)?;
        }
        cache.len = pos + n;
        Ok(x)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: &Layer,
        h: &Tensor,
        k_cache: &mut Tensor,
        v_cache: &mut Tensor,
        pos: usize,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, n, _) = h.dims3()?;
        let hd = self.head_dim;
        let (nh, nkv) = (self.hyper.n_head, self.hyper.n_head_kv);
        let q = layer
            .wq
            .forward(h)?
            .reshape((b, n, nh, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let k = layer
            .wk
            .forward(h)?
            .reshape((b, n, nkv, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = layer
            .wv
            .forward(h)?
            .reshape((b, n, nkv, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = candle_nn::rotary_emb::rope_i(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope_i(&k, cos, sin)?;
        k_cache.slice_set(&k, 2, pos)?;
        v_cache.slice_set(&v, 2, pos)?;
        let total = pos + n;
        let k = k_cache.narrow(2, 0, total)?;
        let v = v_cache.narrow(2, 0, total)?;
        // Grouped-query attention without copying keys: the query heads that
        // share a KV head are stacked as extra rows of that head's matrix.
        let rep = nh / nkv;
        let q = q.reshape((b, nkv, rep * n, hd))?;
        let att = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        let att = match mask {
            Some(m) => att.broadcast_add(m)?,
            None => att,
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v)?; // (b, nkv, rep*n, hd)
        let y = y
            .reshape((b, nh, n, hd))?
            .transpose(1, 2)?
            .reshape((b, n, nh * hd))?;
        layer.wo.forward(&self.widen(&y)?)
    }

    /// Append the padded layout's zero columns to activations (a no-op
    /// otherwise).
    fn widen(&self, x: &Tensor) -> Result<Tensor> {
        if self.pad == 0 {
            return Ok(x.clone());
        }
        x.pad_with_zeros(D::Minus1, 0, self.pad)
    }

    /// Additive causal mask for `n` query rows at offset `pos`, repeated for
    /// each query head sharing a KV head.
    fn mask(&self, pos: usize, n: usize) -> Result<Tensor> {
        let rep = self.hyper.n_head / self.hyper.n_head_kv;
        let total = pos + n;
        let mut m = Vec::with_capacity(rep * n * total);
        for _ in 0..rep {
            for i in 0..n {
                m.extend((0..total).map(|j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 }));
            }
        }
        Tensor::from_vec(m, (rep * n, total), &Device::Cpu)
    }

    /// Grow the cache (doubling, capped at the context window) to hold `needed` tokens.
    fn reserve(&self, cache: &mut KvCache, needed: usize) -> Result<()> {
        if needed <= cache.capacity {
            return Ok(());
        }
        let cap = needed
            .max(cache.capacity * 2)
            .max(64)
            .min(self.hyper.context_length);
        let len = cache.len;
        let mut grown = self.new_cache();
        self.resize(&mut grown, Some(cache), len, cap)?;
        *cache = grown;
        Ok(())
    }

    /// Allocate `dst` with `cap` positions and copy the first `len`
    /// positions of `src` into it.
    fn resize(
        &self,
        dst: &mut KvCache,
        src: Option<&KvCache>,
        len: usize,
        cap: usize,
    ) -> Result<()> {
        let shape = (1, self.hyper.n_head_kv, cap, self.head_dim);
        for (i, slot) in dst.layers.iter_mut().enumerate() {
            let k = Tensor::zeros(shape, DType::F32, &Device::Cpu)?;
            let v = Tensor::zeros(shape, DType::F32, &Device::Cpu)?;
            if let Some((ok, ov)) = src.and_then(|s| s.layers.get(i)).and_then(|l| l.as_ref())
                && len > 0
            {
                k.slice_set(&ok.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
                v.slice_set(&ov.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
            }
            *slot = Some((k, v));
        }
        dst.len = len;
        dst.capacity = cap;
        Ok(())
    }

    /// The context window in tokens.
    pub fn context_length(&self) -> usize {
        self.hyper.context_length
    }
}
