//! Seeded initialisation, identical on every backend (rand's StdRng is portable).

use candle_core::{Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::Rng;

use crate::error::Result;

/// PyTorch's `kaiming_uniform_(w, a=√5)` as PEFT uses for LoRA: `U(-1/√fan_in, 1/√fan_in)`,
/// `fan_in` being the number of columns of `[rows, cols]`.
pub fn kaiming_uniform(rng: &mut StdRng, rows: usize, cols: usize, device: &Device) -> Result<Var> {
    let bound = 1.0 / (cols as f32).sqrt();
    let data: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-bound..bound)).collect();
    Ok(Var::from_tensor(&Tensor::from_vec(data, (rows, cols), device)?)?)
}
