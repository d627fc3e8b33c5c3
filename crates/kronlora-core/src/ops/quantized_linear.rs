//! `x · Wᵀ` for a frozen weight kept in its GGUF blocks (QLoRA-style training on a quantised
//! base): the weight is never held in f32 as a whole; only the input gradient flows back.
//!
//! Used inside `frozen_linear` (with the bias and an adapter's update in the same node) and alone
//! (`quantized_matmul`: a tied output head).
//!
//! - Few rows (generation's one-token steps, ≤ `QUANTIZED_KERNEL_ROWS`): candle's quantised
//!   matmul, which reads the blocks directly (it quantises `x` to 8 bits per block, as llama.cpp
//!   does).
//! - Many rows (training, a prompt's prefill): the weight is dequantised a slab of rows at a time
//!   into one reused buffer, and each slab multiplied in f32 with gemm. candle's vec-dot kernel
//!   is 5–8× slower than f32 gemm at 2048 rows for Q4_0 / Q4_1 / Q8_0 (`examples/qmm_speed.rs`),
//!   while dequantising a slab costs ~2 % of multiplying it; and the product then equals the
//!   dequantised f32 weights' up to summation order, so the f32 path is this path's reference.
//! - Backward: `∂L/∂x = g · W`, accumulated slab by slab the same way.

use std::ops::Range;
use std::sync::Arc;

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0, GgmlType,
};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_slices::contiguous_f32;
use super::linear::frozen_gemm;

/// At most this many rows of `x` go through candle's quantised kernel; more are multiplied in f32
/// from dequantised slabs (the crossover measured for Q4_1 576 × 1536 on AVX2 is ~7 rows).
pub const QUANTIZED_KERNEL_ROWS: usize = 8;

/// Values of one dequantised slab of weight rows (4 MiB of f32): large enough for gemm to run at
/// full speed, small next to any weight worth quantising.
const SLAB_VALUES: usize = 1 << 20;

/// The block types kept quantised: every GGUF weight type candle multiplies and dequantises.
pub const QUANTIZED_TYPES: [GgmlDType; 10] = [
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

/// A frozen `[out, in]` weight in GGUF blocks on the CPU. Cloning shares the blocks.
#[derive(Clone)]
pub struct QuantizedWeight {
    blocks: Arc<QTensor>,
    rows: usize,
    cols: usize,
}

impl std::fmt::Debug for QuantizedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuantizedWeight[{}, {}; {:?}]", self.rows, self.cols, self.dtype())
    }
}

impl QuantizedWeight {
    /// `blocks` must be a 2-D CPU tensor of one of `QUANTIZED_TYPES`.
    pub fn new(blocks: QTensor) -> Result<Self> {
        if !QUANTIZED_TYPES.contains(&blocks.dtype()) {
            candle_core::bail!("{:?} blocks are not kept quantised", blocks.dtype());
        }
        if !blocks.device().is_cpu() {
            candle_core::bail!("quantised weights live on the CPU");
        }
        let (rows, cols) = blocks.shape().dims2()?;
        Ok(QuantizedWeight { blocks: Arc::new(blocks), rows, cols })
    }

    pub fn dtype(&self) -> GgmlDType {
        self.blocks.dtype()
    }
    /// `(out, in)`.
    pub fn dims2(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
    pub fn elem_count(&self) -> usize {
        self.rows * self.cols
    }
    /// Bytes of the blocks (what stays resident).
    pub fn size_in_bytes(&self) -> usize {
        self.blocks.storage_size_in_bytes()
    }
    /// The blocks themselves (to copy them unchanged into a file).
    pub fn blocks(&self) -> &QTensor {
        &self.blocks
    }

    /// The whole weight in f32 (a temporary copy: merging, reading it back).
    pub fn dequantize(&self, device: &Device) -> Result<Tensor> {
        self.blocks.dequantize(device)
    }

    /// Rows `ids` (token embeddings), dequantised; no gradient flows to a frozen table.
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        self.blocks.embedding(ids)
    }

