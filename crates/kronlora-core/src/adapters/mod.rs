//! Adapters: trainable low-parameter updates `Δy = s · ΔW x` of a frozen linear layer.

mod init;
mod kron_lora;
mod lora;

use candle_core::{Tensor, Var};

use crate::error::{Error, Result};

pub use init::kaiming_uniform;
pub use kron_lora::{KronLora, KronShape};
pub use lora::Lora;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterKind {
    KronLora,
    Lora,
}

impl AdapterKind {
    /// The class name users see, used in default layer names and messages.
    pub fn class_name(self) -> &'static str {
        match self {
            AdapterKind::KronLora => "KronLoraLinear",
            AdapterKind::Lora => "LoraLinear",
        }
    }
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
fn out_shape(x: &Tensor, features: usize) -> Vec<usize> {
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
    /// `Δy = s · x · ΔWᵀ` for `x [.., in]` (leading dims folded into rows), without building `ΔW`.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
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
        Err(Error::Unsupported(format!("toLora() is defined for Kron-LoRA adapters, not for {:?}", self.kind())))
    }
    fn num_trainable_parameters(&self) -> usize {
        self.parameters().iter().map(|(_, v)| v.elem_count()).sum()
    }
}
