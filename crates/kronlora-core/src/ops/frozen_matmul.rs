//! `x · Wᵀ` for a frozen weight `W`, whose backward computes only the input gradient.
//!
//! candle's own matmul backward always computes the gradient of both operands, so a frozen base
//! weight would cost an extra GEMM and two weight-sized buffers per layer per step. Here the
//! backward is `grad · W` and nothing is allocated for `W`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

struct FrozenMatmul;

/// Shapes for `x [.., k] · Wᵀ` with `W [n, k]`: folds leading dims of `x` into rows.
fn plan(x: &Layout, w: &Layout) -> Result<((usize, usize, usize, usize), Layout, Layout, Shape)> {
    let (n, k) = match w.dims() {
        [n, k] => (*n, *k),
        d => candle_core::bail!("frozen_matmul: weight must be 2-D, got {d:?}"),
    };
    let xd = x.dims();
    if xd.is_empty() || xd[xd.len() - 1] != k {
        candle_core::bail!("frozen_matmul: input {xd:?} does not end in {k}");
    }
    if !x.is_contiguous() {
        candle_core::bail!("frozen_matmul: input must be contiguous");
    }
    let m = xd[..xd.len() - 1].iter().product::<usize>();
    let lhs = Layout::contiguous_with_offset((m, k), x.start_offset());
    let rhs = w.transpose(0, 1)?;
    let mut out = xd.to_vec();
    *out.last_mut().unwrap() = n;
    Ok(((1, m, n, k), lhs, rhs, Shape::from(out)))
}

fn forward<S: BackendStorage>(x: &S, xl: &Layout, w: &S, wl: &Layout) -> Result<(S, Shape)> {
    let (bmnk, lhs, rhs, shape) = plan(xl, wl)?;
    Ok((x.matmul(w, bmnk, &lhs, &rhs)?, shape))
}

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, w: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        forward(x, xl, w, wl)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        w: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        forward(x, xl, w, wl)
    }

    fn bwd(&self, _x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // d(x·Wᵀ)/dx = grad · W; no gradient (and no buffer) for the frozen weight.
        let dims = grad.dims();
        let rows = dims[..dims.len() - 1].iter().product::<usize>();
        let g = grad.contiguous()?.reshape((rows, dims[dims.len() - 1]))?;
        let mut in_shape = dims.to_vec();
        *in_shape.last_mut().unwrap() = w.dim(1)?;
        Ok((Some(g.matmul(w)?.reshape(in_shape)?), None))
    }
}

/// `x · Wᵀ` (x: `[.., in]`, W: `[out, in]`) where `W` receives no gradient.
pub fn frozen_matmul(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    // Detach: a weight computed from variables (a merged weight, say) would otherwise be a
    // tracked node that backprop expects a gradient for, and candle panics without one.
    x.contiguous()?.apply_op2(&weight.detach(), FrozenMatmul)
}
