//! Kron-LoRA's middle step as one autograd node: the contraction with the small dense factor
//! `A`, scale included.
//!
//! With `Z = X·B2ᵀ` read as `[n, d_A1, r]`, the update needs `Y2[i, a2, :] = s · Σ_a1 A[a2, a1] ·
//! Z[i, a1, :]`, as `[n·d_A2, r]` for the layer's last product `Y2·B1ᵀ`. Composed from candle's
//! ops that is a scale, two transposes made contiguous (copies) and a matmul whose inner
//! dimension is `d_A1` (2 by default): four nodes, three of them memory passes. Here it is one
//! pass that mixes rows of `Z` with the `d_A2 × d_A1` coefficients `s·A`, and backward is the
//! same mix with `s·Aᵀ` for `dZ` plus a reduction for `dA`. Nothing is transposed or copied.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_slices::{contiguous_f32, cpu_f32, rows_per_task};
use super::fused::fusable;

struct KronMix {
    scale: f64,
}

/// Group sizes of a mix: `rows` groups of `d_in` rows of `r` values in, `d_out` rows out.
#[derive(Clone, Copy)]
struct MixShape {
    d_in: usize,
    d_out: usize,
    r: usize,
}

/// `dst[i, o, :] = Σ_k coef[o, k] · src[i, k, :]` for every group `i` (`coef` is `[d_out, d_in]`).
fn mix(src: &[f32], coef: &[f32], shape: MixShape) -> Vec<f32> {
    let MixShape { d_in, d_out, r } = shape;
    let groups = src.len() / (d_in * r);
    let mut dst = vec![0f32; groups * d_out * r];
    let per_task = rows_per_task(d_out * r);
    dst.par_chunks_mut(per_task * d_out * r).zip(src.par_chunks(per_task * d_in * r)).for_each(|(dst, src)| {
        for (out, inp) in dst.chunks_exact_mut(d_out * r).zip(src.chunks_exact(d_in * r)) {
            for (o, row) in out.chunks_exact_mut(r).enumerate() {
                let c = &coef[o * d_in..(o + 1) * d_in];
                row.copy_from_slice(&inp[..r]);
                row.iter_mut().for_each(|v| *v *= c[0]);
                for (k, &ck) in c.iter().enumerate().skip(1) {
                    row.iter_mut().zip(&inp[k * r..(k + 1) * r]).for_each(|(v, &s)| *v += ck * s);
                }
            }
        }
    });
    dst
}

/// `Σ_i Σ_j dy[i, o, j] · z[i, k, j]` for every `(o, k)`: `[d_out, d_in]`. Each task sums its
/// groups in f64; the tasks' sums are added in task order, so the result does not depend on how
/// the pool scheduled them (training is bit-for-bit reproducible).
fn coefficient_grad(dy: &[f32], z: &[f32], shape: MixShape) -> Vec<f64> {
    let MixShape { d_in, d_out, r } = shape;
    let per_task = rows_per_task(d_out * r);
    let partial: Vec<Vec<f64>> = dy
        .par_chunks(per_task * d_out * r)
        .zip(z.par_chunks(per_task * d_in * r))
        .map(|(dy, z)| {
            let mut acc = vec![0f64; d_out * d_in];
            for (g, zi) in dy.chunks_exact(d_out * r).zip(z.chunks_exact(d_in * r)) {
                for (o, g_row) in g.chunks_exact(r).enumerate() {
                    for (k, z_row) in zi.chunks_exact(r).enumerate() {
                        let dot: f32 = g_row.iter().zip(z_row).map(|(a, b)| a * b).sum();
                        acc[o * d_in + k] += dot as f64;
                    }
                }
            }
            acc
        })
        .collect();
    let mut total = vec![0f64; d_out * d_in];
    for p in partial {
        total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
    }
    total
}

impl KronMix {
    /// `s·A` as f32 coefficients, `[d_A2, d_A1]`.
    fn scaled(&self, a: &[f32]) -> Vec<f32> {
        let s = self.scale as f32;
        a.iter().map(|v| v * s).collect()
    }
}

impl CustomOp2 for KronMix {
    fn name(&self) -> &'static str {
        "kron-mix"
    }

    fn cpu_fwd(&self, zs: &CpuStorage, zl: &Layout, as_: &CpuStorage, al: &Layout) -> Result<(CpuStorage, Shape)> {
        let (z, a) = (contiguous_f32(zs, zl, "kron mix")?, contiguous_f32(as_, al, "kron mix")?);
        let (d_a2, d_a1) = al.shape().dims2()?;
        let r = zl.dims()[1];
        let y = mix(z, &self.scaled(a), MixShape { d_in: d_a1, d_out: d_a2, r });
        let rows = y.len() / r;
        Ok((CpuStorage::F32(y), Shape::from((rows, r))))
    }

    fn bwd(&self, z: &Tensor, a: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (d_a2, d_a1) = a.dims2()?;
        let r = z.dim(1)?;
        let (zs, zl) = z.storage_and_layout();
        let (as_, al) = a.storage_and_layout();
        let (gs, gl) = dy.storage_and_layout();
        let (zv, av, gv) = (cpu_f32(&zs, zl)?, cpu_f32(&as_, al)?, cpu_f32(&gs, gl)?);
        let coef = self.scaled(av);
        let transposed: Vec<f32> = (0..d_a1 * d_a2).map(|i| coef[(i % d_a2) * d_a1 + i / d_a2]).collect();
        let dz = mix(gv, &transposed, MixShape { d_in: d_a2, d_out: d_a1, r });
        let s = self.scale;
        let da: Vec<f32> = coefficient_grad(gv, zv, MixShape { d_in: d_a1, d_out: d_a2, r })
            .into_iter()
            .map(|v| (v * s) as f32)
            .collect();
        Ok((Some(Tensor::from_vec(dz, z.shape(), z.device())?), Some(Tensor::from_vec(da, (d_a2, d_a1), a.device())?)))
    }
}

/// `s · (A ⊗ I_r)`-mix of `z [n·d_A1, r]` (rows grouped by `n`) → `[n·d_A2, r]`, for
/// `a [d_A2, d_A1]`; one node on CPU f32, candle's ops elsewhere.
pub fn kron_mix(z: &Tensor, a: &Tensor, scale: f64) -> Result<Tensor> {
    let (rows, r) = z.dims2()?;
    let d_a1 = a.dim(1)?;
    if d_a1 == 0 || r == 0 || rows % d_a1 != 0 {
        candle_core::bail!("kron_mix: {rows} rows of z do not group by d_A1 = {d_a1} (r = {r})");
    }
    if fusable(z) && fusable(a) {
        return z.contiguous()?.apply_op2(&a.contiguous()?, KronMix { scale });
    }
    kron_mix_composed(z, a, scale)
}

/// `kron_mix` from candle's elementary ops (any device and dtype).
pub fn kron_mix_composed(z: &Tensor, a: &Tensor, scale: f64) -> Result<Tensor> {
    let (rows, r) = z.dims2()?;
    let (d_a2, d_a1) = a.dims2()?;
    let n = rows / d_a1;
    let z = (z * scale)?.reshape((n, d_a1, r))?.transpose(1, 2)?.contiguous()?.reshape((n * r, d_a1))?;
    let y = z.matmul(&a.t()?)?;
    y.reshape((n, r, d_a2))?.transpose(1, 2)?.contiguous()?.reshape((n * d_a2, r))
}
