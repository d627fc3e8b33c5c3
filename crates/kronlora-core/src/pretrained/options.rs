//! What a model is loaded for and where (the typed form of `loadModel`'s options).

use candle_core::Device;

use crate::models::Task;

#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// None: the family's default (`embedding` for encoders, `causal-lm` for decoders).
    pub task: Option<Task>,
    /// Sequence classification: the number of classes.
    pub num_labels: usize,
    /// Seed of the classification head's initialisation.
    pub seed: u64,
    /// Where the weights, adapters, batches and optimiser state live.
    pub device: Device,
    /// A GGUF model's quantised weights stay quantised (None: yes on the CPU).
    pub quantized: Option<bool>,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions { task: None, num_labels: 2, seed: 0, device: Device::Cpu, quantized: None }
    }
}
