//! Losses, built from differentiable ops only.

use candle_core::{Result, Tensor, D};

/// `log_softmax` over the last dimension (the max is detached: the result does not depend on it).
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

/// Mean cross-entropy of `logits [n, classes]` against `targets [n]` (u32).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let picked = log_softmax(logits)?.gather(&targets.unsqueeze(1)?, 1)?;
    picked.neg()?.mean_all()
}
