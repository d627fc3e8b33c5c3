//! Gradient clipping by global norm, as `torch.nn.utils.clip_grad_norm_`.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::error::Result;

/// The global L2 norm of `grads` (non-finite if any gradient is).
///
/// The per-tensor sums of squares stay on the gradients' device and are added there in f64;
/// only the total is read back, so on a GPU a step waits for one device→host copy here, not
/// one per adapter factor.
pub fn grad_norm(grads: &[Option<Tensor>]) -> Result<f64> {
    let sums = grads
        .iter()
        .flatten()
        .map(|g| g.sqr()?.sum_all()?.to_dtype(DType::F64))
        .collect::<candle_core::Result<Vec<_>>>()?;
    if sums.is_empty() {
        return Ok(0.0);
    }
    Ok(Tensor::stack(&sums, 0)?.sum_all()?.to_scalar::<f64>()?.sqrt())
}

/// Scale `grads` so that their global L2 norm is at most `max_norm`; returns the norm before
/// clipping. A non-finite norm scales nothing: the caller must treat it as an error.
pub fn clip_grads(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let norm = grad_norm(grads)?;
    // PyTorch: coefficient max_norm / (norm + 1e-6), applied only when it is below 1.
    let coef = max_norm / (norm + 1e-6);
    if norm.is_finite() && coef < 1.0 {
        for g in grads.iter_mut().flatten() {
            *g = (&*g * coef)?;
        }
    }
    Ok(norm)
}

/// `clip_grads` on the gradients of `params` in a backward pass's store.
pub fn clip_grad_norm(params: &[Var], grads: &mut GradStore, max_norm: f64) -> Result<f64> {
    let mut list: Vec<Option<Tensor>> = params.iter().map(|p| grads.get(p.as_tensor()).cloned()).collect();
    let norm = clip_grads(&mut list, max_norm)?;
    for (p, g) in params.iter().zip(list) {
        if let Some(g) = g {
            grads.insert(p.as_tensor(), g);
        }
    }
    Ok(norm)
}
