//! The llama forward pass over quantized weights: a chunk of one sequence
//! ([`Llama::forward`]), or one decode step of many sequences at once
//! ([`Llama::forward_batch`]).
//!
//! Each sequence owns a [`KvCache`] that grows on demand (no per-sequence
//! allocation of the whole context window), so many waiting conversations cost
//! memory in proportion to their length. Prompts may be fed in chunks at any
//! position (attention is causal from the chunk's offset), which lets the
//! scheduler interleave a long prompt with other sequences' decoding.
//!
//! A batched decode step stacks one token of each sequence into a single
//! activation, so every weight matmul reads its weights once for all of them;
//! rotary embedding, the key/value write and attention then run on each
//! sequence's own row, at its own position, against its own cache.
//!
//! Every row is computed the same way however many rows a pass holds: candle
//! quantizes each activation row on its own and computes each output row
//! with the same dot products whatever the number of rows, and attention
//! ([`causal_attention`]) runs row by row in a fixed order. So a token's
//! keys, values and logits do not depend on what it is batched with, nor on
//! whether it was fed alone or inside a prompt chunk (tested bit for bit).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{D, DType, Device, Module, Storage, Tensor};

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

/// Query, key and value projections of some rows, each `(1, rows, _)`.
struct Qkv {
    q: Tensor,
    k: Tensor,
    v: Tensor,
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

