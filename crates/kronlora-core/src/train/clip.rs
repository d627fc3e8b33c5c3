//! Gradient clipping by global norm, as `torch.nn.utils.clip_grad_norm_`.

use candle_core::backprop::GradStore;
use candle_core::Var;

use crate::error::Result;

/// Scale the gradients of `params` so that their global L2 norm is at most `max_norm`; returns
/// the norm before clipping (non-finite if any gradient is, which the caller must treat as an
/// error: nothing is scaled then).
pub fn clip_grad_norm(params: &[Var], grads: &mut GradStore, max_norm: f64) -> Result<f64> {
    let mut total = 0f64;
    for p in params {
        if let Some(g) = grads.get(p.as_tensor()) {
            total += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        }
    }
    let norm = total.sqrt();
    if !norm.is_finite() {
        return Ok(norm);
    }
    // PyTorch: coefficient max_norm / (norm + 1e-6), applied only when it is below 1.
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for p in params {
            if let Some(g) = grads.remove(p.as_tensor()) {
                grads.insert(p.as_tensor(), (g * coef)?);
            }
        }
    }
    Ok(norm)
}
