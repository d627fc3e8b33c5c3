//! An adapter-aware linear projection of a model: a frozen base plus zero or more adapters.

use candle_core::Tensor;

use super::dropout::AdapterDropout;
use crate::adapters::Adapter;
use crate::error::Result;
use crate::ops::frozen_matmul;

pub struct Projection {
    /// The module path, e.g. `encoder.layer.0.attention.self.query`.
    pub name: String,
    /// `[out, in]`, frozen: its backward computes only the input gradient.
    weight: Tensor,
    bias: Option<Tensor>,
    adapters: Vec<(String, Box<dyn Adapter>, Option<AdapterDropout>)>,
}

impl Projection {
    pub fn new(name: String, weight: Tensor, bias: Option<Tensor>) -> Self {
        Projection { name, weight, bias, adapters: Vec::new() }
    }

    pub fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }
    pub fn num_parameters(&self) -> usize {
        self.weight.elem_count() + self.bias.as_ref().map_or(0, |b| b.elem_count())
    }
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn add_adapter(&mut self, name: String, adapter: Box<dyn Adapter>, dropout: Option<AdapterDropout>) {
        self.adapters.push((name, adapter, dropout));
    }
    pub fn adapters(&self) -> impl Iterator<Item = (&str, &dyn Adapter)> {
        self.adapters.iter().map(|(n, a, _)| (n.as_str(), a.as_ref()))
    }
    /// Remove the adapter `name` (when loading one under a name in use, or discarding it).
    pub fn remove_adapter(&mut self, name: &str) -> bool {
        let before = self.adapters.len();
        self.adapters.retain(|(n, _, _)| n != name);
        self.adapters.len() != before
    }

    /// `x·Wᵀ + b + Σ adapters(x)` for `x [.., in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = frozen_matmul(x, &self.weight)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        for (_, adapter, dropout) in &self.adapters {
            let delta = match dropout {
                Some(d) => adapter.forward(&d.apply(x)?)?,
                None => adapter.forward(x)?,
            };
            y = (y + delta)?;
        }
        Ok(y)
    }
}
