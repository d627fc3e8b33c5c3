//! A frozen linear layer plus its adapter's update as one autograd node:
//! `y = x·Wᵀ + b + L·Rᵀ`, where `L·Rᵀ` is the adapter's last product (LoRA: `(s·x·Aᵀ)·Bᵀ`;
//! Kron-LoRA: `Y2·B1ᵀ`, whose rows tile the output).
//!
//! Composed, that is a matmul, a broadcast add of the bias and an add of the update: three
//! output-sized buffers in forward and, in backward, candle's `zeros_like + add` for each of the
//! four edges. Here the bias is copied into the output once and both products accumulate into it
//! (gemm's `C += A·B`); backward returns the input, `L` and `R` gradients and nothing for the
//! frozen `W` and `b`. `W` is f32 or kept quantised (`quantized_linear`): only the base product
//! and the input gradient differ, so a quantised base keeps no extra output-sized buffer either.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_slices::{contiguous_f32, cpu_f32};
use super::frozen_weight::FrozenWeight;
use super::fused::fusable;
use super::matmul_t::matmul_t;
use super::strided_gemm::{gemm_into_parallel, View};

/// An adapter's update `Δy` as the product `left · rightᵀ`: `left [rows, r]`, `right [cols, r]`,
/// the `[rows, cols]` result read row-major as the layer's `[.., out]` output.
pub struct UpdateProduct {
    pub left: Tensor,
    pub right: Tensor,
}

impl UpdateProduct {
    /// `Δy` shaped as `out` (which holds `rows · cols` values).
    pub fn evaluate(&self, out: impl Into<Shape>) -> Result<Tensor> {
        let rows = self.left.elem_count() / self.right.dim(1)?;
        matmul_t(&self.left, &self.right, rows, out)
    }
}

struct FrozenLinear {
    weight: FrozenWeight,
    bias: Option<Tensor>,
    /// Rows of `x` and of `y`.
    m: usize,
    out: Shape,
}

impl FrozenLinear {
    fn k_n(&self) -> (usize, usize) {
        let (n, k) = self.weight.dims2().expect("checked in frozen_linear");
        (k, n)
    }

    /// `∂L/∂x = g · W` for the output gradient `g`.
    fn input_grad(&self, x: &Tensor, grad: &Tensor) -> Result<Tensor> {
        match &self.weight {
            FrozenWeight::Dense(w) => self.dense_input_grad(w, x, grad),
            FrozenWeight::Quantized(q) => {
                let g = grad.contiguous()?;
                let (gs, gl) = g.storage_and_layout();
                let dx = q.input_grad(cpu_f32(&gs, gl)?, self.m)?;
                Tensor::from_vec(dx, x.shape(), x.device())
            }
        }
    }

    /// `x·Wᵀ + b`, plus `left·rightᵀ` when given (each `(data, rows, r)` / `(data, cols)`).
    fn forward(&self, x: &[f32], update: Option<(&[f32], &[f32], usize)>) -> Result<CpuStorage> {
        let (k, n) = self.k_n();
        let m = self.m;
        let mut y = vec![0f32; m * n];
        if let Some(bias) = &self.bias {
            let (bs, bl) = bias.storage_and_layout();
            let b = cpu_f32(&bs, bl)?;
            y.par_chunks_mut(n * 64).for_each(|rows| rows.chunks_exact_mut(n).for_each(|row| row.copy_from_slice(b)));
        }
        match &self.weight {
            FrozenWeight::Dense(w) => {
                let (ws, wl) = w.storage_and_layout();
                let w = cpu_f32(&ws, wl)?;
                let c = (y.as_mut_ptr(), n, 1);
                // SAFETY: sizes were checked in `frozen_linear`; `y` is a fresh buffer. Wᵀ is
                // read in place: element (i, j) of Wᵀ is W[j, i], at row stride 1, column stride k.
                unsafe { frozen_gemm((m, n, k), c, self.bias.is_some(), (x.as_ptr(), k, 1), (w.as_ptr(), 1, k)) };
            }
            FrozenWeight::Quantized(q) => q.product_into(x, m, &mut y, self.bias.is_some())?,
        }
        // SAFETY: sizes were checked in `check_update`.
        unsafe {
            if let Some((left, right, r)) = update {
                let cols = right.len() / r;
                let rows = m * n / cols;
                let c = (y.as_mut_ptr(), cols, 1);
                gemm_into_parallel((rows, cols, r), c, true, (left.as_ptr(), r, 1), (right.as_ptr(), 1, r), 1.0);
            }
        }
        Ok(CpuStorage::F32(y))
    }

    /// `g · W` for an f32 `W`.
    #[cfg(not(all(feature = "openblas", target_os = "linux")))]
    fn dense_input_grad(&self, weight: &Tensor, x: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let (_, n) = self.k_n();
        grad.reshape((self.m, n))?.matmul(weight)?.reshape(x.shape())
    }

