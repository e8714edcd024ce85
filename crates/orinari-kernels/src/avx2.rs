//! The AVX2 kernel, for x86-64 CPUs without AVX-512 VNNI (most laptops and
//! desktops): the same tiles read as two halves of eight rows, 8 outputs of
//! up to eight activation rows per pass over a half.
//!
//! There is no `vpdpbusd` here; `vpmaddubsw` multiplies unsigned by signed
//! bytes and adds neighbouring pairs into 16-bit lanes, and `vpmaddwd` by
//! ones adds those pairs into the 32-bit lanes `vpdpbusd` would have
//! filled. Both are exact as long as no 16-bit sum overflows:
//! - Q4_1: a weight is at most 15 and an activation at most 127 in
//!   magnitude (`Activations::quantize`), so a pair is at most 3,810 and the
//!   eight pairs of a block's lane add up to at most 30,480 < 32,767: they
//!   are added in 16 bits, then widened once per block.
//! - Q8_0: the tile stores `q + 128`, up to 255, which could overflow a pair
//!   (2 · 255 · 127); the kernel takes `|q|` as the unsigned operand and
//!   moves `q`'s sign onto the activation (`vpsignb`), so a pair is at most
//!   2 · 128 · 127 = 32,512, and each is widened at once.
//!
//! Every block's integer dot product is thus the same integer the AVX-512
//! kernel and the scalar reference compute, and the f32 steps are the same
//! fused multiply-adds in the same order: all three agree bit for bit.
//!
//! Safety: as in `x86.rs`, the functions here are safe functions with
//! `target_feature`; only [`tile`] calls into them, after [`available`]
//! confirmed the CPU has the features. The only other unsafe operations
//! are the unaligned loads and stores, each on a reference to an array of
//! exactly the bytes it reads or writes.

use std::arch::x86_64::{
    __m128i, __m256, __m256i, _mm_loadu_si128, _mm256_add_epi16, _mm256_add_epi32,
    _mm256_and_si256, _mm256_cvtepi32_ps, _mm256_cvtph_ps, _mm256_fmadd_ps, _mm256_loadu_si256,
    _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_mul_ps, _mm256_set1_epi8, _mm256_set1_epi16,
    _mm256_set1_epi32, _mm256_set1_ps, _mm256_setzero_ps, _mm256_setzero_si256, _mm256_sign_epi8,
    _mm256_srli_epi16, _mm256_storeu_ps, _mm256_xor_si256,
};

use crate::{Activations, Format, Row, TILE};

/// Outputs per half tile.
const HALF: usize = TILE / 2;

