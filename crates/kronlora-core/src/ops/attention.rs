//! Scaled dot-product attention as one autograd node (CPU, f32), flash-style: the `[t, t]`
//! probabilities exist only inside the op, one head at a time, and backward recomputes them.
//!
//! Composed from candle's ops, attention costs a copy of Q, K and V into head-major layout, the
//! scores, the scaled scores, the masked scores and the probabilities (each activation-sized and
//! kept for backward), the context and its copy back to token-major layout, and in backward as
//! many again plus candle's gradient accumulation per node. Here Q, K and V are read where the
//! projections wrote them (`[batch, tokens, heads·head_dim]`), the context is written in the
//! same layout, and the heads run in parallel on the rayon pool that gemm also uses.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_slices::{contiguous_f32, cpu_f32, SyncPtr};
use super::fast_math::exp_f32;
use super::strided_gemm::gemm_into;

/// The shapes of one attention call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    /// Query positions and key positions (equal except when cached keys precede the queries).
    tq: usize,
    tk: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Dims {
    fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }
    fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

struct Attention {
    dims: Dims,
    scale: f32,
    /// Causal: query `i` sees keys `0..=i + (tk − tq)`.
    causal: bool,
    /// Additive key mask `[batch, tk]` (0 for tokens, a large negative number for padding).
    key_mask: Option<Vec<f32>>,
}

impl Attention {
    /// The probabilities `P [tq, tk]` of head `h` of batch row `bi` into `p`.
    fn probabilities(&self, q: &[f32], k: &[f32], bi: usize, h: usize, p: &mut [f32]) {
        let Dims { tq, tk, head_dim: d, .. } = self.dims;
        let (qw, kw) = (self.dims.q_width(), self.dims.kv_width());
        let kvh = h / (self.dims.heads / self.dims.kv_heads);
        let q0 = &q[bi * tq * qw + h * d..];
        let k0 = &k[bi * tk * kw + kvh * d..];
        // S = scale · Q_h · K_hᵀ
        unsafe {
            gemm_into(
                (tq, tk, d),
                (p.as_mut_ptr(), tk, 1),
                false,
                (q0.as_ptr(), qw, 1),
                (k0.as_ptr(), 1, kw),
                self.scale,
            );
        }
        let mask = self.key_mask.as_ref().map(|m| &m[bi * tk..(bi + 1) * tk]);
        let offset = tk - tq;
        for (i, row) in p.chunks_exact_mut(tk).enumerate() {
            if let Some(mask) = mask {
                row.iter_mut().zip(mask).for_each(|(s, m)| *s += m);
            }
            let visible = if self.causal { i + offset + 1 } else { tk };
            let (seen, hidden) = row.split_at_mut(visible);
            hidden.fill(0.0);
            let max = seen.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            // Exponentials first, then the sum: the first loop vectorises.
            seen.iter_mut().for_each(|s| *s = exp_f32(*s - max));
            let inv = 1.0 / seen.iter().sum::<f32>();
            seen.iter_mut().for_each(|s| *s *= inv);
        }
    }

    /// Every (batch row, key-value head) pair, in parallel: `f(bi, kv_head)`.
    fn for_each_group(&self, f: impl Fn(usize, usize) + Sync) {
        let groups = self.dims.batch * self.dims.kv_heads;
        (0..groups).into_par_iter().for_each(|g| f(g / self.dims.kv_heads, g % self.dims.kv_heads));
    }

    fn heads_of(&self, kv_head: usize) -> std::ops::Range<usize> {
        let per = self.dims.heads / self.dims.kv_heads;
        kv_head * per..(kv_head + 1) * per
    }

    fn check(&self, ql: &Layout, kl: &Layout, vl: &Layout) -> Result<()> {
        let Dims { batch, tq, tk, .. } = self.dims;
        let (qs, kvs) = ([batch, tq, self.dims.q_width()], [batch, tk, self.dims.kv_width()]);
        if ql.dims() != qs || kl.dims() != kvs || vl.dims() != kvs {
            candle_core::bail!(
                "attention: q {:?}, k {:?}, v {:?} do not match {qs:?}, {kvs:?}, {kvs:?}",
                ql.dims(),
                kl.dims(),
                vl.dims()
            );
        }
        Ok(())
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.check(ql, kl, vl)?;
        let (q, k, v) = (
            contiguous_f32(qs, ql, "attention")?,
            contiguous_f32(ks, kl, "attention")?,
            contiguous_f32(vs, vl, "attention")?,
        );
        let Dims { tq, tk, head_dim: d, .. } = self.dims;
        let (qw, kw) = (self.dims.q_width(), self.dims.kv_width());
        let mut out = vec![0f32; q.len()];
        let dst = SyncPtr(out.as_mut_ptr());
        self.for_each_group(|bi, kvh| {
            let mut p = vec![0f32; tq * tk];
            for h in self.heads_of(kvh) {
                self.probabilities(q, k, bi, h, &mut p);
                // O_h = P · V_h, written into the head's columns of the output rows.
                let o = unsafe { dst.get().add(bi * tq * qw + h * d) };
                let v0 = &v[bi * tk * kw + kvh * d..];
                unsafe { gemm_into((tq, d, tk), (o, qw, 1), false, (p.as_ptr(), tk, 1), (v0.as_ptr(), kw, 1), 1.0) };
            }
        });
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }

