//! The AVX-512 VNNI kernel: 16 outputs of up to eight activation rows per
//! pass over a tile.
//!
//! For each block of 32 inputs, `vpdpbusd` multiplies the tile's weights
//! (unsigned bytes: Q4_1's nibbles, or Q8_0's bytes offset by 128) by four
//! activation bytes broadcast to every lane and adds each lane's four
//! products to its 32-bit sum: eight instructions per block and row. The
//! block's sum then meets the scales in f32, exactly as the scalar reference
//! (`scalar.rs`) computes it, fused multiply-add for fused multiply-add.
//!
//! Safety: the functions here are safe functions with `target_feature`;
//! only [`tile`] calls into them, after [`available`] confirmed the CPU has
//! the features (checked again by the caller, `Matrix::mul_tiles`). The
//! only other unsafe operations are the unaligned loads and stores, each
//! on a reference to an array of exactly the bytes it reads or writes.

use std::arch::x86_64::{
    __m512, __m512i, _mm256_loadu_si256, _mm512_and_si512, _mm512_cvtepi32_ps, _mm512_cvtph_ps,
    _mm512_dpbusd_epi32, _mm512_fmadd_ps, _mm512_loadu_si512, _mm512_mul_ps, _mm512_set1_epi8,
    _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_ps, _mm512_setzero_si512, _mm512_srli_epi16,
    _mm512_storeu_ps,
};

use crate::{Activations, Format, Row, TILE};

/// Whether this CPU has what the kernel uses.
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

/// One tile times every row of `x` (see `scalar::tile`). Does nothing on a
/// CPU without the features (`Matrix::mul_tiles` never asks for that).
pub(crate) fn tile(format: Format, tile: &[u8], x: &Activations, out: &mut [f32]) {
    if !available() {
        return;
    }
    // SAFETY: the CPU has AVX-512 F and BW and VNNI (checked just above),
    // all that `rows` and what it calls are compiled for.
    unsafe { rows(format, tile, x, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn rows(format: Format, tile: &[u8], x: &Activations, out: &mut [f32]) {
    let mut r = 0;
    for out in out.chunks_mut(8 * TILE) {
        let n = out.len() / TILE;
        match format {
            Format::Q4_1 => with_rows!(q4_1, n, tile, x, r, out),
            Format::Q8_0 => with_rows!(q8_0, n, tile, x, r, out),
        }
        r += n;
    }
}

#[target_feature(enable = "avx512f")]
fn load(bytes: &[u8; 64]) -> __m512i {
    // SAFETY: `bytes` is 64 readable bytes; the load has no alignment needs.
    unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) }
}

/// Sixteen f16 (little-endian) as f32.
#[target_feature(enable = "avx512f")]
fn f16x16(bytes: &[u8; 32]) -> __m512 {
    // SAFETY: `bytes` is 32 readable bytes; the load has no alignment needs.
    let h = unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) };
    _mm512_cvtph_ps(h)
}

#[target_feature(enable = "avx512f")]
fn store(out: &mut [f32; TILE], v: __m512) {
    // SAFETY: `out` is 16 writable f32; the store has no alignment needs.
    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) }
}

/// Rows `r0..r0 + R` of `x` against a Q4_1 tile; `out` holds R rows of 16.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn q4_1<const R: usize>(tile: &[u8], x: &Activations, r0: usize, out: &mut [f32]) {
    let rows: [Row<'_>; R] = std::array::from_fn(|i| x.row(r0 + i));
    let low = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); R];
    let tb = Format::Q4_1.tile_block_bytes();
    for (b, blk) in tile.chunks_exact(tb).enumerate() {
        let (w, _) = blk.as_chunks::<64>();
        let mut dot = [_mm512_setzero_si512(); R];
        for p in 0..4 {
            let v = load(&w[p]);
            let lo = _mm512_and_si512(v, low);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
            for (dot, row) in dot.iter_mut().zip(&rows) {
                let g = &row.groups[b * 8..][..8];
                *dot = _mm512_dpbusd_epi32(*dot, lo, _mm512_set1_epi32(g[p]));
                *dot = _mm512_dpbusd_epi32(*dot, hi, _mm512_set1_epi32(g[p + 4]));
            }
        }
        let (dm, _) = w[4].as_chunks::<32>();
        let (d, m) = (f16x16(&dm[0]), f16x16(&dm[1]));
        for ((acc, dot), row) in acc.iter_mut().zip(dot).zip(&rows) {
            let (dx, sx) = (row.scales[b], row.sums[b]);
            *acc = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(dot),
                _mm512_mul_ps(d, _mm512_set1_ps(dx)),
                *acc,
            );
            *acc = _mm512_fmadd_ps(m, _mm512_set1_ps(dx * sx as f32), *acc);
        }
    }
    let (outs, _) = out.as_chunks_mut::<TILE>();
    for (out, acc) in outs.iter_mut().zip(acc) {
        store(out, acc);
    }
}

/// Rows `r0..r0 + R` of `x` against a Q8_0 tile; `out` holds R rows of 16.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn q8_0<const R: usize>(tile: &[u8], x: &Activations, r0: usize, out: &mut [f32]) {
    let rows: [Row<'_>; R] = std::array::from_fn(|i| x.row(r0 + i));
    let mut acc = [_mm512_setzero_ps(); R];
    let tb = Format::Q8_0.tile_block_bytes();
    for (b, blk) in tile.chunks_exact(tb).enumerate() {
        let (w, rest) = blk.as_chunks::<64>();
        // The weights are q + 128: start each sum at -128 · Σq.
        let mut dot = [_mm512_setzero_si512(); R];
        for (dot, row) in dot.iter_mut().zip(&rows) {
            *dot = _mm512_set1_epi32(-128 * row.sums[b]);
        }
        for (g, w) in w.iter().enumerate() {
            let v = load(w);
            for (dot, row) in dot.iter_mut().zip(&rows) {
                *dot = _mm512_dpbusd_epi32(*dot, v, _mm512_set1_epi32(row.groups[b * 8 + g]));
            }
        }
        let (ds, _) = rest.as_chunks::<32>();
        let d = f16x16(&ds[0]);
        for ((acc, dot), row) in acc.iter_mut().zip(dot).zip(&rows) {
            *acc = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(dot),
                _mm512_mul_ps(d, _mm512_set1_ps(row.scales[b])),
                *acc,
            );
        }
    }
    let (outs, _) = out.as_chunks_mut::<TILE>();
    for (out, acc) in outs.iter_mut().zip(acc) {
        store(out, acc);
    }
}
