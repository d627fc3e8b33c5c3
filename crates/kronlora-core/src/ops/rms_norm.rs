//! RMSNorm over the last dimension as one autograd node (CPU, f32): `y = x · rstd · w` with
//! `rstd = 1 / √(mean(x²) + eps)`.
//!
//! candle-nn's fused `rms_norm` has no backward (gradients silently stop); its composition is
//! five activation-sized nodes kept for backward. Here forward writes one output and backward
//! recomputes `rstd` from the input, row by row on the rayon pool.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_slices::{contiguous_f32, cpu_f32, rows_per_task};

struct RmsNorm {
    eps: f64,
}

impl RmsNorm {
    /// `1 / √(mean(x²) + eps)` of a row, summed in f64 as the composition's mean does.
    fn rstd(&self, row: &[f32]) -> f32 {
        let ms = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / row.len() as f64;
        (1.0 / (ms + self.eps).sqrt()) as f32
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl, "rms_norm")?;
        let w = contiguous_f32(ws, wl, "rms_norm")?;
        let n = *xl.dims().last().unwrap_or(&1);
        if w.len() != n {
            candle_core::bail!("rms_norm: the weight must have {n} values, has {}", w.len());
        }
        let mut out = vec![0f32; x.len()];
        let chunk = rows_per_task(n) * n;
        out.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(out, x)| {
            for (row, y) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
                let rstd = self.rstd(row);
                y.iter_mut().zip(row.iter().zip(w)).for_each(|(y, (&v, &w))| *y = v * rstd * w);
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    /// `dx = rstd · (u − x̂ · mean(u ⊙ x̂))` with `u = dy ⊙ w`, `x̂ = x · rstd`; `dw = Σ dy ⊙ x̂`
    /// over the rows, only when the weight takes part in the graph (norms are frozen here).
    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (x, dy) = (x.contiguous()?, dy.contiguous()?);
        let n = w.elem_count();
        let (xs, xl) = x.storage_and_layout();
        let (gs, gl) = dy.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (xv, gv, wv) = (cpu_f32(&xs, xl)?, cpu_f32(&gs, gl)?, cpu_f32(&ws, wl)?);
        let mut dx = vec![0f32; xv.len()];
        let chunk = rows_per_task(n) * n;
        dx.par_chunks_mut(chunk).zip(xv.par_chunks(chunk).zip(gv.par_chunks(chunk))).for_each(|(dx, (x, dy))| {
            for (d, (x, dy)) in dx.chunks_exact_mut(n).zip(x.chunks_exact(n).zip(dy.chunks_exact(n))) {
                let rstd = self.rstd(x);
                let ux: f32 = (0..n).map(|i| dy[i] * wv[i] * x[i] * rstd).sum();
                let ux_mean = ux / n as f32;
                for i in 0..n {
                    d[i] = rstd * (dy[i] * wv[i] - x[i] * rstd * ux_mean);
                }
            }
        });
        let dx = Tensor::from_vec(dx, x.shape(), x.device())?;
        let dw = if w.track_op() {
            let rows = x.elem_count() / n;
            let ms = x.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
            let xhat = x.broadcast_div(&(ms + self.eps)?.sqrt()?)?;
            Some((&dy * &xhat)?.reshape((rows, n))?.sum(0)?.reshape(w.shape())?)
        } else {
            None
        };
        Ok((Some(dx), dw))
    }
}

/// RMSNorm of `x` over its last dimension with `weight [n]` (CPU f32; see `ops::fusable`).
pub fn fused_rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&weight.contiguous()?, RmsNorm { eps })
}