    /// Rows `rows` dequantised into `out` (`rows.len() · in` values), split across the pool.
    fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) -> Result<()> {
        let bytes = self.blocks.data()?;
        let per_row = self.cols / self.dtype().block_size();
        let rows_per_task = (1 << 15) / self.cols.max(1) + 1;
        out.par_chunks_mut(rows_per_task * self.cols).enumerate().try_for_each(|(task, out)| {
            let first = (rows.start + task * rows_per_task) * per_row;
            let blocks = out.len() / self.cols * per_row;
            blocks_to_f32(self.dtype(), &bytes, first..first + blocks, out)
        })
    }

    /// Whether every value is finite (a corrupt file's scales can be NaN), checked slab by slab.
    pub fn is_finite(&self) -> Result<bool> {
        let mut finite = true;
        self.for_each_slab(|_, slab| {
            finite &= slab.par_iter().all(|v| v.is_finite());
        })?;
        Ok(finite)
    }

    /// Weight rows per slab.
    fn slab_rows(&self) -> usize {
        (SLAB_VALUES / self.cols.max(1)).clamp(1, self.rows.max(1))
    }

    /// `f(rows, slab)` for consecutive row ranges, each dequantised into one reused buffer.
    fn for_each_slab(&self, mut f: impl FnMut(Range<usize>, &[f32])) -> Result<()> {
        let mut buffer = vec![0f32; self.slab_rows() * self.cols];
        for start in (0..self.rows).step_by(self.slab_rows()) {
            let end = (start + self.slab_rows()).min(self.rows);
            let slab = &mut buffer[..(end - start) * self.cols];
            self.dequantize_rows(start..end, slab)?;
            f(start..end, slab);
        }
        Ok(())
    }

    /// `y [m, out] (+)= x [m, in] · Wᵀ`: candle's quantised kernel for a few rows, else slab
    /// by slab in f32.
    pub(super) fn product_into(&self, x: &[f32], m: usize, y: &mut [f32], accumulate: bool) -> Result<()> {
        if m <= QUANTIZED_KERNEL_ROWS {
            let layout = Layout::contiguous((m, self.cols));
            let (product, _) = self.blocks.cpu_fwd(&CpuStorage::F32(x.to_vec()), &layout)?;
            let CpuStorage::F32(product) = product else { candle_core::bail!("quantized matmul: f32 output expected") };
            if accumulate {
                y.iter_mut().zip(&product).for_each(|(y, p)| *y += p);
            } else {
                y.copy_from_slice(&product);
            }
            return Ok(());
        }
        let (n, k) = (self.rows, self.cols);
        self.for_each_slab(|rows, slab| {
            // SAFETY: x is [m, k]; the slab [rows, k] is read transposed (element (i, j) of its
            // transpose at j·k + i); y's columns `rows` at row stride n lie inside y [m, n].
            unsafe {
                frozen_gemm(
                    (m, rows.len(), k),
                    (y.as_mut_ptr().add(rows.start), n, 1),
                    accumulate,
                    (x.as_ptr(), k, 1),
                    (slab.as_ptr(), 1, k),
                )
            };
        })
    }

    /// `dx [m, in] = g [m, out] · W`, slab by slab.
    pub(super) fn input_grad(&self, g: &[f32], m: usize) -> Result<Vec<f32>> {
        let (n, k) = (self.rows, self.cols);
        let mut dx = vec![0f32; m * k];
        self.for_each_slab(|rows, slab| {
            // SAFETY: g [m, n]'s columns `rows` at row stride n; the slab is [rows, k] row-major;
            // dx is a fresh [m, k] buffer.
            unsafe {
                frozen_gemm(
                    (m, k, rows.len()),
                    (dx.as_mut_ptr(), k, 1),
                    rows.start > 0,
                    (g.as_ptr().add(rows.start), n, 1),
                    (slab.as_ptr(), k, 1),
                )
            };
        })?;
        Ok(dx)
    }
}