    /// One decode step of several sequences at once: `tokens[i]` is fed at
    /// `caches[i]`'s current position. Every weight matmul runs once over
    /// all the rows; rotary embedding, the key/value write and attention run
    /// per sequence. Returns each sequence's logits, in order, equal to what
    /// [`Llama::forward`] gives for that token alone. On error no cache has
    /// advanced, but caches may have grown and their unfilled positions may
    /// have been written.
    pub fn forward_batch(
        &self,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
    ) -> Result<Vec<Vec<f32>>> {
        let rows = tokens.len();
        if rows != caches.len() {
            candle_core::bail!("{rows} tokens for {} caches", caches.len());
        }
        if rows == 0 {
            return Ok(Vec::new());
        }
        let mut positions = Vec::with_capacity(rows);
        let mut rope = Vec::with_capacity(rows);
        for cache in caches.iter_mut() {
            let pos = cache.len;
            if pos >= self.hyper.context_length {
                candle_core::bail!("a token at {pos} does not fit the context");
            }
            self.reserve(cache, pos + 1)?;
            positions.push(pos);
            rope.push((self.cos.narrow(0, pos, 1)?, self.sin.narrow(0, pos, 1)?));
        }
        let ids = Tensor::new(tokens, &Device::Cpu)?;
        let mut x = self.embed.embedding(&ids)?.unsqueeze(0)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let h = self.widen(&candle_nn::ops::rms_norm(
                &x,
                &layer.attn_norm,
                self.hyper.rms_eps,
            )?)?;
            let qkv = Qkv {
                q: layer.wq.forward(&h)?,
                k: layer.wk.forward(&h)?,
                v: layer.wv.forward(&h)?,
            };
            let mut ys = Vec::with_capacity(rows);
            for (i, cache) in caches.iter_mut().enumerate() {
                let Some((k_cache, v_cache)) = cache.layers.get_mut(l).and_then(Option::as_mut)
                else {
                    candle_core::bail!("cache not allocated");
                };
                let row = Qkv {
                    q: qkv.q.narrow(1, i, 1)?,
                    k: qkv.k.narrow(1, i, 1)?,
                    v: qkv.v.narrow(1, i, 1)?,
                };
                let (cos, sin) = &rope[i];
                ys.push(self.attend(&row, k_cache, v_cache, positions[i], cos, sin)?);
            }
            let y = Tensor::cat(&ys, 1)?;
            x = (x + layer.wo.forward(&self.widen(&y)?)?)?;
            x = self.feed_forward(layer, &x)?;
        }
        for (cache, pos) in caches.iter_mut().zip(positions) {
            cache.len = pos + 1;
        }
        self.logits(&x)?.squeeze(0)?.to_vec2::<f32>()
    }

    /// A layer's feed-forward block with its residual: `x + down(silu(gate(h)) * up(h))`
    /// where `h` is `x` normalised (one row or many: every row on its own).
    fn feed_forward(&self, layer: &Layer, x: &Tensor) -> Result<Tensor> {
        let h = self.widen(&candle_nn::ops::rms_norm(
            x,
            &layer.ffn_norm,
            self.hyper.rms_eps,
        )?)?;
        let mlp = layer
            .down
            .forward(&(candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?)?;
        x + mlp
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
        for (layer, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, self.hyper.rms_eps)?;
            let Some((k_cache, v_cache)) = kv.as_mut() else {
                candle_core::bail!("cache not allocated");
            };
            let h = self.widen(&h)?;
            let attn = self.attention(layer, &h, k_cache, v_cache, pos, &cos, &sin)?;
            x = (x + attn)?;
            x = self.feed_forward(layer, &x)?;
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
    ) -> Result<Tensor> {
        let qkv = Qkv {
            q: layer.wq.forward(h)?,
            k: layer.wk.forward(h)?,
            v: layer.wv.forward(h)?,
        };
        let y = self.attend(&qkv, k_cache, v_cache, pos, cos, sin)?;
        layer.wo.forward(&self.widen(&y)?)
    }

    /// Rotary embedding, key/value write at `pos` and attention for the
    /// projected rows `(1, n, _)` of one sequence; returns `(1, n, n_embd)`
    /// before the output projection.
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &self,
        qkv: &Qkv,
        k_cache: &mut Tensor,
        v_cache: &mut Tensor,
        pos: usize,
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<Tensor> {
        let (b, n, _) = qkv.q.dims3()?;
        let hd = self.head_dim;
        let (nh, nkv) = (self.hyper.n_head, self.hyper.n_head_kv);
        let q = qkv
            .q
            .reshape((b, n, nh, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let k = qkv
            .k
            .reshape((b, n, nkv, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = qkv
            .v
            .reshape((b, n, nkv, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = candle_nn::rotary_emb::rope_i(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope_i(&k, cos, sin)?;
        k_cache.slice_set(&k, 2, pos)?;
        v_cache.slice_set(&v, 2, pos)?;
        let shape = Heads {
            n_head: nh,
            n_kv: nkv,
            head_dim: hd,
            capacity: k_cache.dim(2)?,
            pos,
            rows: n,
        };
        let (q_data, q_layout) = q.storage_and_layout();
        let (k_data, k_layout) = k_cache.storage_and_layout();
        let (v_data, v_layout) = v_cache.storage_and_layout();
        let y = causal_attention(
            f32_slice(&q_data, q_layout)?,
            f32_slice(&k_data, k_layout)?,
            f32_slice(&v_data, v_layout)?,
            &shape,
        )?;
        Tensor::from_vec(y, (b, n, nh * hd), &Device::Cpu)
    }

    /// Append the padded layout's zero columns to activations (a no-op
    /// otherwise).
    fn widen(&self, x: &Tensor) -> Result<Tensor> {
        if self.pad == 0 {
            return Ok(x.clone());
        }
        x.pad_with_zeros(D::Minus1, 0, self.pad)
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

/// Shapes of one attention call: `rows` query rows of one sequence at
/// positions `pos..pos + rows`, against a cache of `capacity` positions
/// per KV head.
struct Heads {
    n_head: usize,
    n_kv: usize,
    head_dim: usize,
    capacity: usize,
    pos: usize,
    rows: usize,
}

/// The data of a contiguous f32 CPU tensor.
fn f32_slice<'a>(storage: &'a Storage, layout: &candle_core::Layout) -> Result<&'a [f32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("attention needs contiguous tensors");
    };
    match storage {
        Storage::Cpu(cpu) => cpu
            .as_slice::<f32>()?
            .get(start..end)
            .ok_or_else(|| candle_core::Error::Msg("tensor data out of range".into())),
        _ => candle_core::bail!("attention runs on the CPU"),
    }
}

/// Causal grouped-query attention: for each query row `i` (position
/// `pos + i`) and head, softmax of the scaled dot products with keys
/// `0..=pos + i`, times the values.
///
/// Every output row is computed on its own, by the same operations in the
/// same order whatever the number of rows and wherever the row sits in its
/// chunk: a token's keys, values and logits are therefore the same bits fed
/// alone (a decode step), in a batch of sequences, or anywhere inside a
/// prompt chunk. That is what lets the prefix cache resume a prompt at any
/// token, generated ones included, and still answer exactly as without it.
/// (A matrix product over all rows at once sums in an order that depends on
/// the number of rows.)
///
/// `q` is `(n_head, rows, head_dim)`; `k` and `v` are `(n_kv, capacity,
/// head_dim)`. Returns `(rows, n_head, head_dim)`.
fn causal_attention(q: &[f32], k: &[f32], v: &[f32], s: &Heads) -> Result<Vec<f32>> {
    let hd = s.head_dim;
    let total = s.pos + s.rows;
    let shapes_ok = hd > 0
        && s.n_kv > 0
        && s.n_head.is_multiple_of(s.n_kv)
        && total <= s.capacity
        && q.len() == s.n_head * s.rows * hd
        && k.len() == s.n_kv * s.capacity * hd
        && v.len() == k.len();
    if !shapes_ok {
        candle_core::bail!("attention shapes do not match");
    }
    let rep = s.n_head / s.n_kv;
    let mut out = vec![0f32; s.rows * s.n_head * hd];
    // One unit of work per (query row, KV head): the `rep` query heads that
    // share the KV head, written to their own slice of the output (row
    // `i`'s heads `g * rep..(g + 1) * rep`). Units run on candle's threads;
    // which thread computes a unit changes nothing in its result.
    let slots: Vec<Mutex<&mut [f32]>> = out.chunks_mut(rep * hd).map(Mutex::new).collect();
    candle_core::utils::barrier_pool().execute_chunked(slots.len(), |units| {
        let mut scratch = Scratch::new(rep, total, hd);
        for u in units {
            let mut slot = slots[u].lock().unwrap_or_else(PoisonError::into_inner);
            attend_row(q, k, v, s, u / s.n_kv, u % s.n_kv, &mut scratch, &mut slot);
        }
    });
    drop(slots);
    Ok(out)
}

/// Working memory of [`attend_row`].
struct Scratch {
    /// Per query head of the group: scores, then unnormalised weights, over
    /// the keys.
    weights: Vec<f32>,
    sums: Vec<f32>,
    acc: Vec<f32>,
    stride: usize,
}

impl Scratch {
    fn new(rep: usize, total: usize, head_dim: usize) -> Self {
        Self {
            weights: vec![0.0; rep * total],
            sums: vec![0.0; rep],
            acc: vec![0.0; rep * head_dim],
            stride: total,
        }
    }
}

/// Attention of query row `i` for the query heads sharing KV head `g`,
/// written to `out` (`rep` heads of `head_dim`).
#[allow(clippy::too_many_arguments)]
fn attend_row(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: &Heads,
    i: usize,
    g: usize,
    scratch: &mut Scratch,
    out: &mut [f32],
) {
    let hd = s.head_dim;
    let rep = s.n_head / s.n_kv;
    let scale = 1.0 / (hd as f32).sqrt();
    let len = s.pos + i + 1;
    let keys = &k[g * s.capacity * hd..][..len * hd];
    let values = &v[g * s.capacity * hd..][..len * hd];
    let Scratch {
        weights,
        sums,
        acc,
        stride,
    } = scratch;
    for r in 0..rep {
        let query = &q[((g * rep + r) * s.rows + i) * hd..][..hd];
        let w = &mut weights[r * *stride..][..len];
        for (wj, key) in w.iter_mut().zip(keys.chunks_exact(hd)) {
            *wj = dot(query, key) * scale;
        }
        let max = reduce(w, f32::NEG_INFINITY, f32::max);
        for wj in w.iter_mut() {
            *wj = exp_nonpositive(*wj - max);
        }
        sums[r] = reduce(w, 0.0, |a, b| a + b);
    }
    acc.fill(0.0);
    for (j, value) in values.chunks_exact(hd).enumerate() {
        for r in 0..rep {
            let p = weights[r * *stride + j];
            for (a, x) in acc[r * hd..][..hd].iter_mut().zip(value) {
                *a += p * x;
            }
        }
    }
    for r in 0..rep {
        let inv = 1.0 / sums[r];
        for (o, a) in out[r * hd..][..hd].iter_mut().zip(&acc[r * hd..][..hd]) {
            *o = a * inv;
        }
    }
}

/// `e^x` for `x ≤ 0` (softmax weights after subtracting the maximum), to
/// about one unit in the last place, in plain arithmetic the compiler turns
/// into SIMD (a call to the C library's `expf` per element cannot be; at a
/// long context softmax takes one per key, head and layer, and they were
/// most of a prompt's attention time). `x = n ln 2 + r` with `|r| ≤ ln 2 / 2`;
/// `e^r` by its degree-7 Taylor polynomial (error below 2e-8 on that range);
/// `2^n` built in the exponent bits. Below `-87` the result would be
/// subnormal: it is flushed to 0 (`e^-87 ≈ 1.6e-38` does not move a sum of
/// weights whose largest is 1).
#[inline]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n * LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    // n is in -126..=0 here, so the biased exponent n + 127 is normal.
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x <= -87.0 { 0.0 } else { p * scale }
}

/// Running values per SIMD lane in [`reduce`] and [`dot`].
const LANES: usize = 16;

/// `xs` folded with `f` in a fixed order: [`LANES`] running values over the
/// slice (a form the compiler turns into SIMD), combined pairwise, then the
/// elements past the last whole group of lanes.
#[inline]
fn reduce(xs: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; LANES];
    let groups = xs.chunks_exact(LANES);
    let tail = groups.remainder().iter().fold(init, |a, &x| f(a, x));
    for g in groups {
        for l in 0..LANES {
            acc[l] = f(acc[l], g[l]);
        }
    }
    f(pairwise(acc, &f), tail)
}

/// The lanes of [`reduce`] and [`dot`] combined pairwise with `f`.
#[inline]
fn pairwise(mut acc: [f32; LANES], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] = f(acc[l], acc[l + width]);
        }
    }
    acc[0]
}

/// Dot product in the same fixed order as [`reduce`].
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (xs, ys) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = xs
        .remainder()
        .iter()
        .zip(ys.remainder())
        .fold(0.0, |t, (x, y)| t + x * y);
    for (x, y) in xs.zip(ys) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    pairwise(acc, |a, b| a + b) + tail
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
mod tests {
    use super::{KvCache, Layout, Llama};
    use candle_core::quantized::GgmlDType;

    fn load(requantize: bool, layout: Layout) -> Llama {
        let path = super::super::default_model_path();
        let g = super::super::gguf::load(&path, requantize).expect("run scripts/fetch-model.sh");
        Llama::new(g.hyper, g.tensors, layout).unwrap()
    }

    fn argmax(logits: &[f32]) -> u32 {
        let best = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i);
        u32::try_from(best).unwrap()
    }

    /// Three sequences at different positions (prompts of 5, 37 and 150
    /// tokens), fed token by token for a few steps, batched in varying
    /// groups, against the same steps run one sequence at a time. Returns
    /// the largest absolute difference between any two logits.
    fn batch_vs_single(model: &Llama) -> f32 {
        let vocab = 49_152u32;
        let prompts: Vec<Vec<u32>> = [5usize, 37, 150]
            .iter()
            .enumerate()
            .map(|(s, &n)| {
                (0..n)
                    .map(|i| ((i as u32 + 1) * 7_919 + s as u32 * 104_729) % vocab)
                    .collect()
            })
            .collect();
        let mut single: Vec<KvCache> = Vec::new();
        let mut batched: Vec<KvCache> = Vec::new();
        let mut next = Vec::new();
        for p in &prompts {
            let mut a = model.new_cache();
            let mut b = model.new_cache();
            let la = model.forward(p, &mut a).unwrap();
            let lb = model.forward(p, &mut b).unwrap();
            assert_eq!(la, lb);
            next.push(argmax(&la));
            single.push(a);
            batched.push(b);
        }
        let mut worst = 0f32;
        // Which sequences take part in each step: all, a pair, one alone.
        for group in [
            vec![0, 1, 2],
            vec![0, 2],
            vec![1],
            vec![2, 1, 0],
            vec![0, 1, 2],
        ] {
            let tokens: Vec<u32> = group.iter().map(|&i| next[i]).collect();
            let expected: Vec<Vec<f32>> = group
                .iter()
                .map(|&i| model.forward(&[next[i]], &mut single[i]).unwrap())
                .collect();
            // Lend the group's caches out, in the group's order.
            let mut lent: Vec<KvCache> = group
                .iter()
                .map(|&i| std::mem::replace(&mut batched[i], model.new_cache()))
                .collect();
            let mut caches: Vec<&mut KvCache> = lent.iter_mut().collect();
            let got = model.forward_batch(&tokens, &mut caches).unwrap();
            assert_eq!(got.len(), group.len());
            for (&i, cache) in group.iter().zip(lent) {
                batched[i] = cache;
            }
            for ((&i, e), g) in group.iter().zip(&expected).zip(&got) {
                assert_eq!(e.len(), g.len());
                for (x, y) in e.iter().zip(g) {
                    worst = worst.max((x - y).abs());
                }
                assert_eq!(single[i].len(), batched[i].len());
                next[i] = argmax(e);
            }
        }
        worst
    }

    #[test]
    fn batched_decode_logits_equal_separate_forward_calls() {
        // The default weights (Q4_1 re-quantized to Q8_0) and the GGUF's own
        // Q4_1: bit for bit.
        for requantize in [true, false] {
            let model = load(requantize, Layout::AsLoaded);
            let worst = batch_vs_single(&model);
            assert_eq!(
                worst, 0.0,
                "requantize {requantize}: logits differ by {worst}"
            );
        }
        // Padded Q4K takes candle's tile kernels for one row and for
        // several alike: bit for bit too.
        let worst = batch_vs_single(&load(false, Layout::Padded(GgmlDType::Q4K)));
        assert_eq!(worst, 0.0, "padded Q4K: logits differ by {worst}");
        // Padded Q6K does not: candle runs one row through its Q6K vector dot
        // product and several through the tile kernel, which rounds
        // differently (the same difference a prompt chunk already has
        // against a decode step): 1.48 at most in this test.
        let worst = batch_vs_single(&load(false, Layout::Padded(GgmlDType::Q6K)));
        eprintln!("padded Q6K: largest logit difference {worst}");
        assert!(worst > 0.0 && worst < 4.0, "padded Q6K: {worst}");
    }

    /// Logits at every position of 150 tokens fed as one chunk, and fed in
    /// uneven pieces (5, 1, 94, then one at a time): the largest difference.
    fn chunk_vs_pieces(model: &Llama) -> f32 {
        let tokens: Vec<u32> = (0..150u32).map(|i| ((i + 1) * 7_919) % 49_152).collect();
        let mut whole = model.new_cache();
        let all = model.forward_all(&tokens, &mut whole).unwrap();
        let mut pieces = model.new_cache();
        let mut got = Vec::new();
        for piece in [&tokens[..5], &tokens[5..6], &tokens[6..100]] {
            got.extend(model.forward_all(piece, &mut pieces).unwrap());
        }
        for t in &tokens[100..] {
            got.push(model.forward(&[*t], &mut pieces).unwrap());
        }
        assert_eq!((all.len(), got.len()), (150, 150));
        assert_eq!(whole.len(), pieces.len());
        all.iter()
            .zip(&got)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
            .fold(0f32, f32::max)
    }

    #[test]
    fn a_position_is_the_same_fed_alone_or_inside_a_chunk() {
        // What lets the prefix cache resume at any token, generated ones
        // included: bit for bit with the default weights, the GGUF's Q4_1
        // and padded Q4K.
        for (requantize, layout) in [
            (true, Layout::AsLoaded),
            (false, Layout::AsLoaded),
            (false, Layout::Padded(GgmlDType::Q4K)),
        ] {
            let worst = chunk_vs_pieces(&load(requantize, layout));
            assert_eq!(
                worst, 0.0,
                "{requantize} {layout:?}: logits differ by {worst}"
            );
        }
    }

    #[test]
    fn causal_attention_matches_a_double_precision_reference() {
        let (nh, nkv, hd, cap, pos, rows) = (9, 3, 64, 40, 27, 10);
        let mut seed = 0x2545_f491_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed as f32 / u32::MAX as f32) * 4.0 - 2.0
        };
        let q: Vec<f32> = (0..nh * rows * hd).map(|_| next()).collect();
        let k: Vec<f32> = (0..nkv * cap * hd).map(|_| next()).collect();
        let v: Vec<f32> = (0..nkv * cap * hd).map(|_| next()).collect();
        let shape = super::Heads {
            n_head: nh,
            n_kv: nkv,
            head_dim: hd,
            capacity: cap,
            pos,
            rows,
        };
        let got = super::causal_attention(&q, &k, &v, &shape).unwrap();
        let mut worst = 0f64;
        for i in 0..rows {
            for h in 0..nh {
                let g = h / (nh / nkv);
                let query = &q[(h * rows + i) * hd..][..hd];
                let scores: Vec<f64> = (0..=pos + i)
                    .map(|j| {
                        let key = &k[(g * cap + j) * hd..][..hd];
                        let d: f64 = query
                            .iter()
                            .zip(key)
                            .map(|(a, b)| f64::from(*a) * f64::from(*b))
                            .sum();
                        d / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for d in 0..hd {
                    let want: f64 = e
                        .iter()
                        .enumerate()
                        .map(|(j, w)| w * f64::from(v[(g * cap + j) * hd + d]))
                        .sum::<f64>()
                        / sum;
                    let y = f64::from(got[(i * nh + h) * hd + d]);
                    worst = worst.max((y - want).abs());
                }
            }
        }
        assert!(worst < 1e-5, "largest difference {worst}");
        // Wrong shapes are an error, not a panic.
        let short = super::Heads {
            capacity: pos,
            ..shape
        };
        assert!(super::causal_attention(&q, &k, &v, &short).is_err());
    }

    #[test]
    fn exp_matches_the_c_library_on_softmax_inputs() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -90.0 * i as f32 / 200_000.0;
            let want = f64::from(x.exp());
            let got = f64::from(super::exp_nonpositive(x));
            if x > -87.0 {
                worst = worst.max((got - want).abs() / want);
            } else {
                assert_eq!(got, 0.0);
            }
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(super::exp_nonpositive(0.0), 1.0);
    }

    #[test]
    fn fixed_order_reductions_agree_with_plain_sums() {
        let xs: Vec<f32> = (0..70).map(|i| (i as f32 * 0.37).sin()).collect();
        let plain: f32 = xs.iter().sum();
        assert!((super::reduce(&xs, 0.0, |a, b| a + b) - plain).abs() < 1e-5);
        let max = super::reduce(&xs, f32::NEG_INFINITY, f32::max);
        assert_eq!(max, xs.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        let dot = super::dot(&xs, &xs);
        assert!((dot - xs.iter().map(|x| x * x).sum::<f32>()).abs() < 1e-4);
        assert_eq!(
            super::dot(&xs[..3], &xs[..3]),
            xs[..3].iter().map(|x| x * x).sum::<f32>()
        );
    }

    #[test]
    fn forward_batch_checks_its_arguments() {
        let model = load(true, Layout::AsLoaded);
        let mut a = model.new_cache();
        assert!(model.forward_batch(&[1, 2], &mut [&mut a]).is_err());
        assert!(model.forward_batch(&[], &mut []).unwrap().is_empty());
        assert_eq!(a.len(), 0);
    }
}
