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
//! rotary embedding and the key/value write then run on each sequence's own
//! row, at its own position, into its own cache, and attention for all of
//! them in one dispatch to the thread pool ([`causal_attention_many`]).
//!
//! Matrix products run in `orinari-kernels` (the GGUF's blocks repacked,
//! [`Layout::Packed`]) where the CPU has AVX-512 VNNI, in candle's kernels
//! otherwise. Every row is computed the same way however many rows a pass
//! holds: both quantize each activation row on its own and compute each
//! output row with the same operations whatever the number of rows, and
//! attention computes each query row on its own in a fixed order. So a
//! token's keys, values and logits do not depend on what it is batched
//! with, nor on whether it was fed alone or inside a prompt chunk (tested
//! bit for bit).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard, PoisonError};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{D, DType, Device, Module, Storage, Tensor};
use orinari_kernels::{Activations, Format, Matrix};

use super::gguf::Hyper;

type Result<T> = candle_core::Result<T>;

struct Layer {
    attn_norm: Tensor,
    /// Query, key and value projections.
    qkv: Linear,
    wo: Linear,
    ffn_norm: Tensor,
    /// Gate and up projections.
    gate_up: Linear,
    down: Linear,
}

/// Projections of the same input: one weight matrix per part, and the
/// kernel that multiplies by them.
enum Linear {
    /// Candle's quantized matmul, one per part.
    Candle(Vec<QMatMul>),
    /// The parts' GGUF blocks stacked into one matrix and repacked for
    /// `orinari-kernels`: one pass for all parts (activations quantized
    /// once, one dispatch to the thread pool).
    Packed { m: Matrix, widths: Vec<usize> },
}

impl Linear {
    /// `x · Wᵀ` for each part, `x` of shape `(1, rows, cols)`.
    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Linear::Candle(parts) => parts.iter().map(|m| m.forward(x)).collect(),
            Linear::Packed { widths, .. } => {
                let (b, rows, _) = x.dims3()?;
                self.forward_vecs(x)?
                    .into_iter()
                    .zip(widths)
                    .map(|(out, &w)| Tensor::from_vec(out, (b, rows, w), &Device::Cpu))
                    .collect()
            }
        }
    }

    /// [`Linear::forward`] as plain row-major data, for callers that work
    /// on it directly (the packed kernel's output is used as it comes).
    fn forward_vecs(&self, x: &Tensor) -> Result<Vec<Vec<f32>>> {
        match self {
            Linear::Candle(parts) => parts
                .iter()
                .map(|m| m.forward(x)?.flatten_all()?.to_vec1())
                .collect(),
            Linear::Packed { m, widths } => {
                let (_, _, cols) = x.dims3()?;
                let x = x.contiguous()?;
                let a = {
                    let (data, layout) = x.storage_and_layout();
                    Activations::quantize(f32_slice(&data, layout)?, cols).map_err(kernel_error)?
                };
                m.mul_split(&a, widths, |n, f| {
                    candle_core::utils::barrier_pool().execute_chunked(n, f)
                })
                .map_err(kernel_error)
            }
        }
    }

    /// [`Linear::forward`] of exactly `N` parts.
    fn forward_n<const N: usize>(&self, x: &Tensor) -> Result<[Tensor; N]> {
        <[Tensor; N]>::try_from(self.forward(x)?)
            .map_err(|v| candle_core::Error::Msg(format!("{} projections, not {N}", v.len())))
    }

    /// [`Linear::forward`] of a single matrix.
    fn forward1(&self, x: &Tensor) -> Result<Tensor> {
        let [y] = self.forward_n(x)?;
        Ok(y)
    }
}

fn kernel_error(e: orinari_kernels::ShapeError) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// `ws` (of the same inputs) stacked and repacked for `orinari-kernels`,
/// when all are one format the kernel reads (Q4_1, Q8_0) and every part
/// but the last fills whole tiles.
fn stack(ws: &[&QTensor]) -> Result<Option<Linear>> {
    let format = match ws.first().map(|w| w.dtype()) {
        Some(GgmlDType::Q4_1) => Format::Q4_1,
        Some(GgmlDType::Q8_0) => Format::Q8_0,
        _ => return Ok(None),
    };
    let mut widths = Vec::with_capacity(ws.len());
    let mut cols = None;
    let mut data = Vec::with_capacity(ws.len());
    for w in ws {
        let (rows, c) = w.shape().dims2()?;
        if w.dtype() != ws[0].dtype() || cols.is_some_and(|k| k != c) {
            return Ok(None);
        }
        cols = Some(c);
        widths.push(rows);
        data.push(w.data()?);
    }
    let aligned = widths
        .split_last()
        .is_some_and(|(_, init)| init.iter().all(|w| w.is_multiple_of(orinari_kernels::TILE)));
    let (Some(cols), true) = (cols, aligned) else {
        return Ok(None);
    };
    let parts: Vec<(&[u8], usize)> = data
        .iter()
        .map(|d| &d[..])
        .zip(widths.iter().copied())
        .collect();
    let m = Matrix::stacked(format, &parts, cols).map_err(kernel_error)?;
    Ok(Some(Linear::Packed { m, widths }))
}

