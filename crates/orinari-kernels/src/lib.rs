//! Int8 matrix products over GGUF weights for the embedded chat model (and
//! the prompt-injection guard's sentence encoder, `orinari-embed`).
//!
//! A weight matrix of `rows` outputs by `cols` inputs, stored in GGUF as
//! Q4_1 (per 32 weights: an f16 scale `d`, an f16 minimum `m` and 32
//! unsigned 4-bit values, `w = d·q + m`) or Q8_0 (an f16 scale and 32 signed
//! bytes, `w = d·q`), is repacked once at load into [`TILE`]-row tiles whose
//! bytes are laid out for one instruction: AVX-512 VNNI's `vpdpbusd`, which
//! multiplies 64 unsigned bytes by 64 signed bytes and adds each group of
//! four products into one of 16 32-bit lanes. A tile's block holds, for each
//! group of four inputs, the four weights of each of its 16 rows side by
//! side, so one instruction advances 16 outputs by four inputs, and each
//! load of weights serves up to eight activation rows.
//!
//! Activations are quantized per row and per 32 inputs to signed bytes with
//! an f32 scale ([`Activations`]), as llama.cpp quantizes them for its
//! integer dot products; a block's integer dot product is exact, and the
//! blocks are added in f32 in a fixed order. Every output row is therefore
//! computed by the same operations whatever the number of rows — the
//! embedded model relies on that (a token's keys and logits must not depend
//! on what it is batched with).
//!
//! Three kernels compute the same function bit for bit: a scalar reference
//! in plain Rust, the AVX-512 VNNI kernel ([`Kernel::Avx512Vnni`]) and an
//! AVX2 kernel for x86-64 CPUs without it ([`Kernel::Avx2`]: `vpmaddubsw`
//! and `vpmaddwd` where VNNI has one instruction); [`Kernel::best`] picks the
//! fastest the CPU runs. The vector kernels are the only `unsafe` code of
//! the workspace: the intrinsics that read or write memory, each on a
//! fixed-size array reference, and one call each after the CPU's features
//! were checked. The tests compare the kernels on random shapes and values,
//! and each with a product over the dequantized weights.

use std::fmt;
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