    /// `g · W` for an f32 `W`, through OpenBLAS.
    #[cfg(all(feature = "openblas", target_os = "linux"))]
    fn dense_input_grad(&self, weight: &Tensor, x: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let (k, n) = self.k_n();
        let m = self.m;
        let g = grad.contiguous()?;
        let (gs, gl) = g.storage_and_layout();
        let g = cpu_f32(&gs, gl)?;
        let (ws, wl) = weight.storage_and_layout();
        let w = cpu_f32(&ws, wl)?;
        let mut dx = vec![0f32; m * k];
        // SAFETY: g is [m, n] and W [n, k], both contiguous; dx is a fresh [m, k] buffer.
        unsafe { frozen_gemm((m, k, n), (dx.as_mut_ptr(), k, 1), false, (g.as_ptr(), n, 1), (w.as_ptr(), k, 1)) };
        Tensor::from_vec(dx, x.shape(), x.device())
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "frozen linear")?;
        Ok((self.forward(x, None)?, self.out.clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // Only reached when `x` is tracked: the op is the node's only input.
        Ok(Some(self.input_grad(x, grad)?))
    }
}

impl CustomOp3 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear-with-update"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ls: &CpuStorage,
        ll: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl, "frozen linear")?;
        let left = contiguous_f32(ls, ll, "frozen linear: update")?;
        let right = contiguous_f32(rs, rl, "frozen linear: update")?;
        Ok((self.forward(x, Some((left, right, rl.dims()[1])))?, self.out.clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        left: &Tensor,
        right: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (cols, r) = right.dims2()?;
        let rows = left.elem_count() / r;
        let g = grad.reshape((rows, cols))?;
        let grad_left = g.matmul(right)?.reshape(left.shape())?;
        let grad_right = g.t()?.matmul(&left.reshape((rows, r))?)?;
        // The first layer's input comes from frozen embeddings: no gradient needed there.
        let grad_x = if x.track_op() { Some(self.input_grad(x, grad)?) } else { None };
        Ok((grad_x, Some(grad_left), Some(grad_right)))
    }
}

/// `left [rows, r]` and `right [cols, r]` must tile an `m × n` output.
fn check_update(update: &UpdateProduct, m: usize, n: usize) -> Result<()> {
    let (cols, r) = update.right.dims2()?;
    let left = update.left.dims();
    if cols == 0 || r == 0 || left.len() != 2 || left[1] != r || left[0] * cols != m * n {
        candle_core::bail!(
            "frozen_linear: update {left:?}·{:?}ᵀ does not tile the [{m}, {n}] output",
            update.right.dims()
        );
    }
    Ok(())
}

/// `x·Wᵀ + b (+ update)` for `x [.., in]`, frozen `W [out, in]` (f32 or quantised) and
/// `b [out]`: no gradient reaches `W` or `b`; the update's factors and `x` get theirs. One node on
/// CPU f32, candle's ops elsewhere.
pub fn frozen_linear(
    x: &Tensor,
    weight: &FrozenWeight,
    bias: Option<&Tensor>,
    update: Option<&UpdateProduct>,
) -> Result<Tensor> {
    let (n, k) = weight.dims2()?;
    if n == 0 || k == 0 {
        candle_core::bail!("frozen_linear: the weight [{n}, {k}] is empty");
    }
    let dims = x.dims();
    if dims.last() != Some(&k) {
        candle_core::bail!("frozen_linear: input {dims:?} does not end in {k}");
    }
    let m = x.elem_count() / k;
    let mut out = dims.to_vec();
    *out.last_mut().unwrap() = n;
    if let Some(b) = bias {
        if b.dims() != [n] {
            candle_core::bail!("frozen_linear: bias {:?} is not [{n}]", b.dims());
        }
    }
    if let Some(u) = update {
        check_update(u, m, n)?;
    }
    let weight_fusable = match weight {
        FrozenWeight::Dense(w) => fusable(w),
        FrozenWeight::Quantized(_) => true,
    };
    let all_fusable = fusable(x)
        && weight_fusable
        && bias.is_none_or(fusable)
        && update.is_none_or(|u| fusable(&u.left) && fusable(&u.right));
    if !all_fusable {
        let mut y = weight.matmul(x)?;
        if let Some(b) = bias {
            y = y.broadcast_add(b)?;
        }
        if let Some(u) = update {
            y = (y + u.evaluate(out)?)?;
        }
        return Ok(y);
    }
    // Detached: a weight computed from variables (a merged weight, say) must not become a
    // tracked input.
    let op = FrozenLinear {
        weight: match weight {
            FrozenWeight::Dense(w) => FrozenWeight::Dense(w.detach().contiguous()?),
            FrozenWeight::Quantized(q) => FrozenWeight::Quantized(q.clone()),
        },
        bias: bias.map(|b| b.detach().contiguous()).transpose()?,
        m,
        out: out.into(),
    };
    let x = x.contiguous()?;
    match update {
        None => x.apply_op1(op),
        Some(u) => x.apply_op3(&u.left.contiguous()?, &u.right.contiguous()?, op),
    }
}

/// The frozen weight's product, `C (+)= A·B`: OpenBLAS with `--features openblas` where its
/// layouts allow, else gemm.
///
/// # Safety
/// As `strided_gemm::gemm_into`.
pub(super) unsafe fn frozen_gemm(
    mnk: (usize, usize, usize),
    c: View<*mut f32>,
    accumulate: bool,
    a: View<*const f32>,
    b: View<*const f32>,
) {
    #[cfg(all(feature = "openblas", target_os = "linux"))]
    if super::openblas::try_gemm(mnk, c, accumulate, a, b, 1.0) {
        return;
    }
    gemm_into_parallel(mnk, c, accumulate, a, b, 1.0)
}
