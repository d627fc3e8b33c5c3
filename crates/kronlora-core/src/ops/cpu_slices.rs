//! Reading and writing candle's CPU f32 storage directly, for the fused ops' kernels.

use candle_core::{CpuStorage, Layout, Result, Storage};

/// The row-major f32 slice `layout` describes, if it is contiguous.
pub fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else { candle_core::bail!("{what}: f32 only") };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what}: the input must be contiguous"),
    }
}

/// `contiguous_f32` of a tensor's storage (from `Tensor::storage_and_layout`), CPU only.
pub fn cpu_f32<'a>(s: &'a Storage, l: &Layout) -> Result<&'a [f32]> {
    match s {
        Storage::Cpu(c) => contiguous_f32(c, l, "fused op"),
        _ => candle_core::bail!("fused op: CPU tensors only"),
    }
}

/// Elements per task when element-wise work is split across the rayon pool: large enough that
/// scheduling costs nothing next to the work, small enough to balance two to a few dozen threads.
pub const PARALLEL_CHUNK: usize = 1 << 15;

/// Rows per parallel task for rows of `n` values.
pub fn rows_per_task(n: usize) -> usize {
    (PARALLEL_CHUNK / n.max(1)).max(1)
}

/// A raw pointer the parallel kernels share; each task writes a disjoint set of elements.
#[derive(Clone, Copy)]
pub struct SyncPtr(pub *mut f32);

// SAFETY: the kernels using it write disjoint index sets from different tasks.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    pub fn get(self) -> *mut f32 {
        self.0
    }
}
