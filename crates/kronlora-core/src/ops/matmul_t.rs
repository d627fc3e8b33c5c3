//! `lhs · rhsᵀ` with the operands' row structure folded in, as one autograd node.
//!
//! Two reasons for an own op instead of candle's `matmul`:
//! - a **frozen** `rhs` (a base weight) gets no gradient: candle's matmul backward always computes
//!   both operand gradients, costing a GEMM and two weight-sized buffers per layer per step;
//! - `lhs` is read as `[m, k]` and the result written as any shape of `m·n` elements, so the
//!   reshapes around Kron-LoRA's contractions are not graph nodes: candle accumulates every
//!   node's gradient with `zeros_like + add`, two full passes per activation-sized node.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

struct MatmulT {
    m: usize,
    k: usize,
    n: usize,
    out: Shape,
    rhs_grad: bool,
}

impl MatmulT {
    fn plan(&self, l: &Layout, r: &Layout) -> Result<(Layout, Layout)> {
        let (m, k, n) = (self.m, self.k, self.n);
        if !l.is_contiguous() || l.shape().elem_count() != m * k {
            candle_core::bail!("matmul_t: lhs {:?} is not a contiguous [{m}, {k}]", l.dims());
        }
        if r.dims() != [n, k] {
            candle_core::bail!("matmul_t: rhs {:?} is not [{n}, {k}]", r.dims());
        }
        Ok((Layout::contiguous_with_offset((m, k), l.start_offset()), r.transpose(0, 1)?))
    }

    fn forward<S: BackendStorage>(&self, l: &S, ll: &Layout, r: &S, rl: &Layout) -> Result<(S, Shape)> {
        let (lhs, rhs) = self.plan(ll, rl)?;
        Ok((l.matmul(r, (1, self.m, self.n, self.k), &lhs, &rhs)?, self.out.clone()))
    }
}

impl CustomOp2 for MatmulT {
    fn name(&self) -> &'static str {
        "matmul-t"
    }

    fn cpu_fwd(&self, l: &CpuStorage, ll: &Layout, r: &CpuStorage, rl: &Layout) -> Result<(CpuStorage, Shape)> {
        self.forward(l, ll, r, rl)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        l: &candle_core::CudaStorage,
        ll: &Layout,
        r: &candle_core::CudaStorage,
        rl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.forward(l, ll, r, rl)
    }

    fn bwd(
        &self,
        lhs: &Tensor,
        rhs: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.reshape((self.m, self.n))?;
        // An untracked lhs (a first layer's input, from frozen embeddings) needs no gradient.
        let grad_lhs = if lhs.track_op() { Some(g.matmul(rhs)?.reshape(lhs.shape())?) } else { None };
        let grad_rhs = if self.rhs_grad { Some(g.t()?.matmul(&lhs.reshape((self.m, self.k))?)?) } else { None };
        Ok((grad_lhs, grad_rhs))
    }
}

/// `lhs` read as `[m, k]` (row-major, contiguous) times `rhsᵀ` (`rhs [n, k]`), the `[m, n]`
/// product shaped as `out`. Gradients flow to both operands.
pub fn matmul_t(lhs: &Tensor, rhs: &Tensor, m: usize, out: impl Into<Shape>) -> Result<Tensor> {
    let (n, k) = rhs.dims2()?;
    let out = out.into();
    if out.elem_count() != m * n {
        candle_core::bail!("matmul_t: output {out:?} does not hold {m}×{n} values");
    }
    lhs.contiguous()?.apply_op2(rhs, MatmulT { m, k, n, out, rhs_grad: true })
}

/// `x · Wᵀ` (x: `[.., in]`, W: `[out, in]`) where the frozen `W` receives no gradient and no
/// gradient buffer; the input gradient is `grad · W`.
pub fn frozen_matmul(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (n, k) = weight.dims2()?;
    let dims = x.dims();
    if dims.last() != Some(&k) {
        candle_core::bail!("frozen_matmul: input {dims:?} does not end in {k}");
    }
    let m = x.elem_count() / k;
    let mut out = dims.to_vec();
    *out.last_mut().unwrap() = n;
    // Detached: a weight computed from variables (a merged weight, say) would otherwise be a
    // tracked node that backprop expects a gradient for.
    x.contiguous()?.apply_op2(&weight.detach(), MatmulT { m, k, n, out: out.into(), rhs_grad: false })
}
