//! A frozen base weight as the model holds it: f32 (or the file's float type), or kept in the
//! GGUF file's quantised blocks (`ops::quantized_linear`).

use candle_core::{Device, Tensor};

use candle_core::Result;

use super::{frozen_matmul, quantized_matmul, QuantizedWeight};

/// Cloning shares the data (tensors and blocks are handles).
#[derive(Clone, Debug)]
pub enum FrozenWeight {
    Dense(Tensor),
    Quantized(QuantizedWeight),
}

impl From<Tensor> for FrozenWeight {
    fn from(t: Tensor) -> Self {
        FrozenWeight::Dense(t)
    }
}

impl FrozenWeight {
    /// `(out, in)` of a projection, `(rows, width)` of an embedding table.
    pub fn dims2(&self) -> Result<(usize, usize)> {
        Ok(match self {
            FrozenWeight::Dense(t) => t.dims2()?,
            FrozenWeight::Quantized(q) => q.dims2(),
        })
    }

    pub fn elem_count(&self) -> usize {
        match self {
            FrozenWeight::Dense(t) => t.elem_count(),
            FrozenWeight::Quantized(q) => q.elem_count(),
        }
    }

    /// Resident bytes of the weight.
    pub fn size_in_bytes(&self) -> usize {
        match self {
            FrozenWeight::Dense(t) => t.elem_count() * t.dtype().size_in_bytes(),
            FrozenWeight::Quantized(q) => q.size_in_bytes(),
        }
    }

    /// The weight as a dense tensor: itself, or a temporary dequantised copy.
    pub fn to_dense(&self, device: &Device) -> Result<Tensor> {
        Ok(match self {
            FrozenWeight::Dense(t) => t.clone(),
            FrozenWeight::Quantized(q) => q.dequantize(device)?,
        })
    }

    /// `x · Wᵀ`; the input gradient flows, the weight gets none.
    pub fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            FrozenWeight::Dense(t) => frozen_matmul(x, t)?,
            FrozenWeight::Quantized(q) => quantized_matmul(x, q)?,
        })
    }

    /// Rows `ids` of an embedding table (flattened ids → `[ids, width]`).
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match self {
            FrozenWeight::Dense(t) => t.index_select(ids, 0)?,
            FrozenWeight::Quantized(q) => q.embedding(ids)?,
        })
    }
}