/// `blocks` (indices into the tensor's blocks) of a `dtype` tensor's bytes, as f32 into `out`.
fn blocks_to_f32(dtype: GgmlDType, bytes: &[u8], blocks: Range<usize>, out: &mut [f32]) -> Result<()> {
    fn typed<T: GgmlType>(bytes: &[u8], blocks: Range<usize>, out: &mut [f32]) -> Result<()> {
        let size = std::mem::size_of::<T>();
        if bytes.as_ptr().align_offset(std::mem::align_of::<T>()) != 0 || !bytes.len().is_multiple_of(size) {
            candle_core::bail!("quantised blocks are misaligned or truncated");
        }
        // SAFETY: aligned and a whole number of blocks (checked above); the blocks are plain data
        // (integers and f16) that any bit pattern represents.
        let all = unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, bytes.len() / size) };
        let Some(blocks) = all.get(blocks) else { candle_core::bail!("quantised rows out of range") };
        T::to_float(blocks, out);
        Ok(())
    }
    match dtype {
        GgmlDType::Q4_0 => typed::<BlockQ4_0>(bytes, blocks, out),
        GgmlDType::Q4_1 => typed::<BlockQ4_1>(bytes, blocks, out),
        GgmlDType::Q5_0 => typed::<BlockQ5_0>(bytes, blocks, out),
        GgmlDType::Q5_1 => typed::<BlockQ5_1>(bytes, blocks, out),
        GgmlDType::Q8_0 => typed::<BlockQ8_0>(bytes, blocks, out),
        GgmlDType::Q2K => typed::<BlockQ2K>(bytes, blocks, out),
        GgmlDType::Q3K => typed::<BlockQ3K>(bytes, blocks, out),
        GgmlDType::Q4K => typed::<BlockQ4K>(bytes, blocks, out),
        GgmlDType::Q5K => typed::<BlockQ5K>(bytes, blocks, out),
        GgmlDType::Q6K => typed::<BlockQ6K>(bytes, blocks, out),
        other => candle_core::bail!("{other:?} blocks are not kept quantised"),
    }
}

struct QuantizedMatmul {
    weight: QuantizedWeight,
    m: usize,
}

impl CustomOp1 for QuantizedMatmul {
    fn name(&self) -> &'static str {
        "quantized-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let mut out = l.dims().to_vec();
        *out.last_mut().expect("checked in quantized_matmul") = self.weight.rows;
        let x = contiguous_f32(s, l, "quantized matmul")?;
        let mut y = vec![0f32; self.m * self.weight.rows];
        self.weight.product_into(x, self.m, &mut y, false)?;
        Ok((CpuStorage::F32(y), out.into()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = grad.contiguous()?;
        let (gs, gl) = g.storage_and_layout();
        let candle_core::Storage::Cpu(gs) = &*gs else { candle_core::bail!("quantized matmul: CPU tensors only") };
        let g = contiguous_f32(gs, gl, "quantized matmul gradient")?;
        let dx = self.weight.input_grad(g, self.m)?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// `x · Wᵀ` (x: `[.., in]`, f32 on the CPU) for a quantised frozen `W`; the input gradient is
/// `grad · W`, the weight gets none.
pub fn quantized_matmul(x: &Tensor, weight: &QuantizedWeight) -> Result<Tensor> {
    let k = weight.cols;
    let dims = x.dims();
    if dims.len() < 2 || dims.last() != Some(&k) {
        candle_core::bail!("quantized_matmul: input {dims:?} does not end in {k}");
    }
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        candle_core::bail!("quantized_matmul: f32 CPU input only");
    }
    let m = x.elem_count() / k;
    x.contiguous()?.apply_op1(QuantizedMatmul { weight: weight.clone(), m })
}