#[cfg(target_arch = "x86_64")]
/// `$kernel::<R>(args)` for `R = $rows` (1 to 8): the row count is a
/// constant inside the kernels, so their accumulators stay in registers.
macro_rules! with_rows {
    ($kernel:ident, $rows:expr, $($arg:expr),*) => {
        match $rows {
            8 => $kernel::<8>($($arg),*),
            7 => $kernel::<7>($($arg),*),
            6 => $kernel::<6>($($arg),*),
            5 => $kernel::<5>($($arg),*),
            4 => $kernel::<4>($($arg),*),
            3 => $kernel::<3>($($arg),*),
            2 => $kernel::<2>($($arg),*),
            _ => $kernel::<1>($($arg),*),
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Inputs per quantization block (weights and activations).
pub const BLOCK: usize = 32;
/// Output rows per tile.
pub const TILE: usize = 16;
/// The most units of work [`Matrix::mul`] hands to its parallel loop.
const UNITS: usize = 64;

/// The GGUF block format of a weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// 4-bit unsigned values with an f16 scale and minimum per 32.
    Q4_1,
    /// Signed bytes with an f16 scale per 32.
    Q8_0,
}

impl Format {
    /// Bytes of one GGUF block of 32 weights.
    pub const fn gguf_block_bytes(self) -> usize {
        match self {
            Format::Q4_1 => 20,
            Format::Q8_0 => 34,
        }
    }

    /// Bytes of one packed block of a tile: [`TILE`] rows by 32 inputs.
    const fn tile_block_bytes(self) -> usize {
        match self {
            // Four 64-byte groups of nibbles, then 16 scales and 16 minimums.
            Format::Q4_1 => 4 * 64 + 32 + 32,
            // Eight 64-byte groups of bytes, then 16 scales.
            Format::Q8_0 => 8 * 64 + 32,
        }
    }
}

/// Shapes or lengths that do not fit together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(String);

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShapeError {}

fn shape_error(msg: String) -> ShapeError {
    ShapeError(msg)
}

/// Which implementation computes the tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Plain Rust, one output at a time: the reference.
    Scalar,
    /// AVX2 with FMA and F16C: 8 outputs per instruction, for x86-64 CPUs
    /// without AVX-512 VNNI.
    Avx2,
    /// AVX-512 (F, BW) with VNNI: 16 outputs per instruction.
    Avx512Vnni,
}

impl Kernel {
    /// Every kernel, slowest first.
    pub const ALL: [Kernel; 3] = [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512Vnni];

    /// The kernel [`Matrix::mul`] uses: the one `ORINARI_KERNEL` names if
    /// this CPU runs it ([`Kernel::requested`]), else the fastest this CPU
    /// runs. Decided once per process.
    pub fn best() -> Kernel {
        static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            Kernel::requested()
                .ok()
                .flatten()
                .unwrap_or_else(Kernel::fastest)
        })
    }

    /// The fastest kernel this CPU runs.
    pub fn fastest() -> Kernel {
        Kernel::ALL
            .into_iter()
            .rev()
            .find(|k| k.available())
            .unwrap_or(Kernel::Scalar)
    }

    /// The kernel the environment variable `ORINARI_KERNEL` asks for
    /// (`scalar`, `avx2`, `avx512vnni`), for measuring one kernel against
    /// another or for a machine that advertises a feature it cannot run:
    /// `Ok(None)` when unset, an error naming the value when it is not a
    /// kernel or this CPU cannot run it (then [`Kernel::best`] ignores it).
    pub fn requested() -> Result<Option<Kernel>, String> {
        match std::env::var("ORINARI_KERNEL") {
            Ok(name) => Kernel::named(&name)
                .map(Some)
                .map_err(|e| format!("ORINARI_KERNEL: {e}")),
            Err(_) => Ok(None),
        }
    }

    /// The kernel called `name` ([`Kernel::name`]) if this CPU runs it.
    pub fn named(name: &str) -> Result<Kernel, String> {
        let kernel = Kernel::ALL
            .into_iter()
            .find(|k| k.name() == name.trim())
            .ok_or_else(|| format!("{name:?} is not a kernel (scalar, avx2, avx512vnni)"))?;
        if !kernel.available() {
            return Err(format!("{name:?}: this CPU cannot run it"));
        }
        Ok(kernel)
    }

    /// The kernel's name, as `ORINARI_KERNEL` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512Vnni => "avx512vnni",
        }
    }

    /// Whether this CPU runs the kernel.
    pub fn available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => avx2::available(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => x86::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2 | Kernel::Avx512Vnni => false,
        }
    }
}

/// Activation rows quantized for [`Matrix::mul`]: per row and per 32 inputs,
/// signed bytes `q = round(x / d)` (ties to even) with `d = max|x| / 127`,
/// and the sum of
/// the block's `q`.
#[derive(Debug, Clone)]
pub struct Activations {
    rows: usize,
    blocks: usize,
    /// Per row, per block: eight groups of four bytes, little-endian.
    groups: Vec<i32>,
    /// Per row, per block: `d`.
    scales: Vec<f32>,
    /// Per row, per block: the sum of the 32 `q`.
    sums: Vec<i32>,
}

