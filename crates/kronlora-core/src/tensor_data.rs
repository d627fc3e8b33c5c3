//! Plain row-major f32 arrays crossing the binding boundary, and their checks.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// A host-side tensor: shape plus row-major f32 data.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl TensorData {
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        Ok(TensorData { shape: t.dims().to_vec(), data: t.flatten_all()?.to_vec1::<f32>()? })
    }

    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.data, self.shape.as_slice(), device)?)
    }
}

/// Check that `data` holds `rows × cols` finite values; `what` names the argument in errors.
pub fn check_matrix(what: &str, data: &[f32], rows: usize, cols: usize) -> Result<()> {
    if rows == 0 {
        return Err(Error::InvalidOption(format!("{what}: rows must be a positive integer, got 0")));
    }
    let expected =
        rows.checked_mul(cols).ok_or_else(|| Error::InvalidOption(format!("{what}: rows = {rows} is too large")))?;
    if data.len() != expected {
        return Err(Error::ShapeMismatch(format!(
            "{what}: expected {rows} × {cols} = {expected} values, got {}; pass rows × {cols} numbers",
            data.len()
        )));
    }
    check_finite(what, data)
}

/// Reject NaN and infinities, naming the first offending index.
pub fn check_finite(what: &str, data: &[f32]) -> Result<()> {
    match data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => {
            Err(Error::NonFinite(format!("{what}: value at index {i} is {}; inputs must be finite numbers", data[i])))
        }
    }
}