    /// With `P` recomputed: `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowsum(dP ⊙ P))`,
    /// `dQ = scale·dS·K`, `dK = scale·dSᵀ·Q`. Heads sharing a key-value head add into its rows.
    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (qg, ql) = q.storage_and_layout();
        let (kg, kl) = k.storage_and_layout();
        let (vg, vl) = v.storage_and_layout();
        let (gg, gl) = grad.storage_and_layout();
        // Read in place: the read guards live until the end of this function.
        let (q, k, v, dout) = (cpu_f32(&qg, ql)?, cpu_f32(&kg, kl)?, cpu_f32(&vg, vl)?, cpu_f32(&gg, gl)?);
        let Dims { tq, tk, head_dim: d, .. } = self.dims;
        let (qw, kw) = (self.dims.q_width(), self.dims.kv_width());
        let mut dq = vec![0f32; q.len()];
        let mut dk = vec![0f32; k.len()];
        let mut dv = vec![0f32; v.len()];
        let (dq_ptr, dk_ptr, dv_ptr) = (SyncPtr(dq.as_mut_ptr()), SyncPtr(dk.as_mut_ptr()), SyncPtr(dv.as_mut_ptr()));
        self.for_each_group(|bi, kvh| {
            let mut p = vec![0f32; tq * tk];
            let mut dp = vec![0f32; tq * tk];
            let k0 = &k[bi * tk * kw + kvh * d..];
            let v0 = &v[bi * tk * kw + kvh * d..];
            let (dk0, dv0) =
                unsafe { (dk_ptr.get().add(bi * tk * kw + kvh * d), dv_ptr.get().add(bi * tk * kw + kvh * d)) };
            for (n, h) in self.heads_of(kvh).enumerate() {
                self.probabilities(q, k, bi, h, &mut p);
                let q0 = &q[bi * tq * qw + h * d..];
                let do0 = &dout[bi * tq * qw + h * d..];
                let dq0 = unsafe { dq_ptr.get().add(bi * tq * qw + h * d) };
                let accumulate = n > 0;
                unsafe {
                    // dV += Pᵀ · dO
                    gemm_into((tk, d, tq), (dv0, kw, 1), accumulate, (p.as_ptr(), 1, tk), (do0.as_ptr(), qw, 1), 1.0);
                    // dP = dO · Vᵀ
                    gemm_into(
                        (tq, tk, d),
                        (dp.as_mut_ptr(), tk, 1),
                        false,
                        (do0.as_ptr(), qw, 1),
                        (v0.as_ptr(), 1, kw),
                        1.0,
                    );
                }
                for (prow, dprow) in p.chunks_exact(tk).zip(dp.chunks_exact_mut(tk)) {
                    let dot: f32 = prow.iter().zip(dprow.iter()).map(|(a, b)| a * b).sum();
                    prow.iter().zip(dprow.iter_mut()).for_each(|(p, g)| *g = p * (*g - dot));
                }
                unsafe {
                    // dQ = scale · dS · K ; dK += scale · dSᵀ · Q
                    gemm_into((tq, d, tk), (dq0, qw, 1), false, (dp.as_ptr(), tk, 1), (k0.as_ptr(), kw, 1), self.scale);
                    gemm_into(
                        (tk, d, tq),
                        (dk0, kw, 1),
                        accumulate,
                        (dp.as_ptr(), 1, tk),
                        (q0.as_ptr(), qw, 1),
                        self.scale,
                    );
                }
            }
        });
        let batch = self.dims.batch;
        Ok((
            Some(Tensor::from_vec(dq, (batch, tq, qw), grad.device())?),
            Some(Tensor::from_vec(dk, (batch, tk, kw), grad.device())?),
            Some(Tensor::from_vec(dv, (batch, tk, kw), grad.device())?),
        ))
    }
}

/// Options of `attention` beyond Q, K and V.
pub struct AttentionSpec<'a> {
    pub heads: usize,
    pub kv_heads: usize,
    pub causal: bool,
    /// Additive `[batch, tk]` mask (or any shape with `batch·tk` values).
    pub key_mask: Option<&'a Tensor>,
}

/// `softmax(Q·Kᵀ/√d + mask)·V` per head, for `q [batch, tq, heads·d]` and `k`, `v`
/// `[batch, tk, kv_heads·d]`, as `[batch, tq, heads·d]` (CPU, f32; see `ops::fusable`).
pub fn fused_attention(q: &Tensor, k: &Tensor, v: &Tensor, spec: &AttentionSpec) -> Result<Tensor> {
    let (batch, tq, width) = q.dims3()?;
    let (_, tk, kv_width) = k.dims3()?;
    if spec.heads == 0
        || spec.kv_heads == 0
        || !spec.heads.is_multiple_of(spec.kv_heads)
        || !width.is_multiple_of(spec.heads)
    {
        candle_core::bail!(
            "attention: {} heads, {} key-value heads do not divide width {width}",
            spec.heads,
            spec.kv_heads
        );
    }
    let head_dim = width / spec.heads;
    if kv_width != spec.kv_heads * head_dim || tk < tq {
        candle_core::bail!("attention: keys {:?} do not fit queries {:?}", k.dims(), q.dims());
    }
    let key_mask = match spec.key_mask {
        Some(m) => {
            let m = m.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
            if m.len() != batch * tk {
                candle_core::bail!("attention: a key mask of {} values for {batch}×{tk} keys", m.len());
            }
            Some(m)
        }
        None => None,
    };
    let dims = Dims { batch, tq, tk, heads: spec.heads, kv_heads: spec.kv_heads, head_dim };
    let op = Attention { dims, scale: 1.0 / (head_dim as f32).sqrt(), causal: spec.causal, key_mask };
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}
