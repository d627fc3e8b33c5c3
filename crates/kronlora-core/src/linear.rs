//! A frozen linear layer `y = x·Wᵀ + b` with one adapter: the unit users create, merge and export.

use candle_core::{Device, Tensor, Var};

use crate::adapters::{Adapter, AdapterKind, KronLora, Lora};
use crate::error::{Error, Result};
use crate::ops::frozen_matmul;
use crate::options::LayerOptions;
use crate::tensor_data::{check_finite, check_matrix, TensorData};

/// Gradients of `sum(forward(x) ⊙ grad_output)`: per trainable parameter and for the input.
#[derive(Debug, Clone)]
pub struct Gradients {
    pub parameters: Vec<(String, TensorData)>,
    pub input: TensorData,
}

pub struct AdaptedLinear {
    name: String,
    in_features: usize,
    out_features: usize,
    /// Frozen base weight `[out, in]`, if any (an adapter may also be used on its own).
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    adapter: Box<dyn Adapter>,
    /// While merged: the exact weight from before `merge`, so `unmerge` restores it bit for bit.
    weight_before_merge: Option<Tensor>,
    device: Device,
}

impl AdaptedLinear {
    /// Build from validated options plus optional row-major `weight [out, in]` and `bias [out]`.
    pub fn new(options: &LayerOptions, weight: Option<&[f32]>, bias: Option<&[f32]>, device: &Device) -> Result<Self> {
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
        let adapter: Box<dyn Adapter> = match config.kind {
            AdapterKind::KronLora => Box::new(KronLora::new(name, i, o, config, device)?),
            AdapterKind::Lora => Box::new(Lora::new(i, o, config, device)?),
        };
        Ok(AdaptedLinear {
            name: name.clone(),
            in_features: i,
            out_features: o,
            weight,
            bias,
            adapter,
            weight_before_merge: None,
            device: device.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn in_features(&self) -> usize {
        self.in_features
    }
    pub fn out_features(&self) -> usize {
        self.out_features
    }
    pub fn adapter(&self) -> &dyn Adapter {
        self.adapter.as_ref()
    }
    pub fn is_merged(&self) -> bool {
        self.weight_before_merge.is_some()
    }
    pub fn num_trainable_parameters(&self) -> usize {
        self.adapter.num_trainable_parameters()
    }

    /// `y = x·Wᵀ + b + s·ΔW x` for `x [rows, in]`. After `merge` the update lives in `W`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let base = match &self.weight {
            Some(w) => Some(frozen_matmul(x, w)?),
            None => None,
        };
        let base = match (&base, &self.bias) {
            (Some(y), Some(b)) => Some(y.broadcast_add(b)?),
            _ => base,
        };
        if self.is_merged() {
            // merge() requires a weight, so the base exists here.
            return base.ok_or_else(|| Error::InvalidState("merged layer without weight".into()));
        }
        let delta = self.adapter.forward(x)?;
        Ok(match base {
            Some(y) => (y + delta)?,
            None => delta,
        })
    }

    fn input(&self, x: &[f32], rows: usize) -> Result<Tensor> {
        check_matrix(&format!("layer `{}`: input x", self.name), x, rows, self.in_features)?;
        Ok(Tensor::from_slice(x, (rows, self.in_features), &self.device)?)
    }

    /// `forward` on a row-major `rows × in` array.
    pub fn forward_rows(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let y = self.forward(&self.input(x, rows)?)?;
        Ok(y.flatten_all()?.to_vec1::<f32>()?)
    }

    /// Gradients of `sum(forward(x) ⊙ grad_output)` by candle autograd. After `merge` the
    /// adapter is folded into the weight and is not trained, so only the input gradient comes back.
    pub fn gradients(&self, x: &[f32], rows: usize, grad_output: &[f32]) -> Result<Gradients> {
        let x = Var::from_tensor(&self.input(x, rows)?)?;
        check_matrix(&format!("layer `{}`: gradOutput", self.name), grad_output, rows, self.out_features)?;
        let g = Tensor::from_slice(grad_output, (rows, self.out_features), &self.device)?;
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
            self.adapter
                .parameters()
                .into_iter()
                .map(|(n, v)| Ok((n.to_string(), grad_of(v)?)))
                .collect::<Result<_>>()?
        };
        Ok(Gradients { parameters, input: grad_of(&x)? })
    }

    /// The trainable parameters by name (`A`, `B1`, `B2` or `lora_A`, `lora_B`).
    pub fn parameters(&self) -> Result<Vec<(String, TensorData)>> {
        self.adapter
            .parameters()
            .into_iter()
            .map(|(n, v)| Ok((n.to_string(), TensorData::from_tensor(v.as_tensor())?)))
            .collect()
    }

    /// Replace some or all parameters. Everything is checked before anything changes.
    pub fn set_parameters(&self, values: &[(String, TensorData)]) -> Result<()> {
        if self.is_merged() {
            return Err(Error::InvalidState(format!(
                "layer `{}` is merged; call unmerge() before setParameters()",
                self.name
            )));
        }
        let params = self.adapter.parameters();
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
            updates.push((*var, value.to_tensor(&self.device)?));
        }
        for (var, t) in updates {
            var.set(&t)?;
        }
        Ok(())
    }

    /// The update `s · ΔW`, `[out, in]`.
    pub fn delta_weight(&self) -> Result<TensorData> {
        TensorData::from_tensor(&self.adapter.delta_weight()?)
    }

    /// Fold the update into the base weight: `W ← W + s·ΔW`.
    pub fn merge(&mut self) -> Result<()> {
        let Some(w) = &self.weight else {
            return Err(Error::InvalidState(format!(
                "layer `{}` has no base weight to merge into; create it with `weight`",
                self.name
            )));
        };
        if self.is_merged() {
            return Err(Error::InvalidState(format!("layer `{}` is already merged", self.name)));
        }
        let merged = (w + self.adapter.delta_weight()?)?;
        self.weight_before_merge = self.weight.replace(merged);
        Ok(())
    }

    /// Undo `merge`, restoring the weight exactly as it was.
    pub fn unmerge(&mut self) -> Result<()> {
        match self.weight_before_merge.take() {
            Some(w) => {
                self.weight = Some(w);
                Ok(())
            }
            None => Err(Error::InvalidState(format!("layer `{}` is not merged; nothing to unmerge", self.name))),
        }
    }

    /// The current base weight (merged or not), if any.
    pub fn weight(&self) -> Result<Option<TensorData>> {
        self.weight.as_ref().map(TensorData::from_tensor).transpose()
    }

    /// The exact LoRA equivalent: `(lora_A [rank, in], lora_B [out, rank], rank, alpha)`.
    pub fn to_lora(&self) -> Result<(TensorData, TensorData, usize, f64)> {
        let f = self.adapter.to_lora()?;
        Ok((TensorData::from_tensor(&f.lora_a)?, TensorData::from_tensor(&f.lora_b)?, f.rank, f.alpha))
    }
}