impl Activations {
    /// Quantize `x`, rows of `cols` values one after another.
    pub fn quantize(x: &[f32], cols: usize) -> Result<Self, ShapeError> {
        if cols == 0 || !cols.is_multiple_of(BLOCK) || !x.len().is_multiple_of(cols) {
            return Err(shape_error(format!(
                "{} activations are not rows of {cols} inputs, a multiple of {BLOCK}",
                x.len()
            )));
        }
        let rows = x.len() / cols;
        let blocks = cols / BLOCK;
        let mut a = Activations {
            rows,
            blocks,
            groups: Vec::with_capacity(rows * blocks * 8),
            scales: Vec::with_capacity(rows * blocks),
            sums: Vec::with_capacity(rows * blocks),
        };
        for block in x.chunks_exact(BLOCK) {
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let inverse = if d == 0.0 { 0.0 } else { 1.0 / d };
            // |v · inverse| <= 127; `as` saturates and maps NaN to 0. Ties
            // round to even (one vector instruction; either rule would do,
            // both kernels read the same bytes).
            let q: [i8; BLOCK] =
                std::array::from_fn(|j| (block[j] * inverse).round_ties_even() as i8);
            a.sums.push(q.iter().map(|&v| i32::from(v)).sum());
            let (fours, _) = q.as_chunks::<4>();
            a.groups
                .extend(fours.iter().map(|f| i32::from_le_bytes(f.map(|b| b as u8))));
            a.scales.push(d);
        }
        Ok(a)
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Inputs per row.
    pub fn cols(&self) -> usize {
        self.blocks * BLOCK
    }

    /// Row `r`'s groups, scales and sums.
    fn row(&self, r: usize) -> Row<'_> {
        let b = self.blocks;
        Row {
            groups: &self.groups[r * b * 8..(r + 1) * b * 8],
            scales: &self.scales[r * b..(r + 1) * b],
            sums: &self.sums[r * b..(r + 1) * b],
        }
    }
}

/// One quantized activation row.
#[derive(Clone, Copy)]
struct Row<'a> {
    groups: &'a [i32],
    scales: &'a [f32],
    sums: &'a [i32],
}

/// A weight matrix repacked into tiles of [`TILE`] rows.
#[derive(Debug, Clone)]
pub struct Matrix {
    format: Format,
    rows: usize,
    blocks: usize,
    /// Tile after tile; in each, block after block of
    /// [`Format::tile_block_bytes`].
    data: Vec<u8>,
}

impl Matrix {
    /// Repack a GGUF tensor of `rows` rows by `cols` inputs (`bytes` holds
    /// its blocks, row after row, as the file stores them). Rows are padded
    /// with zero weights to a whole number of tiles.
    pub fn from_gguf(
        format: Format,
        bytes: &[u8],
        rows: usize,
        cols: usize,
    ) -> Result<Self, ShapeError> {
        Self::stacked(format, &[(bytes, rows)], cols)
    }

