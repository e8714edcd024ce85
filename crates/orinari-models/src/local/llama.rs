//! The llama forward pass over quantized weights, one sequence at a time.
//!
//! Each sequence owns a [`KvCache`] that grows on demand (no per-sequence
//! allocation of the whole context window), so many waiting conversations cost
//! memory in proportion to their length. Prompts may be fed in chunks at any
//! position: the causal mask is built for the chunk's offset, which lets the
//! scheduler interleave a long prompt with other sequences' decoding.

use std::collections::HashMap;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

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

/// Model weights, shared read-only by all sequences.
pub struct Llama {
    hyper: Hyper,
    head_dim: usize,
    embed: QMatMul,
    output: QMatMul,
    norm: Tensor,
    layers: Vec<Layer>,
    cos: Tensor,
    sin: Tensor,
}

/// Keys and values of one sequence, per layer.
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    capacity: usize,
}

fn take(tensors: &mut HashMap<String, QTensor>, name: &str) -> Result<QTensor> {
    tensors
        .remove(name)
        .ok_or_else(|| candle_core::Error::Msg(format!("the GGUF has no tensor `{name}`")))
}

fn dense(tensors: &mut HashMap<String, QTensor>, name: &str) -> Result<Tensor> {
    take(tensors, name)?.dequantize(&Device::Cpu)
}

fn qmm(tensors: &mut HashMap<String, QTensor>, name: &str) -> Result<QMatMul> {
    QMatMul::from_qtensor(take(tensors, name)?)
}

impl Llama {
    /// Build the model from GGUF tensors (consumed).
    pub fn new(hyper: Hyper, mut t: HashMap<String, QTensor>) -> Result<Self> {
        let head_dim = hyper.n_embd / hyper.n_head;
        let mut layers = Vec::with_capacity(hyper.n_layer);
        for i in 0..hyper.n_layer {
            let p = format!("blk.{i}");
            layers.push(Layer {
                attn_norm: dense(&mut t, &format!("{p}.attn_norm.weight"))?,
                wq: qmm(&mut t, &format!("{p}.attn_q.weight"))?,
                wk: qmm(&mut t, &format!("{p}.attn_k.weight"))?,
                wv: qmm(&mut t, &format!("{p}.attn_v.weight"))?,
                wo: qmm(&mut t, &format!("{p}.attn_output.weight"))?,
                ffn_norm: dense(&mut t, &format!("{p}.ffn_norm.weight"))?,
                gate: qmm(&mut t, &format!("{p}.ffn_gate.weight"))?,
                up: qmm(&mut t, &format!("{p}.ffn_up.weight"))?,
                down: qmm(&mut t, &format!("{p}.ffn_down.weight"))?,
            });
        }
        let norm = dense(&mut t, "output_norm.weight")?;
        let embed_q = std::sync::Arc::new(take(&mut t, "token_embd.weight")?);
        // Tied embeddings: without `output.weight` the logits reuse the embedding matrix.
        let output = match t.remove("output.weight") {
            Some(o) => QMatMul::from_qtensor(o)?,
            None => QMatMul::from_arc(embed_q.clone())?,
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
        }
    }

    /// Feed `tokens` at the cache's current position; returns the logits of
    /// the last one. The caller keeps `cache.len() + tokens.len()` within the
    /// context window.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
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
            let attn =
                self.attention(layer, &h, k_cache, v_cache, pos, &cos, &sin, mask.as_ref())?;
            x = (x + attn)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, self.hyper.rms_eps)?;
            let mlp = layer.down.forward(
                &(candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?,
            )?;
            x = (x + mlp)?;
        }
        cache.len = pos + n;
        let last = x.narrow(1, n - 1, 1)?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, self.hyper.rms_eps)?;
        self.output.forward(&last)?.flatten_all()?.to_vec1::<f32>()
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
        layer.wo.forward(&y)
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
        let shape = (1, self.hyper.n_head_kv, cap, self.head_dim);
        for slot in &mut cache.layers {
            let k = Tensor::zeros(shape, DType::F32, &Device::Cpu)?;
            let v = Tensor::zeros(shape, DType::F32, &Device::Cpu)?;
            if let Some((ok, ov)) = slot.take()
                && cache.len > 0
            {
                k.slice_set(&ok.narrow(2, 0, cache.len)?.contiguous()?, 2, 0)?;
                v.slice_set(&ov.narrow(2, 0, cache.len)?.contiguous()?, 2, 0)?;
            }
            *slot = Some((k, v));
        }
        cache.capacity = cap;
        Ok(())
    }

    /// The context window in tokens.
    pub fn context_length(&self) -> usize {
        self.hyper.context_length
    }
}
