//! `log_softmax(logits)[target]` per row as one autograd node (CPU, f32): a language model's
//! loss reads one log-probability per token out of a `[batch, t, vocabulary]` tensor.
//!
//! Composed (max, shift, exp, sum, log, subtract, gather), every step is vocabulary-sized and
//! backward keeps several of them and their gradients alive at once: on SmolLM2 (49 152 tokens)
//! a batch of 8 × 256 makes each one 400 MB. Fused, the forward writes one value per row and
//! keeps only the logits; backward writes `g · (onehot − softmax)` in one pass, recomputing the
//! softmax from the logits and the row's log-sum-exp (`logits[target] − output`).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::cpu_slices::{contiguous_f32, cpu_f32, rows_per_task};
use super::fast_math::exp_f32;

struct TargetLogProbs;

fn targets_of<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [u32]> {
    let CpuStorage::U32(t) = s else { candle_core::bail!("target log-probs: targets must be u32") };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&t[start..end]),
        None => candle_core::bail!("target log-probs: targets must be contiguous"),
    }
}

impl CustomOp2 for TargetLogProbs {
    fn name(&self) -> &'static str {
        "fused-target-log-probs"
    }

    fn cpu_fwd(&self, ls: &CpuStorage, ll: &Layout, ts: &CpuStorage, tl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (logits, targets) = (contiguous_f32(ls, ll, "target log-probs")?, targets_of(ts, tl)?);
        let dims = ll.dims();
        let n = *dims.last().unwrap_or(&1);
        if targets.len() * n != logits.len() || &dims[..dims.len() - 1] != tl.dims() {
            candle_core::bail!("target log-probs: logits {:?} and targets {:?} differ", dims, tl.dims());
        }
        if let Some(t) = targets.iter().find(|&&t| t as usize >= n) {
            candle_core::bail!("target log-probs: target {t} is outside the {n} classes");
        }
        let mut out = vec![0f32; targets.len()];
        let rows = rows_per_task(n);
        out.par_chunks_mut(rows).zip(logits.par_chunks(rows * n).zip(targets.par_chunks(rows))).for_each(
            |(out, (x, t))| {
                for (o, (row, &t)) in out.iter_mut().zip(x.chunks_exact(n).zip(t)) {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let sum: f32 = row.iter().map(|v| exp_f32(v - max)).sum();
                    *o = row[t as usize] - max - sum.ln();
                }
            },
        );
        Ok((CpuStorage::F32(out), tl.shape().clone()))
    }

    /// `d logits = g · (onehot(target) − softmax(logits))` per row.
    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        out: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let (ls, ll) = logits.storage_and_layout();
        let (ts, tl) = targets.storage_and_layout();
        let (os, ol) = out.storage_and_layout();
        let (gs, gl) = g.storage_and_layout();
        let Storage::Cpu(ts) = &*ts else { candle_core::bail!("target log-probs: CPU tensors only") };
        let (x, t, o, g) = (cpu_f32(&ls, ll)?, targets_of(ts, tl)?, cpu_f32(&os, ol)?, cpu_f32(&gs, gl)?);
        let n = logits.dims().last().copied().unwrap_or(1);
        let mut dx = vec![0f32; x.len()];
        let rows = rows_per_task(n);
        dx.par_chunks_mut(rows * n)
            .zip(x.par_chunks(rows * n).zip(t.par_chunks(rows).zip(o.par_chunks(rows).zip(g.par_chunks(rows)))))
            .for_each(|(dx, (x, (t, (o, g))))| {
                for (i, (d, row)) in dx.chunks_exact_mut(n).zip(x.chunks_exact(n)).enumerate() {
                    let target = t[i] as usize;
                    // log-sum-exp of the row, from the forward's output.
                    let lse = row[target] - o[i];
                    d.iter_mut().zip(row).for_each(|(d, v)| *d = -g[i] * exp_f32(v - lse));
                    d[target] += g[i];
                }
            });
        Ok((Some(Tensor::from_vec(dx, logits.shape(), logits.device())?), None))
    }
}

/// `log_softmax(logits)` at `targets` along the last dimension: `[..]` for `logits [.., n]`,
/// `targets [..]` (u32) (CPU f32; see `fusable`).
pub fn fused_target_log_probs(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    logits.contiguous()?.apply_op2(&targets.contiguous()?, TargetLogProbs)
}
