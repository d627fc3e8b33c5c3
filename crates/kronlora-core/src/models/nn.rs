//! Differentiable building blocks. candle-nn's fused `layer_norm` / `softmax_last_dim` have no
//! backward and silently stop gradients; kronlora's own fused ops (`ops::fused`, CPU f32) have
//! one, and these compositions of candle's elementary ops serve every other device and dtype.

use candle_core::{Result, Tensor, D};

use crate::ops::{
    fusable, fused_attention, fused_gelu_erf, fused_layer_norm, fused_rms_norm, fused_rope, fused_softmax_last_dim,
    fused_swiglu, AttentionSpec,
};

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
    if fusable(x) && weight.dtype() == x.dtype() {
        return fused_rms_norm(x, weight, eps);
    }
    rms_norm_composed(x, weight, eps)
}

/// `rms_norm` from candle's elementary ops (any device and dtype).
pub fn rms_norm_composed(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(weight)
}

/// Rotary position embedding (rotate-half) of token-major `x [batch, t, heads·head_dim]` with
/// tables `cos`, `sin` `[t, head_dim]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if fusable(x) && fusable(cos) && fusable(sin) {
        return fused_rope(x, cos, sin);
    }
    rope_composed(x, cos, sin)
}

/// `rope` from candle's elementary ops (any device and dtype).
pub fn rope_composed(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (b, t, width) = x.dims3()?;
    let hd = cos.dim(1)?;
    let x = x.reshape((b, t, width / hd, hd))?;
    let (cos, sin) = (cos.unsqueeze(1)?, sin.unsqueeze(1)?);
    let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    (x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?.reshape((b, t, width))
}

/// Llama's gated activation `silu(gate) ⊙ up`.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if fusable(gate) && fusable(up) {
        return fused_swiglu(gate, up);
    }
    swiglu_composed(gate, up)
}

/// `swiglu` from candle's elementary ops (any device and dtype).
pub fn swiglu_composed(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.silu()? * up
}

/// Mean of the hidden states over the tokens (sentence-transformers' pooling): `[batch, hidden]`.
pub fn mean_pool(hidden: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
    let mask = attention_mask.to_dtype(candle_core::DType::F32)?.unsqueeze(D::Minus1)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
    summed.broadcast_div(&counts)
}

/// GELU, erf form (BERT's `gelu`).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if fusable(x) {
        return fused_gelu_erf(x);
    }
    x.gelu_erf()
}

/// Multi-head scaled dot-product attention on token-major tensors: `q [batch, tq, heads·d]`,
/// `k`, `v [batch, tk, kv_heads·d]` → `[batch, tq, heads·d]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, spec: &AttentionSpec) -> Result<Tensor> {
    if fusable(q) && fusable(k) && fusable(v) {
        return fused_attention(q, k, v, spec);
    }
    attention_composed(q, k, v, spec)
}

/// `attention` from candle's elementary ops (any device and dtype).
pub fn attention_composed(q: &Tensor, k: &Tensor, v: &Tensor, spec: &AttentionSpec) -> Result<Tensor> {
    let (b, tq, width) = q.dims3()?;
    let tk = k.dim(1)?;
    let d = width / spec.heads;
    let group = spec.heads / spec.kv_heads;
    let heads_first = |y: &Tensor, t: usize, n: usize| y.reshape((b, t, n, d))?.transpose(1, 2)?.contiguous();
    let q = heads_first(q, tq, spec.heads)?;
    // Each key-value head serves `group` query heads.
    let repeat = |y: Tensor| -> Result<Tensor> {
        if group == 1 {
            return Ok(y);
        }
        y.unsqueeze(2)?.expand((b, spec.kv_heads, group, tk, d))?.reshape((b, spec.heads, tk, d))
    };
    let k = repeat(heads_first(k, tk, spec.kv_heads)?)?;
    let v = repeat(heads_first(v, tk, spec.kv_heads)?)?;
    let mut scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
    if let Some(mask) = spec.key_mask {
        scores = scores.broadcast_add(&mask.reshape((b, 1, 1, tk))?.to_dtype(scores.dtype())?)?;
    }
    if spec.causal {
        let offset = tk - tq;
        let future: Vec<f32> =
            (0..tq).flat_map(|i| (0..tk).map(move |j| if j > i + offset { f32::NEG_INFINITY } else { 0.0 })).collect();
        let future = Tensor::from_vec(future, (tq, tk), q.device())?.to_dtype(scores.dtype())?;
        scores = scores.broadcast_add(&future)?;
    }
    let probs = softmax_last_dim(&scores)?;
    probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b, tq, width))
}
