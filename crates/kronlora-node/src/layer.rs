//! `NativeLayer`: one adapted linear layer (`KronLoraLinear` / `LoraLinear` in TS).

use kronlora_core::api::{self, AdaptedLinear, TensorData};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::js_error;

#[napi(object)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<u32>,
    pub data: Float32Array,
}

#[napi(object)]
pub struct LayerGradients {
    pub parameters: Vec<NamedTensor>,
    pub input: NamedTensor,
}

#[napi(object)]
pub struct LoraExport {
    pub lora_a: NamedTensor,
    pub lora_b: NamedTensor,
    pub rank: u32,
    pub alpha: f64,
}

fn named(name: &str, t: TensorData) -> NamedTensor {
    NamedTensor {
        name: name.to_string(),
        shape: t.shape.iter().map(|&d| d as u32).collect(),
        data: Float32Array::new(t.data),
    }
}

fn named_all(list: Vec<(String, TensorData)>) -> Vec<NamedTensor> {
    list.into_iter().map(|(n, t)| named(&n, t)).collect()
}

/// An adapted linear layer; the TS classes `KronLoraLinear` / `LoraLinear` wrap it.
#[napi]
pub struct NativeLayer {
    inner: AdaptedLinear,
}

#[napi]
impl NativeLayer {
    #[napi(constructor, catch_unwind)]
    pub fn new(
        kind: String,
        options_json: String,
        weight: Option<Float32Array>,
        bias: Option<Float32Array>,
    ) -> Result<Self> {
        let inner = api::create_layer(&kind, &options_json, weight.as_deref(), bias.as_deref()).map_err(js_error)?;
        Ok(NativeLayer { inner })
    }

    #[napi(getter)]
    pub fn in_features(&self) -> u32 {
        self.inner.in_features() as u32
    }

    #[napi(getter)]
    pub fn out_features(&self) -> u32 {
        self.inner.out_features() as u32
    }

    #[napi(getter)]
    pub fn num_trainable_parameters(&self) -> u32 {
        self.inner.num_trainable_parameters() as u32
    }

    #[napi(getter)]
    pub fn merged(&self) -> bool {
        self.inner.is_merged()
    }

    #[napi(catch_unwind)]
    pub fn forward(&self, x: Float32Array, rows: u32) -> Result<Float32Array> {
        self.inner.forward_rows(&x, rows as usize).map(Float32Array::new).map_err(js_error)
    }

    #[napi(catch_unwind)]
    pub fn gradients(&self, x: Float32Array, rows: u32, grad_output: Float32Array) -> Result<LayerGradients> {
        let g = self.inner.gradients(&x, rows as usize, &grad_output).map_err(js_error)?;
        Ok(LayerGradients { parameters: named_all(g.parameters), input: named("x", g.input) })
    }

    #[napi(catch_unwind)]
    pub fn get_parameters(&self) -> Result<Vec<NamedTensor>> {
        self.inner.parameters().map(named_all).map_err(js_error)
    }

    #[napi(catch_unwind)]
    pub fn set_parameters(&self, values: Vec<NamedTensor>) -> Result<()> {
        let values: Vec<(String, TensorData)> = values
            .into_iter()
            .map(|t| {
                (t.name, TensorData { shape: t.shape.iter().map(|&d| d as usize).collect(), data: t.data.to_vec() })
            })
            .collect();
        self.inner.set_parameters(&values).map_err(js_error)
    }

    #[napi(catch_unwind)]
    pub fn delta_weight(&self) -> Result<NamedTensor> {
        self.inner.delta_weight().map(|t| named("deltaWeight", t)).map_err(js_error)
    }

    #[napi(catch_unwind)]
    pub fn weight(&self) -> Result<Option<NamedTensor>> {
        self.inner.weight_data().map(|w| w.map(|t| named("weight", t))).map_err(js_error)
    }

    #[napi(catch_unwind)]
    pub fn merge(&mut self) -> Result<()> {
        self.inner.merge().map_err(js_error)
    }

    #[napi(catch_unwind)]
    pub fn unmerge(&mut self) -> Result<()> {
        self.inner.unmerge().map_err(js_error)
    }

    #[napi(catch_unwind)]
    pub fn to_lora(&self) -> Result<LoraExport> {
        let (a, b, rank, alpha) = self.inner.to_lora().map_err(js_error)?;
        Ok(LoraExport { lora_a: named("lora_A", a), lora_b: named("lora_B", b), rank: rank as u32, alpha })
    }
}