    /// Repack several GGUF tensors of the same inputs (`(bytes, rows)`
    /// each) as one matrix, their rows one after another — for
    /// [`Matrix::mul_split`]. No copy of the tensors is made.
    pub fn stacked(
        format: Format,
        parts: &[(&[u8], usize)],
        cols: usize,
    ) -> Result<Self, ShapeError> {
        let gb = format.gguf_block_bytes();
        let rows: usize = parts.iter().map(|(_, r)| r).sum();
        if rows == 0 || cols == 0 || !cols.is_multiple_of(BLOCK) {
            return Err(shape_error(format!(
                "a {rows} x {cols} matrix: inputs must be a positive multiple of {BLOCK}"
            )));
        }
        let blocks = cols / BLOCK;
        for &(bytes, r) in parts {
            if bytes.len() != r * blocks * gb {
                return Err(shape_error(format!(
                    "{} bytes for a {r} x {cols} {format:?} matrix (expected {})",
                    bytes.len(),
                    r * blocks * gb
                )));
            }
        }
        // Row `row` of the stack: its part's bytes and its row there.
        let mut starts = Vec::with_capacity(parts.len());
        let mut first = 0;
        for &(bytes, r) in parts {
            starts.push((first, bytes));
            first += r;
        }
        let source = |row: usize| {
            let i = starts.partition_point(|&(first, _)| first <= row) - 1;
            let (first, bytes) = starts[i];
            &bytes[(row - first) * blocks * gb..][..blocks * gb]
        };
        let tiles = rows.div_ceil(TILE);
        let tb = format.tile_block_bytes();
        let mut data = vec![0u8; tiles * blocks * tb];
        for (t, tile) in data.chunks_exact_mut(blocks * tb).enumerate() {
            for c in 0..TILE {
                let row = t * TILE + c;
                let src = (row < rows).then(|| source(row));
                for (b, dst) in tile.chunks_exact_mut(tb).enumerate() {
                    pack_block(format, src.map(|s| &s[b * gb..][..gb]), c, dst);
                }
            }
        }
        Ok(Matrix {
            format,
            rows,
            blocks,
            data,
        })
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Inputs per row.
    pub fn cols(&self) -> usize {
        self.blocks * BLOCK
    }

    /// The GGUF format the matrix was packed from.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Tiles of [`TILE`] rows.
    pub fn tiles(&self) -> usize {
        self.rows.div_ceil(TILE)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    fn tile(&self, t: usize) -> &[u8] {
        let len = self.blocks * self.format.tile_block_bytes();
        &self.data[t * len..(t + 1) * len]
    }

    /// The products of tiles `tiles` with every row of `x`, tile-major:
    /// `out[(t - tiles.start) * x.rows() * TILE + r * TILE + c]` is output
    /// `t * TILE + c` of row `r` (padding rows included).
    pub fn mul_tiles(
        &self,
        kernel: Kernel,
        x: &Activations,
        tiles: Range<usize>,
        out: &mut [f32],
    ) -> Result<(), ShapeError> {
        self.check(x)?;
        let per_tile = x.rows * TILE;
        if tiles.start > tiles.end
            || tiles.end > self.tiles()
            || out.len() != tiles.len() * per_tile
        {
            return Err(shape_error(format!(
                "tiles {tiles:?} of {} with {} outputs for {} rows",
                self.tiles(),
                out.len(),
                x.rows
            )));
        }
        if !kernel.available() {
            return Err(shape_error(format!("this CPU cannot run {kernel:?}")));
        }
        for (t, out) in tiles.zip(out.chunks_exact_mut(per_tile)) {
            let tile = self.tile(t);
            match kernel {
                Kernel::Scalar => scalar::tile(self.format, tile, x, out),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => avx2::tile(self.format, tile, x, out),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512Vnni => x86::tile(self.format, tile, x, out),
                #[cfg(not(target_arch = "x86_64"))]
                Kernel::Avx2 | Kernel::Avx512Vnni => {}
            }
        }
        Ok(())
    }

    /// `out = x · selfᵀ`, row-major (`x.rows()` rows of [`Matrix::rows`]),
    /// with the best kernel. `parallel(n, f)` must call `f` on ranges that
    /// together cover `0..n` once, from any threads (for instance a thread
    /// pool's chunked loop); its units are runs of tiles.
    pub fn mul<P>(&self, x: &Activations, out: &mut [f32], parallel: P) -> Result<(), ShapeError>
    where
        P: FnOnce(usize, &(dyn Fn(Range<usize>) + Sync)),
    {
        if out.len() != x.rows * self.rows {
            return Err(shape_error(format!(
                "{} outputs for {} rows of {}",
                out.len(),
                x.rows,
                self.rows
            )));
        }
        let staged = self.staged(x, parallel)?;
        self.scatter(&staged, x.rows, 0..self.rows, out);
        Ok(())
    }

    /// Like [`Matrix::mul`] for a matrix stacked from several (query, key
    /// and value projections, say): the outputs split into parts of
    /// `widths` rows, each row-major. Every part but the last must be a
    /// whole number of tiles.
    pub fn mul_split<P>(
        &self,
        x: &Activations,
        widths: &[usize],
        parallel: P,
    ) -> Result<Vec<Vec<f32>>, ShapeError>
    where
        P: FnOnce(usize, &(dyn Fn(Range<usize>) + Sync)),
    {
        let aligned = widths
            .split_last()
            .is_some_and(|(_, init)| init.iter().all(|w| w.is_multiple_of(TILE)));
        if !aligned || widths.iter().sum::<usize>() != self.rows {
            return Err(shape_error(format!(
                "parts {widths:?} of a matrix of {} rows (tile-aligned, adding up)",
                self.rows
            )));
        }
        let staged = self.staged(x, parallel)?;
        let mut start = 0;
        let mut parts = Vec::with_capacity(widths.len());
        for &w in widths {
            let mut out = vec![0f32; x.rows * w];
            self.scatter(&staged, x.rows, start..start + w, &mut out);
            parts.push(out);
            start += w;
        }
        Ok(parts)
    }

    /// Every tile times `x`, tile-major, computed in runs of tiles handed
    /// to `parallel`.
    fn staged<P>(&self, x: &Activations, parallel: P) -> Result<Vec<f32>, ShapeError>
    where
        P: FnOnce(usize, &(dyn Fn(Range<usize>) + Sync)),
    {
        self.check(x)?;
        let kernel = Kernel::best();
        let tiles = self.tiles();
        let per_tile = x.rows * TILE;
        let mut staged = vec![0f32; tiles * per_tile];
        // Units of work: runs of tiles, at most UNITS of them (a lock and a
        // call each; the output matrix has 3,072 tiles).
        let run = tiles.div_ceil(UNITS);
        let slots: Vec<Mutex<&mut [f32]>> =
            staged.chunks_mut(run * per_tile).map(Mutex::new).collect();
        let failed = Mutex::new(None);
        parallel(slots.len(), &|units: Range<usize>| {
            for u in units {
                let mut slot = slots[u].lock().unwrap_or_else(PoisonError::into_inner);
                let range = u * run..((u + 1) * run).min(tiles);
                if let Err(e) = self.mul_tiles(kernel, x, range, &mut slot) {
                    *failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                }
            }
        });
        drop(slots);
        match failed.into_inner().unwrap_or_else(PoisonError::into_inner) {
            Some(e) => Err(e),
            None => Ok(staged),
        }
    }

    /// Outputs `part` (a range starting on a tile) of every row, from the
    /// tile-major `staged` into row-major `out`.
    fn scatter(&self, staged: &[f32], rows: usize, part: Range<usize>, out: &mut [f32]) {
        let per_tile = rows * TILE;
        let width = part.len();
        for t in part.start / TILE..part.end.div_ceil(TILE) {
            let first = t * TILE - part.start;
            let n = TILE.min(part.end - t * TILE);
            let tile = &staged[t * per_tile..(t + 1) * per_tile];
            for (r, row) in tile.chunks_exact(TILE).enumerate() {
                out[r * width + first..][..n].copy_from_slice(&row[..n]);
            }
        }
    }

    /// Row `r` of the weights, dequantized as GGUF defines it.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<(), ShapeError> {
        if r >= self.rows || out.len() != self.cols() {
            return Err(shape_error(format!(
                "row {r} of {} into {} values ({} expected)",
                self.rows,
                out.len(),
                self.cols()
            )));
        }
        let tile = self.tile(r / TILE);
        let c = r % TILE;
        let tb = self.format.tile_block_bytes();
        for (blk, out) in tile.chunks_exact(tb).zip(out.chunks_exact_mut(BLOCK)) {
            scalar::dequantize(self.format, blk, c, out);
        }
        Ok(())
    }

    fn check(&self, x: &Activations) -> Result<(), ShapeError> {
        if x.blocks != self.blocks {
            return Err(shape_error(format!(
                "activations of {} inputs for a matrix of {}",
                x.cols(),
                self.cols()
            )));
        }
        Ok(())
    }
}

/// Write row `c` of a tile's block from a GGUF block (`None`: a padding row,
/// all weights zero).
fn pack_block(format: Format, src: Option<&[u8]>, c: usize, dst: &mut [u8]) {
    match format {
        Format::Q4_1 => {
            // GGUF: d, m, then 16 bytes whose low nibbles are weights 0..16
            // and high nibbles 16..32. Group p of the tile holds bytes
            // 4p..4p + 4: low nibbles are inputs 4p.., high ones 16 + 4p...
            let Some(src) = src else { return };
            for p in 0..4 {
                dst[p * 64 + c * 4..][..4].copy_from_slice(&src[4 + 4 * p..][..4]);
            }
            dst[256 + 2 * c..][..2].copy_from_slice(&src[0..2]);
            dst[288 + 2 * c..][..2].copy_from_slice(&src[2..4]);
        }
        Format::Q8_0 => {
            // GGUF: d, then 32 signed bytes; stored offset by 128 as the
            // unsigned operand (the kernel subtracts 128 · Σq of the
            // activations).
            for g in 0..8 {
                for e in 0..4 {
                    let q = src.map_or(0, |s| s[2 + 4 * g + e]);
                    dst[g * 64 + c * 4 + e] = q ^ 0x80;
                }
            }
            if let Some(src) = src {
                dst[512 + 2 * c..][..2].copy_from_slice(&src[0..2]);
            }
        }
    }
}
