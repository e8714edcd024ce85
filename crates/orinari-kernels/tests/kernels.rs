//! The vector kernel against the scalar reference (bit for bit), both
//! against a double-precision product over the dequantized weights, on
//! random shapes and values; and the shape checks.

#![allow(clippy::unwrap_used)]

use half::f16;
use orinari_kernels::{Activations, Format, Kernel, Matrix, TILE};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn f16_bytes(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

/// A random GGUF tensor of `rows` x `cols` in `format`, and its weights
/// dequantized as GGUF defines them.
fn random_weights(
    rng: &mut StdRng,
    format: Format,
    rows: usize,
    cols: usize,
) -> (Vec<u8>, Vec<f32>) {
    let mut bytes = Vec::new();
    let mut w = Vec::new();
    for _ in 0..rows * cols / 32 {
        match format {
            Format::Q4_1 => {
                let d = f16::from_f32(rng.random_range(0.0..0.02)).to_f32();
                let m = f16::from_f32(rng.random_range(-0.15..0.0)).to_f32();
                bytes.extend(f16_bytes(d));
                bytes.extend(f16_bytes(m));
                let qs: [u8; 16] = rng.random();
                bytes.extend(qs);
                let mut block = [0f32; 32];
                for (j, q) in qs.iter().enumerate() {
                    block[j] = f32::from(q & 0x0F) * d + m;
                    block[j + 16] = f32::from(q >> 4) * d + m;
                }
                w.extend(block);
            }
            Format::Q8_0 => {
                let d = f16::from_f32(rng.random_range(0.0..0.002)).to_f32();
                bytes.extend(f16_bytes(d));
                for _ in 0..32 {
                    // -128 included: GGUF allows it, the packing must too.
                    let q: i8 = rng.random();
                    bytes.push(q as u8);
                    w.push(f32::from(q) * d);
                }
            }
        }
    }
    (bytes, w)
}

fn random_activations(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match i % 97 {
            // Whole blocks of zeros and lone outliers occur in real activations.
            0 => 40.0,
            1..=3 => 0.0,
            _ => rng.random_range(-3.0..3.0),
        })
        .collect()
}

fn tile_major(m: &Matrix, kernel: Kernel, x: &Activations) -> Vec<f32> {
    let mut out = vec![0f32; m.tiles() * x.rows() * TILE];
    m.mul_tiles(kernel, x, 0..m.tiles(), &mut out).unwrap();
    out
}

fn serial(n: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
    f(0..n)
}

/// Uneven pieces, in reverse order, each on its own thread.
fn threaded(n: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
    std::thread::scope(|s| {
        let cuts = [0, n / 3, n / 3 + 1, n];
        for w in cuts.windows(2).rev() {
            let r = w[0]..w[1].max(w[0]);
            s.spawn(move || f(r));
        }
    });
}

/// Even cases Q4_1, odd ones Q8_0.
fn format_of(case: usize) -> Format {
    if case.is_multiple_of(2) {
        Format::Q4_1
    } else {
        Format::Q8_0
    }
}

/// A random `rows` x `cols` matrix and `n` random activation rows for it.
struct Case {
    m: Matrix,
    /// The weights, dequantized.
    w: Vec<f32>,
    /// The activations before quantization, and after.
    xf: Vec<f32>,
    x: Activations,
}

fn random_case(rng: &mut StdRng, format: Format, rows: usize, cols: usize, n: usize) -> Case {
    let (bytes, w) = random_weights(rng, format, rows, cols);
    let m = Matrix::from_gguf(format, &bytes, rows, cols).unwrap();
    let xf = random_activations(rng, n * cols);
    let x = Activations::quantize(&xf, cols).unwrap();
    Case { m, w, xf, x }
}

#[test]
fn the_vector_kernels_equal_the_reference_bit_for_bit() {
    let vector: Vec<Kernel> = [Kernel::Avx2, Kernel::Avx512Vnni]
        .into_iter()
        .filter(|k| k.available())
        .collect();
    if vector.is_empty() {
        eprintln!("this CPU has neither AVX2 nor AVX-512 VNNI: only the reference runs here");
        return;
    }
    let mut rng = StdRng::seed_from_u64(7);
    for case in 0..60 {
        let format = format_of(case);
        let rows = rng.random_range(1..70);
        let cols = 32 * rng.random_range(1..24);
        let n = [1, 2, 3, 7, 8, 9, 16, 17, 33][case % 9];
        let Case { m, x, .. } = random_case(&mut rng, format, rows, cols, n);
        let a = tile_major(&m, Kernel::Scalar, &x);
        for &kernel in &vector {
            let b = tile_major(&m, kernel, &x);
            let same = a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "case {case}: {kernel:?} {format:?} {rows}x{cols}, {n} rows differ"
            );
        }
    }
}

