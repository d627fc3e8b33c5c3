//! Differentiable building blocks. candle-nn's fused `layer_norm` / `softmax_last_dim` have no
//! backward and silently stop gradients; kronlora's own fused ops (`ops::fused`, CPU f32) have
//! one, and these compositions of candle's elementary ops serve every other device and dtype.

use candle_core::{Result, Tensor, D};

use crate::ops::{fusable, fused_layer_norm, fused_softmax_last_dim};

/// LayerNorm over the last dimension: `(x - mean) / √(var + eps) · weight + bias`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if fusable(x) && weight.dtype() == x.dtype() && bias.dtype() == x.dtype() {
        return fused_layer_norm(x, weight, bias, eps);
    }
    layer_norm_composed(x, weight, bias, eps)
}

/// `layer_norm` from candle's elementary ops (any device and dtype).
pub fn layer_norm_composed(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(weight)?.broadcast_add(bias)
}

/// Softmax over the last dimension; the max is subtracted (detached: softmax does not depend
/// on it) for stability.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if fusable(x) {
        return fused_softmax_last_dim(x);
    }
    softmax_last_dim_composed(x)
}

/// `softmax_last_dim` from candle's elementary ops (any device and dtype).
pub fn softmax_last_dim_composed(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// RMSNorm over the last dimension: `x / √(mean(x²) + eps) · weight`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(weight)
}

/// Mean of the hidden states over the tokens (sentence-transformers' pooling): `[batch, hidden]`.
pub fn mean_pool(hidden: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
    let mask = attention_mask.to_dtype(candle_core::DType::F32)?.unsqueeze(D::Minus1)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
    summed.broadcast_div(&counts)
}
