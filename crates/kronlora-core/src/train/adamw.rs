//! AdamW (Loshchilov & Hutter) as PyTorch's `torch.optim.AdamW`: decoupled weight decay,
//! bias-corrected moments kept in float32 whatever the parameter dtype, and a state that can
//! be saved and restored exactly (candle-nn's AdamW keeps private state and cannot resume).

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::error::{Error, Result};
use crate::tensor_data::TensorData;

#[derive(Debug, Clone, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's defaults.
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// Everything needed to resume: the step count and both moments of every parameter, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamWState {
    pub step: u64,
    pub first_moments: Vec<TensorData>,
    pub second_moments: Vec<TensorData>,
}

pub struct AdamW {
    config: AdamWConfig,
    params: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: u64,
}

impl AdamW {
    pub fn new(params: Vec<Var>, config: AdamWConfig) -> Result<Self> {
        // Moments in float32 on the parameter's own device: the update never moves data.
        let zeros = |p: &Var| Tensor::zeros(p.dims(), DType::F32, p.device());
        let m = params.iter().map(zeros).collect::<candle_core::Result<Vec<_>>>()?;
        let v = params.iter().map(zeros).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(AdamW { config, params, m, v, step: 0 })
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One update from a backward pass's gradients.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let grads: Vec<Option<Tensor>> = self.params.iter().map(|p| grads.get(p.as_tensor()).cloned()).collect();
        self.step_with(&grads, lr)
    }

    /// One update with learning rate `lr`; `grads[i]` belongs to the i-th parameter. Parameters
    /// without a gradient are left as they are (their moments too), as PyTorch does.
    pub fn step_with(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        if grads.len() != self.params.len() {
            return Err(Error::InvalidState(format!("{} gradients for {} parameters", grads.len(), self.params.len())));
        }
        self.step += 1;
        let AdamWConfig { beta1, beta2, eps, weight_decay } = self.config;
        let t = self.step as i32;
        let (c1, c2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
        for (((p, m), v), g) in self.params.iter().zip(self.m.iter_mut()).zip(self.v.iter_mut()).zip(grads) {
            let Some(g) = g else { continue };
            // Detached: a gradient from backward still records the graph it came from, and the
            // moments would otherwise chain every step's graph together (unbounded memory).
            let g = g.detach().to_dtype(DType::F32)?;
            *m = ((&*m * beta1)? + (&g * (1.0 - beta1))?)?;
            *v = ((&*v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            // p ← p·(1 − lr·wd) − lr · m̂ / (√v̂ + eps), with m̂ = m / c1, v̂ = v / c2.
            let denom = ((&*v / c2)?.sqrt()? + eps)?;
            let update = ((&*m / c1)? / denom)?;
            let decayed = (p.as_tensor().detach().to_dtype(DType::F32)? * (1.0 - lr * weight_decay))?;
            p.set(&(decayed - (update * lr)?)?.to_dtype(p.dtype())?)?;
        }
        Ok(())
    }

    pub fn state(&self) -> Result<AdamWState> {
        Ok(AdamWState {
            step: self.step,
            first_moments: self.m.iter().map(TensorData::from_tensor).collect::<Result<_>>()?,
            second_moments: self.v.iter().map(TensorData::from_tensor).collect::<Result<_>>()?,
        })
    }

    /// Restore a saved state; it must be for the same parameters (count and shapes).
    pub fn load_state(&mut self, state: &AdamWState) -> Result<()> {
        if state.first_moments.len() != self.params.len() || state.second_moments.len() != self.params.len() {
            return Err(Error::InvalidState(format!(
                "optimiser state is for {} parameters, this optimiser has {}",
                state.first_moments.len(),
                self.params.len()
            )));
        }
        let mut m = Vec::with_capacity(self.params.len());
        let mut v = Vec::with_capacity(self.params.len());
        for (i, p) in self.params.iter().enumerate() {
            for (what, t, out) in
                [("first", &state.first_moments[i], &mut m), ("second", &state.second_moments[i], &mut v)]
            {
                if t.shape != p.dims() {
                    return Err(Error::InvalidState(format!(
                        "optimiser {what} moment {i} has shape {:?}, the parameter {:?}",
                        t.shape,
                        p.dims()
                    )));
                }
                out.push(t.to_tensor(p.device())?);
            }
        }
        (self.m, self.v, self.step) = (m, v, state.step);
        Ok(())
    }
}