/// The largest products each kernel can meet: every Q4_1 weight 15 and
/// every Q8_0 weight -128 or 127, against activations of ±127 of one sign
/// (the AVX2 kernel adds pairs in 16 bits: no sum may saturate).
#[test]
fn extreme_weights_and_activations_do_not_overflow() {
    for format in [Format::Q4_1, Format::Q8_0] {
        for (q8, sign) in [(-128i8, 1f32), (127, 1.0), (-128, -1.0), (127, -1.0)] {
            let (rows, cols) = (16, 64);
            let gb = format.gguf_block_bytes();
            let mut bytes = vec![0u8; rows * cols / 32 * gb];
            for blk in bytes.chunks_exact_mut(gb) {
                blk[..2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
                match format {
                    Format::Q4_1 => blk[4..].fill(0xFF),
                    Format::Q8_0 => blk[2..].fill(q8 as u8),
                }
            }
            let m = Matrix::from_gguf(format, &bytes, rows, cols).unwrap();
            let x = Activations::quantize(&vec![sign; cols], cols).unwrap();
            let want = match format {
                Format::Q4_1 => 15.0 * f64::from(cols as u32) * f64::from(sign),
                Format::Q8_0 => f64::from(q8) * f64::from(cols as u32) * f64::from(sign),
            };
            for kernel in Kernel::ALL.into_iter().filter(|k| k.available()) {
                let out = tile_major(&m, kernel, &x);
                for v in &out[..rows] {
                    // Activations of 1 quantize to 127 · (1 / 127).
                    assert!(
                        (f64::from(*v) - want).abs() < 1e-3 * want.abs(),
                        "{kernel:?} {format:?} weights {q8}, activations {sign}: {v} (want {want})"
                    );
                }
            }
        }
    }
}

#[test]
fn products_match_a_double_precision_product_of_the_dequantized_values() {
    let mut rng = StdRng::seed_from_u64(11);
    for case in 0..40 {
        let format = format_of(case);
        let rows = rng.random_range(1..50);
        let cols = 32 * rng.random_range(1..20);
        let n = rng.random_range(1..12);
        let Case { m, w, xf, x } = random_case(&mut rng, format, rows, cols, n);
        let mut out = vec![0f32; n * rows];
        m.mul(&x, &mut out, threaded).unwrap();
        for r in 0..n {
            for c in 0..rows {
                // The activations as the kernel sees them: d · round(x / d).
                let (mut want, mut scale, mut exact, mut rounding) = (0f64, 0f64, 0f64, 0f64);
                for (b, xb) in xf[r * cols..(r + 1) * cols].chunks(32).enumerate() {
                    let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
                    let d = amax / 127.0;
                    let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
                    for (j, v) in xb.iter().enumerate() {
                        let wv = f64::from(w[c * cols + b * 32 + j]);
                        let q = f64::from((v * inv).round_ties_even()) * f64::from(d);
                        want += wv * q;
                        exact += wv * f64::from(*v);
                        scale += (wv * q).abs();
                        // Rounding to a step of d moves a value by d / 2 at most.
                        rounding += wv.abs() * f64::from(d) / 2.0;
                    }
                }
                let got = f64::from(out[r * rows + c]);
                assert!(
                    (got - want).abs() <= 1e-5 * scale + 1e-6,
                    "case {case} ({format:?}), row {r}, output {c}: {got} vs {want}"
                );
                // And the unquantized product is within the rounding bound.
                assert!(
                    (got - exact).abs() <= rounding * (1.0 + 1e-5) + 1e-5 * scale + 1e-6,
                    "{got} vs {exact} (bound {rounding})"
                );
            }
        }
    }
}

#[test]
fn a_row_is_the_same_alone_or_among_others_on_any_threads() {
    let mut rng = StdRng::seed_from_u64(13);
    for format in [Format::Q4_1, Format::Q8_0] {
        let (rows, cols, n) = (200, 576, 19);
        let (bytes, _) = random_weights(&mut rng, format, rows, cols);
        let m = Matrix::from_gguf(format, &bytes, rows, cols).unwrap();
        let xf = random_activations(&mut rng, n * cols);
        let mut all = vec![0f32; n * rows];
        m.mul(
            &Activations::quantize(&xf, cols).unwrap(),
            &mut all,
            threaded,
        )
        .unwrap();
        for r in 0..n {
            let x = Activations::quantize(&xf[r * cols..(r + 1) * cols], cols).unwrap();
            let mut one = vec![0f32; rows];
            m.mul(&x, &mut one, serial).unwrap();
            let same = one
                .iter()
                .zip(&all[r * rows..(r + 1) * rows])
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{format:?}: row {r} differs alone");
        }
    }
}

#[test]
fn a_stacked_matrix_splits_into_its_parts() {
    let mut rng = StdRng::seed_from_u64(19);
    let (cols, n) = (64, 5);
    let widths = [32, 16, 40];
    let parts: Vec<(Vec<u8>, Vec<f32>)> = widths
        .iter()
        .map(|&w| random_weights(&mut rng, Format::Q4_1, w, cols))
        .collect();
    let stacked: Vec<u8> = parts.iter().flat_map(|(b, _)| b.clone()).collect();
    let m = Matrix::from_gguf(Format::Q4_1, &stacked, 88, cols).unwrap();
    let x = Activations::quantize(&random_activations(&mut rng, n * cols), cols).unwrap();
    let got = m.mul_split(&x, &widths, threaded).unwrap();
    for ((bytes, _), (&w, got)) in parts.iter().zip(widths.iter().zip(&got)) {
        let alone = Matrix::from_gguf(Format::Q4_1, bytes, w, cols).unwrap();
        let mut want = vec![0f32; n * w];
        alone.mul(&x, &mut want, serial).unwrap();
        assert_eq!(got, &want);
    }
    assert!(
        m.mul_split(&x, &[40, 48], serial).is_err(),
        "a part off a tile"
    );
    assert!(
        m.mul_split(&x, &[32, 16], serial).is_err(),
        "parts short of the rows"
    );
}

#[test]
fn dequantized_rows_are_the_gguf_values() {
    let mut rng = StdRng::seed_from_u64(17);
    for format in [Format::Q4_1, Format::Q8_0] {
        let (rows, cols) = (37, 96);
        let (bytes, w) = random_weights(&mut rng, format, rows, cols);
        let m = Matrix::from_gguf(format, &bytes, rows, cols).unwrap();
        let mut row = vec![0f32; cols];
        for r in 0..rows {
            m.dequantize_row(r, &mut row).unwrap();
            assert_eq!(row, w[r * cols..(r + 1) * cols], "{format:?} row {r}");
        }
        assert!(m.dequantize_row(rows, &mut row).is_err());
    }
}

#[test]
fn shapes_that_do_not_fit_are_errors() {
    let q4 = vec![0u8; 20 * 4];
    assert!(Matrix::from_gguf(Format::Q4_1, &q4, 2, 64).is_ok());
    assert!(Matrix::from_gguf(Format::Q4_1, &q4, 2, 60).is_err());
    assert!(Matrix::from_gguf(Format::Q4_1, &q4, 3, 64).is_err());
    assert!(Matrix::from_gguf(Format::Q8_0, &q4, 2, 64).is_err());
    assert!(Matrix::from_gguf(Format::Q4_1, &[], 0, 64).is_err());
    let m = Matrix::from_gguf(Format::Q4_1, &q4, 2, 64).unwrap();
    assert!(Activations::quantize(&[0.0; 65], 64).is_err());
    assert!(Activations::quantize(&[0.0; 48], 48).is_err());
    let wrong = Activations::quantize(&[0.0; 96], 32).unwrap();
    let mut out = vec![0f32; 6];
    assert!(m.mul(&wrong, &mut out, serial).is_err());
    let x = Activations::quantize(&[1.0; 128], 64).unwrap();
    assert!(m.mul(&x, &mut [0f32; 3], serial).is_err());
    assert!(
        m.mul_tiles(Kernel::Scalar, &x, 0..2, &mut [0f32; 64])
            .is_err()
    );
    let mut out = vec![0f32; 4];
    m.mul(&x, &mut out, serial).unwrap();
    // Zero weights with a zero minimum: every output is zero.
    assert_eq!(out, [0.0; 4]);
}

#[test]
fn non_finite_activations_do_not_panic() {
    let (bytes, _) = random_weights(&mut StdRng::seed_from_u64(3), Format::Q8_0, 16, 32);
    let m = Matrix::from_gguf(Format::Q8_0, &bytes, 16, 32).unwrap();
    let mut x = vec![1.0f32; 32];
    x[3] = f32::NAN;
    x[5] = f32::INFINITY;
    let x = Activations::quantize(&x, 32).unwrap();
    let mut out = vec![0f32; 16];
    m.mul(&x, &mut out, serial).unwrap();
}

#[test]
fn kernels_are_found_by_name_and_bad_names_are_errors() {
    for kernel in Kernel::ALL {
        match Kernel::named(kernel.name()) {
            Ok(k) => assert_eq!(k, kernel),
            Err(e) => {
                assert!(!kernel.available(), "{kernel:?}: {e}");
                assert!(e.contains("cannot run"), "{e}");
            }
        }
    }
    assert_eq!(Kernel::named(" scalar\n"), Ok(Kernel::Scalar));
    let e = Kernel::named("avx512").unwrap_err();
    assert!(
        e.contains("\"avx512\" is not a kernel (scalar, avx2, avx512vnni)"),
        "{e}"
    );
    assert!(Kernel::best().available());
    assert!(Kernel::fastest().available());
}
