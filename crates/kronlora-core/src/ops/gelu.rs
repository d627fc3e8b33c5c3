//! GELU (the exact, erf form) as one autograd node with an analytic backward (CPU, f32).
//!
//! candle's `gelu_erf` backward is a chain of about ten element-wise ops, each a fresh
//! activation-sized buffer, on one thread. Here forward and backward are one pass each over
//! the data, split across the rayon pool.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_slices::{contiguous_f32, cpu_f32, PARALLEL_CHUNK};
use super::fast_math::{erf_f32, exp_f32};

struct GeluErf;

const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `d gelu / dx = Φ(x) + x·φ(x)`.
fn gelu_grad(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2));
    cdf + x * FRAC_1_SQRT_2PI * exp_f32(-0.5 * x * x)
}

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "fused-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "gelu")?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(PARALLEL_CHUNK).zip(x.par_chunks(PARALLEL_CHUNK)).for_each(|(o, x)| {
            o.iter_mut().zip(x).for_each(|(o, &x)| *o = gelu(x));
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dy = dy.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (gs, gl) = dy.storage_and_layout();
        let (x_data, g) = (cpu_f32(&xs, xl)?, cpu_f32(&gs, gl)?);
        let mut dx = vec![0f32; x_data.len()];
        dx.par_chunks_mut(PARALLEL_CHUNK)
            .zip(x_data.par_chunks(PARALLEL_CHUNK).zip(g.par_chunks(PARALLEL_CHUNK)))
            .for_each(|(d, (x, g))| {
                d.iter_mut().zip(x.iter().zip(g)).for_each(|(d, (&x, &g))| *d = g * gelu_grad(x));
            });
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// GELU (erf form) of `x` (CPU f32; see `ops::fusable`).
pub fn fused_gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluErf)
}
