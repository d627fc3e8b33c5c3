//! Softmax and LayerNorm over the last dimension as single autograd nodes (CPU, f32).
//!
//! Built from candle's elementary ops, each keeps several activation-sized intermediates alive
//! for backward and allocates each one fresh every step; profiling a MiniLM training step
//! showed a quarter of its time in page faults of such fresh buffers. Fused, the forward
//! writes one output, and backward recomputes what it needs from the input (or the output).
//! Other devices and dtypes use the compositions in `models::nn`, which compute the same thing.
//! Rows are split across the rayon pool (these passes are memory-bound: one core cannot
//! saturate the memory bandwidth two can).

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::cpu_slices::{contiguous_f32, cpu_f32, rows_per_task};
use super::fast_math::exp_f32;

struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "fused-softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "softmax")?;
        let n = *l.dims().last().unwrap_or(&1);
        let mut out = vec![0f32; x.len()];
        let chunk = rows_per_task(n) * n;
        out.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(out, x)| {
            for (row, y) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                y.iter_mut().zip(row).for_each(|(o, v)| *o = exp_f32(v - max));
                let inv = 1.0 / y.iter().sum::<f32>();
                y.iter_mut().for_each(|o| *o *= inv);
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    /// `dx = y ⊙ (dy − Σ dy ⊙ y)`, from the output alone.
    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let (y, dy) = (y.contiguous()?, dy.contiguous()?);
        let n = y.dims().last().copied().unwrap_or(1);
        let (ys, yl) = y.storage_and_layout();
        let (gs, gl) = dy.storage_and_layout();
        let (yv, gv) = (cpu_f32(&ys, yl)?, cpu_f32(&gs, gl)?);
        let mut dx = vec![0f32; yv.len()];
        let chunk = rows_per_task(n) * n;
        dx.par_chunks_mut(chunk).zip(yv.par_chunks(chunk).zip(gv.par_chunks(chunk))).for_each(|(dx, (y, g))| {
            for (d, (y, g)) in dx.chunks_exact_mut(n).zip(y.chunks_exact(n).zip(g.chunks_exact(n))) {
                let dot: f32 = y.iter().zip(g).map(|(a, b)| a * b).sum();
                d.iter_mut().zip(y.iter().zip(g)).for_each(|(d, (y, g))| *d = y * (g - dot));
            }
        });
        Ok(Some(Tensor::from_vec(dx, y.shape(), y.device())?))
    }
}

struct LayerNorm {
    eps: f64,
}

impl LayerNorm {
    /// A row's mean and `1 / √(var + eps)`, in f64 over two passes (as the composition's
    /// mean-of-squares does).
    fn statistics(&self, row: &[f32]) -> (f64, f64) {
        let n = row.len() as f64;
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, 1.0 / (var + self.eps).sqrt())
    }

    /// `dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂))` with `g = dy ⊙ w`, row by row.
    fn input_grad(&self, x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let (x, w, dy) = (x.contiguous()?, w.contiguous()?, dy.contiguous()?);
        let n = w.elem_count();
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (gs, gl) = dy.storage_and_layout();
        let (xv, wv, gv) = (cpu_f32(&xs, xl)?, cpu_f32(&ws, wl)?, cpu_f32(&gs, gl)?);
        let mut dx = vec![0f32; xv.len()];
        let chunk = rows_per_task(n) * n;
        dx.par_chunks_mut(chunk).zip(xv.par_chunks(chunk).zip(gv.par_chunks(chunk))).for_each(|(dx, (x, dy))| {
            let mut g = vec![0f32; n];
            for (d, (x, dy)) in dx.chunks_exact_mut(n).zip(x.chunks_exact(n).zip(dy.chunks_exact(n))) {
                let (mean, rstd) = self.statistics(x);
                let (mean, rstd) = (mean as f32, rstd as f32);
                let (mut g_sum, mut gx_sum) = (0f32, 0f32);
                for i in 0..n {
                    g[i] = dy[i] * wv[i];
                    g_sum += g[i];
                    gx_sum += g[i] * (x[i] - mean) * rstd;
                }
                let (g_mean, gx_mean) = (g_sum / n as f32, gx_sum / n as f32);
                for i in 0..n {
                    let xhat = (x[i] - mean) * rstd;
                    d[i] = rstd * (g[i] - g_mean - xhat * gx_mean);
                }
            }
        });
        Tensor::from_vec(dx, x.shape(), x.device())
    }

    /// `x̂ = (x − mean) / √(var + eps)` and `1 / √(var + eps)`, recomputed for backward.
    fn normalise(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let centered = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let rstd = (centered.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?.recip()?;
        Ok((centered.broadcast_mul(&rstd)?, rstd))
    }
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl, "layer_norm")?;
        let (w, b) = (contiguous_f32(ws, wl, "layer_norm")?, contiguous_f32(bs, bl, "layer_norm")?);
        let n = *xl.dims().last().unwrap_or(&1);
        if w.len() != n || b.len() != n {
            candle_core::bail!("layer_norm: weight and bias must have {n} values");
        }
        let mut out = vec![0f32; x.len()];
        let chunk = rows_per_task(n) * n;
        out.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(out, x)| {
            for (row, y) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
                let (mean, rstd) = self.statistics(row);
                for (i, (v, o)) in row.iter().zip(y.iter_mut()).enumerate() {
                    *o = (((*v as f64 - mean) * rstd) as f32) * w[i] + b[i];
                }
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    /// `dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂))` with `g = dy ⊙ w`; `dw = Σ dy ⊙ x̂`,
    /// `db = Σ dy` over the rows, computed only when weight and bias take part in the graph.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = self.input_grad(x, w, dy)?;
        let rows = dy.elem_count() / w.elem_count();
        let flat = |t: &Tensor| t.reshape((rows, w.elem_count()));
        // Trainable norm weights are rare (kronlora's models keep norms frozen): composed ops.
        let dw = if w.track_op() { Some(flat(&(dy * &self.normalise(x)?.0)?)?.sum(0)?) } else { None };
        let db = if b.track_op() { Some(flat(dy)?.sum(0)?) } else { None };
        Ok((Some(dx), dw, db))
    }
}

thread_local! {
    static COMPOSED_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` with the fused CPU kernels off (`true`) on this thread and in the compute-pool jobs
/// it starts: every op then takes the composed candle form that other devices (CUDA) run. The
/// tests and the device check use it to hold those forms to the kernels on whole models.
pub fn with_composed_ops<T>(on: bool, f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            COMPOSED_ONLY.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(COMPOSED_ONLY.with(|c| c.replace(on)));
    f()
}

/// Whether `with_composed_ops(true, ..)` is in force on this thread.
pub fn composed_ops() -> bool {
    COMPOSED_ONLY.with(std::cell::Cell::get)
}

/// Whether the fused CPU kernels apply to `x`.
pub fn fusable(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && !composed_ops()
}

/// Softmax over the last dimension (CPU f32; see `fusable`).
pub fn fused_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(SoftmaxLastDim)
}

/// LayerNorm over the last dimension (CPU f32; see `fusable`).
pub fn fused_layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, LayerNorm { eps })
}