/// Query, key and value projections of some rows of one or more
/// sequences, each row-major: `(rows, heads, head_dim)`.
struct Qkv {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Qkv {
    /// `layer`'s projections of `h`, `(1, rows, n_embd)`.
    fn project(layer: &Layer, h: &Tensor) -> Result<Self> {
        let parts = layer.qkv.forward_vecs(h)?;
        let [q, k, v] = <[Vec<f32>; 3]>::try_from(parts)
            .map_err(|p| candle_core::Error::Msg(format!("{} projections, not 3", p.len())))?;
        Ok(Self { q, k, v })
    }
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
    /// The GGUF's own Q4_1 and Q8_0 blocks repacked into tiles for
    /// `orinari-kernels` (its AVX-512 VNNI kernel where the CPU has it: the
    /// caller checks, the scalar reference is far slower); other formats
    /// stay with candle.
    Packed,
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
    output: Linear,
    norm: Tensor,
    layers: Vec<Layer>,
    /// Rotary embedding's cosines and sines, `head_dim / 2` per position.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// Keys and values of one sequence, per layer.
///
/// Positions `len..capacity` hold nothing meaningful: a forward pass writes
/// its keys and values before attention reads them, and attention reads only
/// up to the positions just written, so shortening `len` is a free truncation.
pub struct KvCache {
    /// Per layer: keys and values, `(n_head_kv, capacity, head_dim)` each
    /// (empty until the first allocation).
    layers: Vec<(Vec<f32>, Vec<f32>)>,
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

/// The named tensors as projections of one input (see [`linear`]).
fn qmm(tensors: &mut HashMap<String, QTensor>, names: &[String], layout: Layout) -> Result<Linear> {
    let ws = names
        .iter()
        .map(|n| take(tensors, n))
        .collect::<Result<Vec<_>>>()?;
    linear(ws, layout)
}

/// Projections of one input laid out as `layout` asks: stacked and packed
/// where the kernel takes them, candle's matmuls otherwise.
fn linear(ws: Vec<QTensor>, layout: Layout) -> Result<Linear> {
    match layout {
        Layout::AsLoaded => {}
        Layout::Padded(dtype) => {
            let parts = ws.iter().map(|w| QMatMul::from_qtensor(padded(w, dtype)?));
            return Ok(Linear::Candle(parts.collect::<Result<_>>()?));
        }
        Layout::Packed => {
            if let Some(l) = stack(&ws.iter().collect::<Vec<_>>())? {
                return Ok(l);
            }
        }
    }
    let parts = ws.into_iter().map(QMatMul::from_qtensor);
    Ok(Linear::Candle(parts.collect::<Result<_>>()?))
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
            Layout::AsLoaded | Layout::Packed => 0,
            Layout::Padded(_) => hyper.n_embd.next_multiple_of(SUPER_BLOCK) - hyper.n_embd,
        };
        let mut layers = Vec::with_capacity(hyper.n_layer);
        for i in 0..hyper.n_layer {
            let p = format!("blk.{i}");
            layers.push(Layer {
                attn_norm: dense(&mut t, &format!("{p}.attn_norm.weight"))?,
                qkv: qmm(
                    &mut t,
                    &["attn_q", "attn_k", "attn_v"].map(|n| format!("{p}.{n}.weight")),
                    layout,
                )?,
                wo: qmm(&mut t, &[format!("{p}.attn_output.weight")], layout)?,
                ffn_norm: dense(&mut t, &format!("{p}.ffn_norm.weight"))?,
                gate_up: qmm(
                    &mut t,
                    &["ffn_gate", "ffn_up"].map(|n| format!("{p}.{n}.weight")),
                    layout,
                )?,
                down: qmm(&mut t, &[format!("{p}.ffn_down.weight")], layout)?,
            });
        }
        let norm = dense(&mut t, "output_norm.weight")?;
        let embed_q = std::sync::Arc::new(take(&mut t, "token_embd.weight")?);
        // Tied embeddings: without `output.weight` the logits reuse the embedding matrix.
        let output = match (t.remove("output.weight"), layout) {
            (Some(o), layout) => linear(vec![o], layout)?,
            (None, Layout::AsLoaded) => Linear::Candle(vec![QMatMul::from_arc(embed_q.clone())?]),
            (None, Layout::Padded(d)) => {
                Linear::Candle(vec![QMatMul::from_qtensor(padded(&embed_q, d)?)?])
            }
            // A packed copy of the embedding (candle's stays for the lookup).
            (None, Layout::Packed) => match stack(&[&embed_q])? {
                Some(l) => l,
                None => Linear::Candle(vec![QMatMul::from_arc(embed_q.clone())?]),
            },
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
            cos: freqs.cos()?.flatten_all()?.to_vec1()?,
            sin: freqs.sin()?.flatten_all()?.to_vec1()?,
            hyper,
        })
    }

