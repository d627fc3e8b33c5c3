//! Adapter dropout (PEFT's `lora_dropout`): during training, each adapter sees its input with
//! elements zeroed at rate `p` and the rest scaled by `1/(1-p)`; the frozen path sees it whole.
//!
//! The masks are a pure function of (training step seed, module name): no RNG state lives
//! across steps, so a run resumed from a checkpoint draws exactly the masks it would have drawn.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::Result;

/// The model-wide switch: 0 means inference (no dropout), otherwise the seed of this step.
#[derive(Debug, Clone, Default)]
pub struct DropoutSeed(Arc<AtomicU64>);

impl DropoutSeed {
    /// Turn dropout on for one forward pass with `seed`, or off with None.
    pub fn set(&self, seed: Option<u64>) {
        self.0.store(seed.map_or(0, |s| s | 1), Ordering::Relaxed);
    }
    fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|s| *s != 0)
    }
}

/// Dropout in front of one adapter.
#[derive(Debug, Clone)]
pub struct AdapterDropout {
    pub p: f64,
    salt: u64,
    seed: DropoutSeed,
}

impl AdapterDropout {
    pub fn new(p: f64, module: &str, seed: DropoutSeed) -> Self {
        let salt = crate::hash::fnv1a(module);
        AdapterDropout { p, salt, seed }
    }

    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let Some(seed) = self.seed.get().filter(|_| self.p > 0.0) else { return Ok(x.clone()) };
        let mut rng = StdRng::seed_from_u64(seed ^ self.salt);
        let keep = 1.0 - self.p;
        let scale = (1.0 / keep) as f32;
        let mask: Vec<f32> =
            (0..x.elem_count()).map(|_| if rng.random::<f64>() < keep { scale } else { 0.0 }).collect();
        Ok((x * Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?)?)
    }
}
