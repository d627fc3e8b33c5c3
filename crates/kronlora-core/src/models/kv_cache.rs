//! Cached keys and values of the tokens seen so far, one entry per layer (generation only).

use candle_core::Tensor;

#[derive(Default)]
pub struct KvCache {
    /// `(keys, values)` of layer `l`, `[batch, positions, kv_heads·head_dim]` each (token-major, as the projections write them).
    pub(crate) layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |(k, _)| k.dim(1).unwrap_or(0))
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
