//! Adapters: trainable low-parameter updates `Δy = s · ΔW x` of a frozen linear layer.

mod config;
mod dropout;
mod init;
mod kron_lora;
mod lora;

use candle_core::{Device, Tensor, Var};

use crate::error::{Error, Result};
use crate::ops::UpdateProduct;

pub use config::{AdapterConfig, DEFAULT_KRON_IN, DEFAULT_KRON_OUT};
pub use dropout::{AdapterDropout, DropoutSeed};
pub use init::kaiming_uniform;
pub use kron_lora::{KronLora, KronShape};
pub use lora::Lora;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterKind {
    KronLora,
    Lora,
}

impl AdapterKind {
    /// The name used in options and in kronlora's saved config (`"kron-lora"`, `"lora"`).
    pub fn name(self) -> &'static str {
        match self {
            AdapterKind::KronLora => "kron-lora",
            AdapterKind::Lora => "lora",
        }
    }

    /// The kind of an adapter name (`"kron-lora"`, `"lora"`).
    pub fn from_name(name: &str) -> Option<Self> {
        [AdapterKind::KronLora, AdapterKind::Lora].into_iter().find(|k| k.name() == name)
    }
}

/// A new adapter of `config`'s kind for the `[out, in]` layer `module` (which names it in
/// errors and seeds nothing: the seed is in `config`), its parameters on `device`.
pub fn build(
    module: &str,
    in_features: usize,
    out_features: usize,
    config: &AdapterConfig,
    device: &Device,
) -> Result<Box<dyn Adapter>> {
    Ok(match config.kind {
        AdapterKind::KronLora => Box::new(KronLora::new(module, in_features, out_features, config, device)?),
        AdapterKind::Lora => Box::new(Lora::new(in_features, out_features, config, device)?),
    })
}

/// The scale `s` of an update `s · ΔW`: `alpha / r`, or `alpha / √r` with rsLoRA.
pub fn update_scale(alpha: f64, rank: usize, use_rslora: bool) -> f64 {
    if use_rslora {
        alpha / (rank as f64).sqrt()
    } else {
        alpha / rank as f64
    }
}

/// The `alpha` that gives scale `scale` at rank `rank` (the inverse of `update_scale`).
pub fn alpha_for_scale(scale: f64, rank: usize, use_rslora: bool) -> f64 {
    if use_rslora {
        scale * (rank as f64).sqrt()
    } else {
        scale * rank as f64
    }
}

/// `x`'s shape with the last dimension replaced by `features`: adapters take any `[.., in]`.
pub(crate) fn out_shape(x: &Tensor, features: usize) -> Vec<usize> {
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = features;
    }
    dims
}

/// The plain-LoRA form of an update: `ΔW = (alpha / rank) · lora_B · lora_A`.
#[derive(Debug, Clone)]
pub struct LoraFactors {
    /// `[rank, in]`
    pub lora_a: Tensor,
    /// `[out, rank]`
    pub lora_b: Tensor,
    pub rank: usize,
    pub alpha: f64,
}

/// An adapter on one linear layer of shape `[out, in]`.
pub trait Adapter: Send + Sync {
    fn kind(&self) -> AdapterKind;
    fn in_features(&self) -> usize;
    fn out_features(&self) -> usize;
    /// The scale `s` applied to the update.
    fn scale(&self) -> f64;
    /// The rank `r` of the low-rank factors (Kron-LoRA: of the inner `B1·B2`).
    fn rank(&self) -> usize;
    /// Kron-LoRA's outer factors `(d_A1, d_A2)` as this layer resolved them; None for LoRA.
    fn kron_factors(&self) -> Option<(usize, usize)> {
        None
    }
    /// `Δy = s · x · ΔWᵀ` for `x [.., in]` (leading dims folded into rows) as its last product
    /// `left · rightᵀ`, not yet evaluated: the layer accumulates it into its own output.
    fn update_product(&self, x: &Tensor) -> Result<UpdateProduct>;
    /// `Δy = s · x · ΔWᵀ` for `x [.., in]`, without building `ΔW`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.update_product(x)?.evaluate(out_shape(x, self.out_features()))?)
    }
    /// The full update `s · ΔW`, `[out, in]` (for merging and inspection, not training).
    fn delta_weight(&self) -> Result<Tensor>;
    /// Trainable parameters, in a fixed order, with their names.
    fn parameters(&self) -> Vec<(&'static str, &Var)>;
    /// The parameter `name` (one of the names `parameters` gives), or None.
    fn parameter(&self, name: &str) -> Option<&Var> {
        self.parameters().into_iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
    /// The exact plain-LoRA equivalent of this update.
    fn to_lora(&self) -> Result<LoraFactors> {
        Err(Error::Unsupported(format!(
            "the exact LoRA form is defined for Kron-LoRA adapters, not for a {} adapter",
            self.kind().name()
        )))
    }
    fn num_trainable_parameters(&self) -> usize {
        self.parameters().iter().map(|(_, v)| v.elem_count()).sum()
    }
    /// The same adapter sharing its variables (a checkpointed block's recomputation runs on a
    /// clone of the layer; gradients reach the same variables).
    fn clone_box(&self) -> Box<dyn Adapter>;
}
