//! The reference kernel: plain Rust, one output at a time, the same
//! arithmetic as the vector kernel in the same order (each block's integer
//! dot product is exact; its f32 terms are fused multiply-adds added block
//! after block), so the two agree bit for bit.

use half::f16;

use crate::{Activations, BLOCK, Format, TILE};

fn f16_at(bytes: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]).to_f32()
}

fn byte(groups: &[i32], g: usize, e: usize) -> i32 {
    i32::from(groups[g].to_le_bytes()[e] as i8)
}

/// One tile (`tile`: its packed blocks) times every row of `x`; `out` holds
/// `x.rows` rows of [`TILE`] outputs.
pub(crate) fn tile(format: Format, tile: &[u8], x: &Activations, out: &mut [f32]) {
    let tb = format.tile_block_bytes();
    for (r, out) in out.chunks_exact_mut(TILE).enumerate() {
        let row = x.row(r);
        for (c, out) in out.iter_mut().enumerate() {
            let mut acc = 0f32;
            for (b, blk) in tile.chunks_exact(tb).enumerate() {
                let groups = &row.groups[b * 8..][..8];
                let (dx, sx) = (row.scales[b], row.sums[b]);
                match format {
                    Format::Q4_1 => {
                        let mut dot = 0i32;
                        for p in 0..4 {
                            for e in 0..4 {
                                let w = blk[p * 64 + c * 4 + e];
                                dot += i32::from(w & 0x0F) * byte(groups, p, e);
                                dot += i32::from(w >> 4) * byte(groups, p + 4, e);
                            }
                        }
                        let (d, m) = (f16_at(&blk[256..], c), f16_at(&blk[288..], c));
                        acc = (dot as f32).mul_add(d * dx, acc);
                        acc = m.mul_add(dx * sx as f32, acc);
                    }
                    Format::Q8_0 => {
                        let mut dot = -128 * sx;
                        for g in 0..8 {
                            for e in 0..4 {
                                dot += i32::from(blk[g * 64 + c * 4 + e]) * byte(groups, g, e);
                            }
                        }
                        acc = (dot as f32).mul_add(f16_at(&blk[512..], c) * dx, acc);
                    }
                }
            }
            *out = acc;
        }
    }
}

/// Row `c` of one packed block, dequantized as GGUF defines it (`d·q + m`,
/// `d·q`).
pub(crate) fn dequantize(format: Format, blk: &[u8], c: usize, out: &mut [f32]) {
    debug_assert_eq!(out.len(), BLOCK);
    match format {
        Format::Q4_1 => {
            let (d, m) = (f16_at(&blk[256..], c), f16_at(&blk[288..], c));
            for p in 0..4 {
                for e in 0..4 {
                    let w = blk[p * 64 + c * 4 + e];
                    out[4 * p + e] = f32::from(w & 0x0F) * d + m;
                    out[16 + 4 * p + e] = f32::from(w >> 4) * d + m;
                }
            }
        }
        Format::Q8_0 => {
            let d = f16_at(&blk[512..], c);
            for g in 0..8 {
                for e in 0..4 {
                    out[4 * g + e] = f32::from((blk[g * 64 + c * 4 + e] ^ 0x80) as i8) * d;
                }
            }
        }
    }
}
