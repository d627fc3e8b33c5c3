//! Rotary position embedding (rotate-half layout, as Llama's) on token-major activations
//! `[batch, t, heads·head_dim]` as one autograd node (CPU, f32).
//!
//! The projections write queries and keys token-major; rotating them there (rather than after a
//! transpose to head-major) lets the fused attention read them without a copy. Composed, RoPE is
//! two narrows, a negation, a concatenation, two products and a sum, each a fresh buffer.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_slices::{contiguous_f32, cpu_f32};

struct Rope {
    /// `[t, head_dim]` each (contiguous CPU f32), row `p` for the `p`-th token of every
    /// sequence. Held as the caller's tensors: every layer's queries and keys share one pair.
    cos: Tensor,
    sin: Tensor,
    t: usize,
    head_dim: usize,
    /// `heads · head_dim`: one token's values.
    width: usize,
}

impl Rope {
    /// `y = x·cos + rotate(x)·sin` with `rotate([x1, x2]) = [−x2, x1]`; with `transpose` the
    /// transposed map (its own backward): `[g1, g2] ↦ [g1·cos1 + g2·sin2, g2·cos2 − g1·sin1]`.
    fn apply(&self, x: &[f32], transpose: bool) -> Result<Vec<f32>> {
        let (t, hd, width) = (self.t, self.head_dim, self.width);
        let (cs, cl) = self.cos.storage_and_layout();
        let (ss, sl) = self.sin.storage_and_layout();
        let (cos_table, sin_table) = (cpu_f32(&cs, cl)?, cpu_f32(&ss, sl)?);
        let half = hd / 2;
        let mut out = vec![0f32; x.len()];
        // Row `r` is token `r % t` of sequence `r / t`.
        out.par_chunks_mut(width).zip(x.par_chunks(width)).enumerate().for_each(|(row, (y, x))| {
            let p = row % t;
            let (cos, sin) = (&cos_table[p * hd..(p + 1) * hd], &sin_table[p * hd..(p + 1) * hd]);
            for (y, x) in y.chunks_exact_mut(hd).zip(x.chunks_exact(hd)) {
                let (x1, x2) = x.split_at(half);
                let (y1, y2) = y.split_at_mut(half);
                for i in 0..half {
                    let (c1, c2, s1, s2) = (cos[i], cos[half + i], sin[i], sin[half + i]);
                    if transpose {
                        y1[i] = x1[i] * c1 + x2[i] * s2;
                        y2[i] = x2[i] * c2 - x1[i] * s1;
                    } else {
                        y1[i] = x1[i] * c1 - x2[i] * s1;
                        y2[i] = x2[i] * c2 + x1[i] * s2;
                    }
                }
            }
        });
        Ok(out)
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "rope")?;
        Ok((CpuStorage::F32(self.apply(x, false)?), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dy = dy.contiguous()?;
        let (gs, gl) = dy.storage_and_layout();
        let dx = self.apply(cpu_f32(&gs, gl)?, true)?;
        Ok(Some(Tensor::from_vec(dx, dy.shape(), dy.device())?))
    }
}

/// RoPE of `x [batch, t, heads·head_dim]` with tables `cos`, `sin` `[t, head_dim]` (CPU f32).
pub fn fused_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (_, t, width) = x.dims3()?;
    let (tc, head_dim) = cos.dims2()?;
    if tc != t || sin.dims() != cos.dims() || head_dim % 2 != 0 || width % head_dim != 0 {
        candle_core::bail!(
            "rope: input {:?} does not match tables {:?}/{:?} (an even head_dim dividing the width)",
            x.dims(),
            cos.dims(),
            sin.dims()
        );
    }
    let (cos, sin) = (cos.contiguous()?, sin.contiguous()?);
    x.contiguous()?.apply_op1(Rope { cos, sin, t, head_dim, width })
}
