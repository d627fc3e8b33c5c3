//! Losses, built from differentiable ops only.

use candle_core::{Result, Tensor, D};

use crate::ops::{fusable, fused_target_log_probs};

/// `log_softmax` over the last dimension (the max is detached: the result does not depend on it).
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

/// `log_softmax(logits)` at `targets` along the last dimension: `[..]` for `logits [.., n]` and
/// `targets [..]` (u32). One fused node on the CPU (`ops::target_log_probs`).
pub fn target_log_probs(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if fusable(logits) {
        return fused_target_log_probs(logits, targets);
    }
    target_log_probs_composed(logits, targets)
}

/// `target_log_probs` from candle's elementary ops (any device and dtype).
pub fn target_log_probs_composed(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    log_softmax(logits)?.gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?.squeeze(D::Minus1)
}

/// Mean cross-entropy of `logits [n, classes]` against `targets [n]` (u32).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    target_log_probs(logits, targets)?.neg()?.mean_all()
}
