//! Softmax and LayerNorm over the last dimension as single autograd nodes (CPU, f32).
//!
//! Built from candle's elementary ops, each keeps several activation-sized intermediates alive
//! for backward and allocates each one fresh every step; profiling a MiniLM training step
//! showed a quarter of its time in page faults of such fresh buffers. Fused, the forward
//! writes one output, and backward recomputes what it needs from the input (or the output).
//! Other devices and dtypes use the compositions in `models::nn`, which compute the same thing.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor, D};

/// The row-major f32 slice `layout` describes, if it is contiguous.
fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else { candle_core::bail!("{what}: f32 only") };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what}: the input must be contiguous"),
    }
}

struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "fused-softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "softmax")?;
        let n = *l.dims().last().unwrap_or(&1);
        let mut out = vec![0f32; x.len()];
        for (row, y) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (v, o) in row.iter().zip(y.iter_mut()) {
                *o = (v - max).exp();
                sum += *o;
            }
            let inv = 1.0 / sum;
            y.iter_mut().for_each(|o| *o *= inv);
        }
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    /// `dx = y ⊙ (dy − Σ dy ⊙ y)`, from the output alone.
    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dot = (dy * y)?.sum_keepdim(D::Minus1)?;
        Ok(Some((y * dy.broadcast_sub(&dot)?)?))
    }
}

struct LayerNorm {
    eps: f64,
}

impl LayerNorm {
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
        for (row, y) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            // Two passes in f64 for the statistics, as the composition's mean-of-squares does.
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            let rstd = 1.0 / (var + self.eps).sqrt();
            for (i, (v, o)) in row.iter().zip(y.iter_mut()).enumerate() {
                *o = (((*v as f64 - mean) * rstd) as f32) * w[i] + b[i];
            }
        }
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
        let (xhat, rstd) = self.normalise(x)?;
        let g = dy.broadcast_mul(w)?;
        let inner = g
            .broadcast_sub(&g.mean_keepdim(D::Minus1)?)?
            .sub(&xhat.broadcast_mul(&(&g * &xhat)?.mean_keepdim(D::Minus1)?)?)?;
        let dx = inner.broadcast_mul(&rstd)?;
        let rows = dy.elem_count() / w.elem_count();
        let flat = |t: &Tensor| t.reshape((rows, w.elem_count()));
        let dw = if w.track_op() { Some(flat(&(dy * &xhat)?)?.sum(0)?) } else { None };
        let db = if b.track_op() { Some(flat(dy)?.sum(0)?) } else { None };
        Ok((Some(dx), dw, db))
    }
}

/// Whether the fused CPU kernels apply to `x`.
pub fn fusable(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// Softmax over the last dimension (CPU f32; see `fusable`).
pub fn fused_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(SoftmaxLastDim)
}

/// LayerNorm over the last dimension (CPU f32; see `fusable`).
pub fn fused_layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, LayerNorm { eps })
}
