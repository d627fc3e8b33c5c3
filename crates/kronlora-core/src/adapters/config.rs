//! How one adapter is shaped and initialised, independent of the layer it sits on.

use super::AdapterKind;

/// Kron-LoRA's default outer factors, the paper's DistilBERT setting (d_A1 = 2, d_A2 = 4).
pub const DEFAULT_KRON_IN: usize = 2;
pub const DEFAULT_KRON_OUT: usize = 4;

#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    pub kind: AdapterKind,
    pub rank: usize,
    pub alpha: f64,
    /// Kron-LoRA only: requested `d_A1` (None: default).
    pub kron_in: Option<usize>,
    /// Kron-LoRA only: requested `d_A2` (None: default).
    pub kron_out: Option<usize>,
    /// Scale `alpha / √r` (rsLoRA) instead of `alpha / r`.
    pub use_rslora: bool,
    pub seed: u64,
}

impl AdapterConfig {
    pub fn scale(&self) -> f64 {
        super::update_scale(self.alpha, self.rank, self.use_rslora)
    }
}