    /// A new, empty cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: (0..self.hyper.n_layer)
                .map(|_| (Vec::new(), Vec::new()))
                .collect(),
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
        for cache in caches.iter_mut() {
            let pos = cache.len;
            if pos >= self.hyper.context_length {
                candle_core::bail!("a token at {pos} does not fit the context");
            }
            self.reserve(cache, pos + 1)?;
            positions.push(pos);
        }
        let (nh, nkv, hd) = (self.hyper.n_head, self.hyper.n_head_kv, self.head_dim);
        let ids = Tensor::new(tokens, &Device::Cpu)?;
        let mut x = self.embed.embedding(&ids)?.unsqueeze(0)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let h = self.widen(&candle_nn::ops::rms_norm(
                &x,
                &layer.attn_norm,
                self.hyper.rms_eps,
            )?)?;
            let mut qkv = Qkv::project(layer, &h)?;
            self.rope(&mut qkv.q, nh, |i| positions[i]);
            self.rope(&mut qkv.k, nkv, |i| positions[i]);
            let mut shapes = Vec::with_capacity(rows);
            for (i, cache) in caches.iter_mut().enumerate() {
                let kv = nkv * hd;
                let (k, v) = (&qkv.k[i * kv..][..kv], &qkv.v[i * kv..][..kv]);
                shapes.push(self.write_kv(k, v, cache, l, positions[i])?);
            }
            let y = self.attend_many(&qkv.q, &shapes, caches, l)?;
            x = (x + layer.wo.forward1(&self.widen(&y)?)?)?;
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
        let [gate, up] = layer.gate_up.forward_n(&h)?;
        let mlp = layer.down.forward1(&(candle_nn::ops::silu(&gate)? * up)?)?;
        x + mlp
    }

    /// Final norm and output projection of hidden states `(1, n, n_embd)`.
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.widen(&candle_nn::ops::rms_norm(
            x,
            &self.norm,
            self.hyper.rms_eps,
        )?)?;
        self.output.forward1(&x)
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
        for (l, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, self.hyper.rms_eps)?;
            let h = self.widen(&h)?;
            let attn = self.attention(layer, &h, cache, l, pos)?;
            x = (x + attn)?;
            x = self.feed_forward(layer, &x)?;
        }
        cache.len = pos + n;
        Ok(x)
    }

    /// A layer's attention block for rows `(1, n, _)` of one sequence at
    /// `pos`: projections, rotary embedding, the key/value write, attention
    /// and the output projection.
    fn attention(
        &self,
        layer: &Layer,
        h: &Tensor,
        cache: &mut KvCache,
        l: usize,
        pos: usize,
    ) -> Result<Tensor> {
        let mut qkv = Qkv::project(layer, h)?;
        self.rope(&mut qkv.q, self.hyper.n_head, |i| pos + i);
        self.rope(&mut qkv.k, self.hyper.n_head_kv, |i| pos + i);
        let shape = self.write_kv(&qkv.k, &qkv.v, cache, l, pos)?;
        let (k, v) = &cache.layers[l];
        let y = causal_attention(&qkv.q, k, v, &shape)?;
        let width = self.hyper.n_head * self.head_dim;
        let y = Tensor::from_vec(y, (1, shape.rows, width), &Device::Cpu)?;
        layer.wo.forward1(&self.widen(&y)?)
    }

    /// Rotary embedding, in place, of `x`: rows of `heads` heads of
    /// `head_dim`, row `i` at position `position(i)`. Pairs are
    /// interleaved (`x[2j]`, `x[2j + 1]`), as GGUF llama models store them.
    fn rope(&self, x: &mut [f32], heads: usize, position: impl Fn(usize) -> usize) {
        let hd = self.head_dim;
        let half = hd / 2;
        for (i, row) in x.chunks_exact_mut(heads * hd).enumerate() {
            let at = position(i) * half;
            let (cos, sin) = (&self.cos[at..at + half], &self.sin[at..at + half]);
            for head in row.chunks_exact_mut(hd) {
                for ((pair, c), s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
                    let (a, b) = (pair[0], pair[1]);
                    pair[0] = a * c - b * s;
                    pair[1] = a * s + b * c;
                }
            }
        }
    }

    /// Keys and values of some rows of one sequence (row-major,
    /// `(rows, n_head_kv, head_dim)`, rotary embedding applied to the keys)
    /// written to layer `l` of its cache at `pos`; returns the shapes
    /// attention needs.
    fn write_kv(
        &self,
        k: &[f32],
        v: &[f32],
        cache: &mut KvCache,
        l: usize,
        pos: usize,
    ) -> Result<Heads> {
        let (nkv, hd) = (self.hyper.n_head_kv, self.head_dim);
        let rows = k.len() / (nkv * hd);
        let cap = cache.capacity;
        let Some((kc, vc)) = cache.layers.get_mut(l) else {
            candle_core::bail!("no layer {l} in the cache");
        };
        if pos + rows > cap || kc.len() != nkv * cap * hd || v.len() != k.len() {
            candle_core::bail!("{rows} rows at {pos} do not fit a cache of {cap}");
        }
        for (r, (krow, vrow)) in k
            .chunks_exact(nkv * hd)
            .zip(v.chunks_exact(nkv * hd))
            .enumerate()
        {
            for g in 0..nkv {
                let at = (g * cap + pos + r) * hd;
                kc[at..at + hd].copy_from_slice(&krow[g * hd..][..hd]);
                vc[at..at + hd].copy_from_slice(&vrow[g * hd..][..hd]);
            }
        }
        Ok(Heads {
            n_head: self.hyper.n_head,
            n_kv: nkv,
            head_dim: hd,
            capacity: cap,
            pos,
            rows,
        })
    }

    /// Attention of one row per sequence (row `i` of `q`, with `shapes[i]`
    /// from [`Llama::write_kv`], against `caches[i]`'s layer `l`), all in
    /// one dispatch; returns `(1, rows, n_embd)` before the output
    /// projection.
    fn attend_many(
        &self,
        q: &[f32],
        shapes: &[Heads],
        caches: &[&mut KvCache],
        l: usize,
    ) -> Result<Tensor> {
        let width = self.hyper.n_head * self.head_dim;
        let mut jobs = Vec::with_capacity(shapes.len());
        for (i, (cache, s)) in caches.iter().zip(shapes).enumerate() {
            let Some((k, v)) = cache.layers.get(l) else {
                candle_core::bail!("no layer {l} in the cache");
            };
            jobs.push(AttentionJob {
                q: q.get(i * width..(i + 1) * width).unwrap_or_default(),
                k,
                v,
                s,
            });
        }
        let y: Vec<f32> = causal_attention_many(&jobs)?.concat();
        let rows = y.len() / width;
        Tensor::from_vec(y, (1, rows, width), &Device::Cpu)
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
    /// positions of `src` into it. Running out of memory is an error, not an
    /// abort (the prefix cache then only misses).
    fn resize(
        &self,
        dst: &mut KvCache,
        src: Option<&KvCache>,
        len: usize,
        cap: usize,
    ) -> Result<()> {
        let (nkv, hd) = (self.hyper.n_head_kv, self.head_dim);
        let zeros = || -> Result<Vec<f32>> {
            let mut v = Vec::new();
            v.try_reserve_exact(nkv * cap * hd)
                .map_err(|e| candle_core::Error::Msg(format!("key/value cache: {e}")))?;
            v.resize(nkv * cap * hd, 0.0);
            Ok(v)
        };
        for (i, slot) in dst.layers.iter_mut().enumerate() {
            let (mut k, mut v) = (zeros()?, zeros()?);
            if let Some(src) = src
                && let Some((sk, sv)) = src.layers.get(i)
                && len > 0
            {
                if len > src.capacity || len > cap {
                    candle_core::bail!("copying {len} positions of {}", src.capacity);
                }
                for g in 0..nkv {
                    let (from, to) = (g * src.capacity * hd, g * cap * hd);
                    k[to..][..len * hd].copy_from_slice(&sk[from..][..len * hd]);
                    v[to..][..len * hd].copy_from_slice(&sv[from..][..len * hd]);
                }
            }
            *slot = (k, v);
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
/// `q` is `(rows, n_head, head_dim)`; `k` and `v` are `(n_kv, capacity,
/// head_dim)`. Returns `(rows, n_head, head_dim)`.
fn causal_attention(q: &[f32], k: &[f32], v: &[f32], s: &Heads) -> Result<Vec<f32>> {
    let mut outs = causal_attention_many(&[AttentionJob { q, k, v, s }])?;
    outs.pop()
        .ok_or_else(|| candle_core::Error::Msg("attention lost its output".into()))
}

/// One sequence's part of [`causal_attention_many`].
struct AttentionJob<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    s: &'a Heads,
}

/// [`causal_attention`] of several sequences (a batched decode step), in
/// one dispatch to candle's threads: their units of work are shared out
/// together, so the threads stay balanced however few rows each sequence
/// has. Each unit is computed exactly as it would be alone.
fn causal_attention_many(jobs: &[AttentionJob<'_>]) -> Result<Vec<Vec<f32>>> {
    let mut longest = 0;
    let mut heads = None;
    for AttentionJob { q, k, v, s } in jobs {
        let hd = s.head_dim;
        let total = s.pos + s.rows;
        let shapes_ok = hd > 0
            && s.n_kv > 0
            && s.n_head.is_multiple_of(s.n_kv)
            && total <= s.capacity
            && q.len() == s.n_head * s.rows * hd
            && k.len() == s.n_kv * s.capacity * hd
            && v.len() == k.len()
            && heads.is_none_or(|h| h == (s.n_head, s.n_kv, hd));
        if !shapes_ok {
            candle_core::bail!("attention shapes do not match");
        }
        heads = Some((s.n_head, s.n_kv, hd));
        longest = longest.max(total);
    }
    let Some((n_head, n_kv, hd)) = heads else {
        return Ok(Vec::new());
    };
    let rep = n_head / n_kv;
    let mut outs: Vec<Vec<f32>> = jobs
        .iter()
        .map(|j| vec![0f32; j.s.rows * n_head * hd])
        .collect();
    // Each output row's `rep` query heads sharing KV head `g` go to their
    // own slice (row `i`'s heads `g * rep..(g + 1) * rep`), one slot each.
    let slots: Vec<Vec<Mutex<&mut [f32]>>> = outs
        .iter_mut()
        .map(|out| out.chunks_mut(rep * hd).map(Mutex::new).collect())
        .collect();
    // One unit of work per (sequence, block of up to ROW_BLOCK query rows,
    // KV head): a block reads its keys and values once for all its rows.
    // Units run on candle's threads; neither the thread nor the block
    // changes a row's result (see `attend_rows`).
    let units: Vec<(usize, Range<usize>, usize)> = jobs
        .iter()
        .enumerate()
        .flat_map(|(j, job)| {
            (0..job.s.rows).step_by(ROW_BLOCK).flat_map(move |start| {
                let rows = start..(start + ROW_BLOCK).min(job.s.rows);
                (0..n_kv).map(move |g| (j, rows.clone(), g))
            })
        })
        .collect();
    candle_core::utils::barrier_pool().execute_chunked(units.len(), |range| {
        let mut scratch = Scratch::new(ROW_BLOCK * rep, longest, hd);
        for (j, rows, g) in &units[range] {
            let AttentionJob { q, k, v, s } = jobs[*j];
            let mut out: Vec<_> = rows
                .clone()
                .map(|i| {
                    slots[*j][i * n_kv + g]
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                })
                .collect();
            attend_rows(q, k, v, s, rows.clone(), *g, &mut scratch, &mut out);
        }
    });
    drop(slots);
    Ok(outs)
}

/// Query rows attended together by one unit of [`causal_attention_many`].
const ROW_BLOCK: usize = 8;

/// Working memory of [`attend_rows`].
struct Scratch {
    /// Per query head of the block (row-major: row, then head of the
    /// group): scores, then unnormalised weights, over the keys.
    weights: Vec<f32>,
    sums: Vec<f32>,
    acc: Vec<f32>,
    stride: usize,
}

impl Scratch {
    /// Room for `heads` query heads over `total` keys.
    fn new(heads: usize, total: usize, head_dim: usize) -> Self {
        Self {
            weights: vec![0.0; heads * total],
            sums: vec![0.0; heads],
            acc: vec![0.0; heads * head_dim],
            stride: total,
        }
    }
}

/// Attention of query rows `rows` for the query heads sharing KV head `g`,
/// written to `out` (per row, `rep` heads of `head_dim`).
///
/// The keys and values are read once for the block, but each row's
/// arithmetic is its own and in a fixed order: its scores key by key, the
/// maximum and sum over its keys by [`reduce`], and its weighted values
/// added key after key. So a row gives the same bits in any block, alone
/// or with others.
#[allow(clippy::too_many_arguments)]
fn attend_rows(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: &Heads,
    rows: Range<usize>,
    g: usize,
    scratch: &mut Scratch,
    out: &mut [MutexGuard<'_, &mut [f32]>],
) {
    let hd = s.head_dim;
    let rep = s.n_head / s.n_kv;
    let scale = 1.0 / (hd as f32).sqrt();
    // Row `i` attends to keys `0..s.pos + i + 1`.
    let len = |i: usize| s.pos + i + 1;
    let all = len(rows.end - 1);
    let keys = &k[g * s.capacity * hd..][..all * hd];
    let values = &v[g * s.capacity * hd..][..all * hd];
    let Scratch {
        weights,
        sums,
        acc,
        stride,
    } = scratch;
    let stride = *stride;
    let query = |i: usize, r: usize| &q[(i * s.n_head + g * rep + r) * hd..][..hd];
    for (j, key) in keys.chunks_exact(hd).enumerate() {
        for (b, i) in rows.clone().enumerate() {
            if j < len(i) {
                for r in 0..rep {
                    weights[(b * rep + r) * stride + j] = dot(query(i, r), key) * scale;
                }
            }
        }
    }
    for (b, i) in rows.clone().enumerate() {
        for r in 0..rep {
            let h = b * rep + r;
            let w = &mut weights[h * stride..][..len(i)];
            let max = reduce(w, f32::NEG_INFINITY, f32::max);
            exp_shifted(w, max);
            sums[h] = reduce(w, 0.0, |a, b| a + b);
        }
    }
    let heads = rows.len() * rep;
    acc[..heads * hd].fill(0.0);
    for (j, value) in values.chunks_exact(hd).enumerate() {
        for (b, i) in rows.clone().enumerate() {
            if j < len(i) {
                for r in 0..rep {
                    let h = b * rep + r;
                    let p = weights[h * stride + j];
                    for (a, x) in acc[h * hd..][..hd].iter_mut().zip(value) {
                        *a += p * x;
                    }
                }
            }
        }
    }
    for (b, out) in out.iter_mut().enumerate() {
        for r in 0..rep {
            let h = b * rep + r;
            let inv = 1.0 / sums[h];
            for (o, a) in out[r * hd..][..hd].iter_mut().zip(&acc[h * hd..][..hd]) {
                *o = a * inv;
            }
        }
    }
}

/// `w[j] = e^(w[j] - max)` for every `j`: a loop of its own, which the
/// compiler turns into SIMD (inside `attend_rows` it did not).
#[inline(never)]
fn exp_shifted(w: &mut [f32], max: f32) {
    for wj in w.iter_mut() {
        *wj = exp_nonpositive(*wj - max);
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
    // (Wrapping: an overflow check, on in test builds, keeps the loop from
    // being vectorized; n + 127 cannot overflow.)
    let scale = f32::from_bits(((n as i32).wrapping_add(127) as u32) << 23);
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
        // The packed kernel (the default where the CPU has it): bit for bit.
        if super::super::packed_kernel_available() {
            let worst = batch_vs_single(&load(false, Layout::Packed));
            assert_eq!(worst, 0.0, "packed: logits differ by {worst}");
        }
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
        // included: bit for bit with the packed kernel (where the CPU has
        // it), candle's Q8_0 and Q4_1, and padded Q4K.
        let packed = super::super::packed_kernel_available().then_some((false, Layout::Packed));
        for (requantize, layout) in [
            (true, Layout::AsLoaded),
            (false, Layout::AsLoaded),
            (false, Layout::Padded(GgmlDType::Q4K)),
        ]
        .into_iter()
        .chain(packed)
        {
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
                let query = &q[(i * nh + h) * hd..][..hd];
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