/// Whether this CPU has what the kernel uses.
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// One tile times every row of `x` (see `scalar::tile`). Does nothing on a
/// CPU without the features (`Matrix::mul_tiles` never asks for that).
pub(crate) fn tile(format: Format, tile: &[u8], x: &Activations, out: &mut [f32]) {
    if !available() {
        return;
    }
    // SAFETY: the CPU has AVX2, FMA and F16C (checked just above), all that
    // `rows` and what it calls are compiled for.
    unsafe { rows(format, tile, x, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn rows(format: Format, tile: &[u8], x: &Activations, out: &mut [f32]) {
    let mut r = 0;
    for out in out.chunks_mut(8 * TILE) {
        let n = out.len() / TILE;
        for half in 0..2 {
            match format {
                Format::Q4_1 => with_rows!(q4_1, n, tile, x, r, half, out),
                Format::Q8_0 => with_rows!(q8_0, n, tile, x, r, half, out),
            }
        }
        r += n;
    }
}

#[target_feature(enable = "avx2")]
fn load(bytes: &[u8; 32]) -> __m256i {
    // SAFETY: `bytes` is 32 readable bytes; the load has no alignment needs.
    unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
}

/// Eight f16 (little-endian) as f32.
#[target_feature(enable = "avx2,f16c")]
fn f16x8(bytes: &[u8; 16]) -> __m256 {
    // SAFETY: `bytes` is 16 readable bytes; the load has no alignment needs.
    let h: __m128i = unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) };
    _mm256_cvtph_ps(h)
}

#[target_feature(enable = "avx2")]
fn store(out: &mut [f32; HALF], v: __m256) {
    // SAFETY: `out` is 8 writable f32; the store has no alignment needs.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) }
}

/// Half `half` (outputs `8 · half..`) of rows `r0..r0 + R` of `x` against a
/// Q4_1 tile; `out` holds R rows of 16.
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_1<const R: usize>(tile: &[u8], x: &Activations, r0: usize, half: usize, out: &mut [f32]) {
    let rows: [Row<'_>; R] = std::array::from_fn(|i| x.row(r0 + i));
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    let tb = Format::Q4_1.tile_block_bytes();
    for (b, blk) in tile.chunks_exact(tb).enumerate() {
        let (w, _) = blk.as_chunks::<64>();
        let mut pairs = [_mm256_setzero_si256(); R];
        for p in 0..4 {
            let v = load(&w[p].as_chunks::<32>().0[half]);
            let lo = _mm256_and_si256(v, low);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
            for (pairs, row) in pairs.iter_mut().zip(&rows) {
                let g = &row.groups[b * 8..][..8];
                let a = _mm256_maddubs_epi16(lo, _mm256_set1_epi32(g[p]));
                let c = _mm256_maddubs_epi16(hi, _mm256_set1_epi32(g[p + 4]));
                *pairs = _mm256_add_epi16(*pairs, _mm256_add_epi16(a, c));
            }
        }
        let (dm, _) = w[4].as_chunks::<16>();
        let (d, m) = (f16x8(&dm[half]), f16x8(&dm[2 + half]));
        for ((acc, pairs), row) in acc.iter_mut().zip(pairs).zip(&rows) {
            let dot = _mm256_madd_epi16(pairs, ones);
            let (dx, sx) = (row.scales[b], row.sums[b]);
            *acc = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(dot),
                _mm256_mul_ps(d, _mm256_set1_ps(dx)),
                *acc,
            );
            *acc = _mm256_fmadd_ps(m, _mm256_set1_ps(dx * sx as f32), *acc);
        }
    }
    let (outs, _) = out.as_chunks_mut::<HALF>();
    for (out, acc) in outs.iter_mut().skip(half).step_by(2).zip(acc) {
        store(out, acc);
    }
}

/// Half `half` of rows `r0..r0 + R` of `x` against a Q8_0 tile; `out`
/// holds R rows of 16.
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0<const R: usize>(tile: &[u8], x: &Activations, r0: usize, half: usize, out: &mut [f32]) {
    let rows: [Row<'_>; R] = std::array::from_fn(|i| x.row(r0 + i));
    let offset = _mm256_set1_epi8(-128);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    let tb = Format::Q8_0.tile_block_bytes();
    for (b, blk) in tile.chunks_exact(tb).enumerate() {
        let (w, rest) = blk.as_chunks::<64>();
        let mut dot = [_mm256_setzero_si256(); R];
        for (g, w) in w.iter().enumerate() {
            // The tile holds q + 128: back to q, then |q| and q's sign.
            let q = _mm256_xor_si256(load(&w.as_chunks::<32>().0[half]), offset);
            let magnitude = _mm256_sign_epi8(q, q);
            for (dot, row) in dot.iter_mut().zip(&rows) {
                let a = _mm256_sign_epi8(_mm256_set1_epi32(row.groups[b * 8 + g]), q);
                let pairs = _mm256_maddubs_epi16(magnitude, a);
                *dot = _mm256_add_epi32(*dot, _mm256_madd_epi16(pairs, ones));
            }
        }
        let (ds, _) = rest.as_chunks::<16>();
        let d = f16x8(&ds[half]);
        for ((acc, dot), row) in acc.iter_mut().zip(dot).zip(&rows) {
            *acc = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(dot),
                _mm256_mul_ps(d, _mm256_set1_ps(row.scales[b])),
                *acc,
            );
        }
    }
    let (outs, _) = out.as_chunks_mut::<HALF>();
    for (out, acc) in outs.iter_mut().skip(half).step_by(2).zip(acc) {
        store(out, acc);
    }
}
