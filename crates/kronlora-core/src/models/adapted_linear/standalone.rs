//! The standalone layer users create (`KronLoraLinear` / `LoraLinear`): an `AdaptedLinear`
//! with one adapter, its inputs, outputs and parameters as row-major f32 arrays.

use candle_core::{Device, Tensor, Var};

use super::AdaptedLinear;
use crate::adapters::{self, Adapter, AdapterConfig};
use crate::error::{Error, Result};
use crate::tensor_data::{check_finite, check_matrix, TensorData};

/// Gradients of `sum(forward(x) ⊙ grad_output)`: per trainable parameter and for the input.
#[derive(Debug, Clone)]
pub struct Gradients {
    pub parameters: Vec<(String, TensorData)>,
    pub input: TensorData,
}

/// A standalone layer's settings: its name, its size and its one adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerOptions {
    pub name: String,
    pub in_features: usize,
    pub out_features: usize,
    pub adapter: AdapterConfig,
}

/// The host-array API of a standalone layer (`KronLoraLinear` / `LoraLinear`): one adapter,
/// inputs and outputs as row-major f32 arrays.
impl AdaptedLinear {
    /// Build from validated options plus optional row-major `weight [out, in]` and `bias [out]`.
    pub fn standalone(
        options: &LayerOptions,
        weight: Option<&[f32]>,
        bias: Option<&[f32]>,
        device: &Device,
    ) -> Result<Self> {
        let LayerOptions { name, in_features: i, out_features: o, adapter: config } = options;
        let (i, o) = (*i, *o);
        let weight = match weight {
            None => None,
            Some(w) => {
                if w.len() != i * o {
                    return Err(Error::ShapeMismatch(format!(
                        "layer `{name}`: weight must hold outFeatures × inFeatures = {o} × {i} = {} values (row-major [out, in]), got {}",
                        i * o,
                        w.len()
                    )));
                }
                check_finite(&format!("layer `{name}`: weight"), w)?;
                Some(Tensor::from_slice(w, (o, i), device)?)
            }
        };
        let bias = match bias {
            None => None,
            Some(_) if weight.is_none() => {
                return Err(Error::InvalidOption(format!(
                    "layer `{name}`: a bias needs a base weight; pass `weight` too or drop `bias`"
                )))
            }
            Some(b) => {
                if b.len() != o {
                    return Err(Error::ShapeMismatch(format!(
                        "layer `{name}`: bias must hold outFeatures = {o} values, got {}",
                        b.len()
                    )));
                }
                check_finite(&format!("layer `{name}`: bias"), b)?;
                Some(Tensor::from_slice(b, o, device)?)
            }
        };
        let mut layer = match weight {
            Some(w) => AdaptedLinear::new(name.clone(), w, bias)?,
            None => AdaptedLinear::without_base(name.clone(), i, o, device),
        };
        layer.add_adapter(name.clone(), adapters::build(name, i, o, config, device)?, None);
        Ok(layer)
    }

    /// The standalone layer's one adapter.
    pub fn adapter(&self) -> Result<&dyn Adapter> {
        self.adapters()
            .next()
            .map(|(_, a)| a)
            .ok_or_else(|| Error::InvalidState(format!("layer `{}` has no adapter", self.name)))
    }

    /// `forward` on a row-major `rows × in` array.
    pub fn forward_rows(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let y = self.forward(&self.input(x, rows)?)?;
        Ok(y.flatten_all()?.to_vec1::<f32>()?)
    }

    fn input(&self, x: &[f32], rows: usize) -> Result<Tensor> {
        check_matrix(&format!("layer `{}`: input x", self.name), x, rows, self.in_features())?;
        Ok(Tensor::from_slice(x, (rows, self.in_features()), self.device())?)
    }

    /// Gradients of `sum(forward(x) ⊙ grad_output)` by candle autograd. After `merge` the
    /// adapter is folded into the weight and is not trained, so only the input gradient comes back.
    pub fn gradients(&self, x: &[f32], rows: usize, grad_output: &[f32]) -> Result<Gradients> {
        let x = Var::from_tensor(&self.input(x, rows)?)?;
        check_matrix(&format!("layer `{}`: gradOutput", self.name), grad_output, rows, self.out_features())?;
        let g = Tensor::from_slice(grad_output, (rows, self.out_features()), self.device())?;
        let y = self.forward(x.as_tensor())?;
        let grads = (y * g)?.sum_all()?.backward()?;
        let grad_of = |v: &Var| -> Result<TensorData> {
            match grads.get(v.as_tensor()) {
                Some(t) => TensorData::from_tensor(t),
                None => TensorData::from_tensor(&v.as_tensor().zeros_like()?),
            }
        };
        let parameters = if self.is_merged() {
            Vec::new()
        } else {
            self.adapter()?
                .parameters()
                .into_iter()
                .map(|(n, v)| Ok((n.to_string(), grad_of(v)?)))
                .collect::<Result<_>>()?
        };
        Ok(Gradients { parameters, input: grad_of(&x)? })
    }

    /// The trainable parameters by name (`A`, `B1`, `B2` or `lora_A`, `lora_B`).
    pub fn parameters(&self) -> Result<Vec<(String, TensorData)>> {
        self.adapter()?
            .parameters()
            .into_iter()
            .map(|(n, v)| Ok((n.to_string(), TensorData::from_tensor(v.as_tensor())?)))
            .collect()
    }

    /// Replace some or all parameters. Everything is checked before anything changes.
    pub fn set_parameters(&self, values: &[(String, TensorData)]) -> Result<()> {
        if self.is_merged() {
            return Err(Error::InvalidState(format!(
                "layer `{}` is merged; unmerge it before setting its parameters",
                self.name
            )));
        }
        let params = self.adapter()?.parameters();
        let mut updates = Vec::with_capacity(values.len());
        for (name, value) in values {
            let Some((_, var)) = params.iter().find(|(n, _)| n == name) else {
                let known: Vec<&str> = params.iter().map(|(n, _)| *n).collect();
                return Err(Error::InvalidOption(format!(
                    "layer `{}` has no parameter `{name}`; its parameters are {}",
                    self.name,
                    known.join(", ")
                )));
            };
            let want = var.dims();
            let count: usize = value.shape.iter().product();
            if value.shape != want || value.data.len() != count {
                return Err(Error::ShapeMismatch(format!(
                    "layer `{}`: parameter `{name}` must have shape {want:?} ({} values), got shape {:?} with {} values",
                    self.name,
                    want.iter().product::<usize>(),
                    value.shape,
                    value.data.len()
                )));
            }
            check_finite(&format!("layer `{}`: parameter `{name}`", self.name), &value.data)?;
            updates.push((*var, value.to_tensor(self.device())?));
        }
        for (var, t) in updates {
            var.set(&t)?;
        }
        Ok(())
    }

    /// The update `s · ΔW`, `[out, in]`.
    pub fn delta_weight(&self) -> Result<TensorData> {
        TensorData::from_tensor(&self.adapter()?.delta_weight()?)
    }

    /// The current base weight (merged or not), if any, as host data.
    pub fn weight_data(&self) -> Result<Option<TensorData>> {
        self.weight()?.as_ref().map(TensorData::from_tensor).transpose()
    }

    /// The exact LoRA equivalent: `(lora_A [rank, in], lora_B [out, rank], rank, alpha)`.
    pub fn to_lora(&self) -> Result<(TensorData, TensorData, usize, f64)> {
        let f = self.adapter()?.to_lora()?;
        Ok((TensorData::from_tensor(&f.lora_a)?, TensorData::from_tensor(&f.lora_b)?, f.rank, f.alpha))
    }
}
