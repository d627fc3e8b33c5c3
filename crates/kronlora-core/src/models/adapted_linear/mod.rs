//! A frozen linear layer `y = x·Wᵀ + b` carrying named adapters: every projection of a model,
//! and the standalone layer users create (`standalone.rs` adds its host-array API).

mod standalone;

pub use standalone::{Gradients, LayerOptions};

use candle_core::{Device, Tensor};

use crate::adapters::{out_shape, Adapter, AdapterDropout};
use crate::error::{Error, Result};
use crate::models::{adapter_selection, FrozenWeight};
use crate::ops::frozen_linear;

/// One adapter on a layer, under its name, with optional dropout in front of it.
struct Attached {
    name: String,
    adapter: Box<dyn Adapter>,
    dropout: Option<AdapterDropout>,
    /// Active with this weight on its update (1 when added), or inactive (None).
    weight: Option<f64>,
}

impl Clone for Attached {
    fn clone(&self) -> Self {
        Attached {
            name: self.name.clone(),
            adapter: self.adapter.clone_box(),
            dropout: self.dropout.clone(),
            weight: self.weight,
        }
    }
}

/// Cloning shares the weights and the adapters' variables (tensors are handles).
#[derive(Clone)]
pub struct AdaptedLinear {
    /// The module path (`encoder.layer.0.attention.self.query`) or the standalone layer's name.
    pub name: String,
    in_features: usize,
    out_features: usize,
    /// `[out, in]`, frozen (f32 or quantised): its backward computes only the input gradient.
    /// None for a standalone adapter without a base layer.
    weight: Option<FrozenWeight>,
    bias: Option<Tensor>,
    adapters: Vec<Attached>,
    /// While merged: the exact weight from before `merge` (quantised blocks stay as they were),
    /// so `unmerge` restores it bit for bit.
    weight_before_merge: Option<FrozenWeight>,
    device: Device,
}

impl AdaptedLinear {
    /// A model projection: frozen `weight [out, in]` and optional `bias [out]`, no adapters yet.
    /// A quantised weight lives on the CPU, as does its layer.
    pub fn new(name: String, weight: impl Into<FrozenWeight>, bias: Option<Tensor>) -> Result<Self> {
        let weight = weight.into();
        let (out_features, in_features) = weight.dims2()?;
        let device = match &weight {
            FrozenWeight::Dense(t) => t.device().clone(),
            FrozenWeight::Quantized(_) => Device::Cpu,
        };
        Ok(AdaptedLinear {
            name,
            in_features,
            out_features,
            weight: Some(weight),
            bias,
            adapters: Vec::new(),
            weight_before_merge: None,
            device,
        })
    }

