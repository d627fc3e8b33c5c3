//! Llama's gated MLP activation `silu(gate) ⊙ up` as one autograd node (CPU, f32).
//!
//! Composed, it is candle's `silu` (one node) and a product, with their gradients accumulated
//! per edge; here one pass forward and one backward, split across the rayon pool.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_slices::{contiguous_f32, cpu_f32, PARALLEL_CHUNK};
use super::fast_math::exp_f32;

struct SwiGlu;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(&self, gs: &CpuStorage, gl: &Layout, us: &CpuStorage, ul: &Layout) -> Result<(CpuStorage, Shape)> {
        if gl.shape() != ul.shape() {
            candle_core::bail!("swiglu: gate {:?} and up {:?} differ", gl.dims(), ul.dims());
        }
        let (gate, up) = (contiguous_f32(gs, gl, "swiglu")?, contiguous_f32(us, ul, "swiglu")?);
        let mut out = vec![0f32; gate.len()];
        out.par_chunks_mut(PARALLEL_CHUNK)
            .zip(gate.par_chunks(PARALLEL_CHUNK).zip(up.par_chunks(PARALLEL_CHUNK)))
            .for_each(|(o, (g, u))| {
                o.iter_mut().zip(g.iter().zip(u)).for_each(|(o, (&g, &u))| *o = g * sigmoid(g) * u)
            });
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }

    /// `d gate = dy · up · σ(g)·(1 + g·(1 − σ(g)))`, `d up = dy · silu(g)`.
    fn bwd(&self, gate: &Tensor, up: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (gs, gl) = gate.storage_and_layout();
        let (us, ul) = up.storage_and_layout();
        let (ds, dl) = dy.storage_and_layout();
        let (g, u, d) = (cpu_f32(&gs, gl)?, cpu_f32(&us, ul)?, cpu_f32(&ds, dl)?);
        let mut d_gate = vec![0f32; g.len()];
        let mut d_up = vec![0f32; g.len()];
        d_gate
            .par_chunks_mut(PARALLEL_CHUNK)
            .zip(d_up.par_chunks_mut(PARALLEL_CHUNK))
            .zip(g.par_chunks(PARALLEL_CHUNK).zip(u.par_chunks(PARALLEL_CHUNK).zip(d.par_chunks(PARALLEL_CHUNK))))
            .for_each(|((dg, du), (g, (u, d)))| {
                for i in 0..g.len() {
                    let s = sigmoid(g[i]);
                    dg[i] = d[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                    du[i] = d[i] * g[i] * s;
                }
            });
        let grad = |v: Vec<f32>| Tensor::from_vec(v, gate.shape(), gate.device());
        Ok((Some(grad(d_gate)?), Some(grad(d_up)?)))
    }
}

/// `silu(gate) ⊙ up` (CPU f32; see `ops::fusable`).
pub fn fused_swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}
