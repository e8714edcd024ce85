//! Single-thread speed of the kernels on SmolLM2-135M's layer shapes:
//! `cargo run --release -p orinari-kernels --example bench_kernels [ROWS...]`.
//! Prints, per activation row count, the time of one pass over all 210
//! layer matmuls (as a prompt chunk or a batched decode step would) and the
//! multiply-adds per second, for each format and kernel. The same seven
//! matrices serve all 30 layers, so they stay in cache: this measures the
//! arithmetic, not memory bandwidth.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use orinari_kernels::{Activations, Format, Kernel, Matrix, ShapeError, TILE};

/// (outputs, inputs) of one layer's seven matmuls.
const SHAPES: [(usize, usize); 7] = [
    (576, 576),
    (192, 576),
    (192, 576),
    (576, 576),
    (1536, 576),
    (1536, 576),
    (576, 1536),
];
const LAYERS: usize = 30;

fn main() -> Result<(), ShapeError> {
    let rows: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = if rows.is_empty() {
        vec![1, 4, 8, 64, 128]
    } else {
        rows
    };
    let macs_per_row: usize = SHAPES.iter().map(|(n, k)| n * k).sum::<usize>() * LAYERS;
    for format in [Format::Q4_1, Format::Q8_0] {
        let mats = SHAPES
            .iter()
            .map(|&(n, k)| {
                let bytes: Vec<u8> = (0..n * k / 32 * format.gguf_block_bytes())
                    .map(|i| ((i * 2_654_435_761) >> 7) as u8 & 0x3B)
                    .collect();
                Matrix::from_gguf(format, &bytes, n, k)
            })
            .collect::<Result<Vec<_>, _>>()?;
        for kernel in Kernel::ALL.into_iter().rev() {
            if !kernel.available() {
                continue;
            }
            for &m in &rows {
                if kernel == Kernel::Scalar && m > 8 {
                    continue;
                }
                let acts = [576usize, 1536]
                    .iter()
                    .map(|&k| {
                        let x: Vec<f32> =
                            (0..m * k).map(|i| ((i % 13) as f32 - 6.0) * 0.1).collect();
                        Activations::quantize(&x, k)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let mut out = vec![0f32; 1536 * m];
                let pass = |out: &mut Vec<f32>| -> Result<(), ShapeError> {
                    for _ in 0..LAYERS {
                        for mat in &mats {
                            let x = if mat.cols() == 576 {
                                &acts[0]
                            } else {
                                &acts[1]
                            };
                            let o = &mut out[..mat.tiles() * m * TILE];
                            mat.mul_tiles(kernel, x, 0..mat.tiles(), o)?;
                        }
                    }
                    Ok(())
                };
                pass(&mut out)?;
                let reps = (200 / m).max(3);
                let t = Instant::now();
                for _ in 0..reps {
                    pass(&mut out)?;
                }
                let s = t.elapsed().as_secs_f64() / reps as f64;
                println!(
                    "{format:?} {kernel:?} rows {m:>4}: {:>8.3} ms per pass, {:>7.1} µs per row, {:>6.1} GMAC/s",
                    s * 1e3,
                    s * 1e6 / m as f64,
                    (macs_per_row * m) as f64 / s / 1e9
                );
            }
        }
    }
    Ok(())
}