    /// An update without a base layer (`forward` is the adapter's output alone).
    pub fn without_base(name: String, in_features: usize, out_features: usize, device: &Device) -> Self {
        AdaptedLinear {
            name,
            in_features,
            out_features,
            weight: None,
            bias: None,
            adapters: Vec::new(),
            weight_before_merge: None,
            device: device.clone(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn in_features(&self) -> usize {
        self.in_features
    }
    pub fn out_features(&self) -> usize {
        self.out_features
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    /// Frozen parameters: the base weight and bias.
    pub fn num_parameters(&self) -> usize {
        self.weight.as_ref().map_or(0, |w| w.elem_count()) + self.bias.as_ref().map_or(0, |b| b.elem_count())
    }
    /// The base weight as it is now (with the update folded in while merged), dense: a
    /// quantised weight is dequantised into a temporary copy.
    pub fn weight(&self) -> Result<Option<Tensor>> {
        Ok(self.weight.as_ref().map(|w| w.to_dense(&self.device)).transpose()?)
    }
    /// The base weight as the layer holds it.
    pub fn frozen_weight(&self) -> Option<&FrozenWeight> {
        self.weight.as_ref()
    }
    pub fn is_merged(&self) -> bool {
        self.weight_before_merge.is_some()
    }

    /// Attach `adapter` as `name`, active with weight 1.
    pub fn add_adapter(&mut self, name: String, adapter: Box<dyn Adapter>, dropout: Option<AdapterDropout>) {
        self.adapters.push(Attached { name, adapter, dropout, weight: Some(1.0) });
    }
    /// Make exactly the adapters `selection` names active, each with its weight.
    pub fn set_active(&mut self, selection: &[(String, f64)]) {
        for a in &mut self.adapters {
            a.weight = selection.iter().find(|(n, _)| *n == a.name).map(|(_, w)| *w);
        }
    }
    /// The weight adapter `name` is active with (None: inactive or absent).
    pub fn adapter_weight(&self, name: &str) -> Option<f64> {
        self.adapters.iter().find(|a| a.name == name).and_then(|a| a.weight)
    }
    pub fn adapters(&self) -> impl Iterator<Item = (&str, &dyn Adapter)> {
        self.adapters.iter().map(|a| (a.name.as_str(), a.adapter.as_ref()))
    }
    /// Remove the adapter `name` (when loading one under a name in use, or discarding it).
    pub fn remove_adapter(&mut self, name: &str) -> bool {
        let before = self.adapters.len();
        self.adapters.retain(|a| a.name != name);
        self.adapters.len() != before
    }
    pub fn num_trainable_parameters(&self) -> usize {
        self.adapters.iter().map(|a| a.adapter.num_trainable_parameters()).sum()
    }

    /// The active adapters with their weights: the call's selection (`with_adapter_selection`)
    /// when there is one, else the layer's own. None while merged: the updates live in `W`.
    fn active(&self) -> Vec<(&Attached, f64)> {
        if self.is_merged() {
            return Vec::new();
        }
        match adapter_selection() {
            Some(sel) => self
                .adapters
                .iter()
                .filter_map(|a| sel.iter().find(|(n, _)| *n == a.name).map(|(_, w)| (a, *w)))
                .collect(),
            None => self.adapters.iter().filter_map(|a| a.weight.map(|w| (a, w))).collect(),
        }
    }

    /// `x·Wᵀ + b + Σ wₐ·s·ΔWₐ x` over the active adapters `a` for `x [.., in]`. While merged
    /// the updates live in `W`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let active = self.active();
        let mut updates = active.iter().map(|(a, w)| {
            let mut product = match &a.dropout {
                Some(d) => a.adapter.update_product(&d.apply(x)?)?,
                None => a.adapter.update_product(x)?,
            };
            if *w != 1.0 {
                // On the small left factor ([rows, r]), not the output.
                product.left = product.left.affine(*w, 0.0)?;
            }
            Ok::<_, Error>(product)
        });
        let out = out_shape(x, self.out_features);
        let Some(weight) = &self.weight else {
            // No base layer: the updates alone.
            let mut y: Option<Tensor> = None;
            for update in updates {
                let delta = update?.evaluate(out.clone())?;
                y = Some(match y {
                    Some(y) => (y + delta)?,
                    None => delta,
                });
            }
            return y.ok_or_else(|| {
                Error::InvalidState(format!("layer `{}` has neither a base weight nor an adapter", self.name))
            });
        };
        // The first update is accumulated into the base product in one node; any further
        // (several adapters at once) are added.
        let first = updates.next().transpose()?;
        let mut y = frozen_linear(x, weight, self.bias.as_ref(), first.as_ref())?;
        for update in updates {
            y = (y + update?.evaluate(out.clone())?)?;
        }
        Ok(y)
    }

    /// Fold the active adapters' updates into the base weight: `W ← W + Σ wₐ·s·ΔWₐ`.
    pub fn merge(&mut self) -> Result<()> {
        let Some(w) = &self.weight else {
            return Err(Error::InvalidState(format!(
                "layer `{}` has no base weight to merge into; create it with a weight",
                self.name
            )));
        };
        if self.is_merged() {
            return Err(Error::InvalidState(format!("layer `{}` is already merged", self.name)));
        }
        // Merged into a dense copy: re-quantising the sum would lose the update's precision.
        let mut merged = w.to_dense(&self.device)?;
        for a in &self.adapters {
            match a.weight {
                Some(1.0) => merged = (merged + a.adapter.delta_weight()?)?,
                Some(weight) => merged = (merged + a.adapter.delta_weight()?.affine(weight, 0.0)?)?,
                None => {}
            }
        }
        self.weight_before_merge = self.weight.replace(FrozenWeight::Dense(merged));
        Ok(())
    }

    /// Undo `merge`, restoring the weight exactly as it was.
    pub fn unmerge(&mut self) -> Result<()> {
        match self.weight_before_merge.take() {
            Some(w) => {
                self.weight = Some(w);
                Ok(())
            }
            None => Err(Error::InvalidState(format!("layer `{}` is not merged; nothing to unmerge", self.name))),
        }
    }
}
