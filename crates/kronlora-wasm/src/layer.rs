//! `WasmLayer`: one adapted linear layer (`KronLoraLinear` / `LoraLinear` in TS).

use js_sys::{Array, Object};
use kronlora_core::api::{self, AdaptedLinear};
use wasm_bindgen::prelude::*;

use crate::{js_error, named, named_all, read_named_all, set};

/// An adapted linear layer; the TS classes `KronLoraLinear` / `LoraLinear` wrap it.
#[wasm_bindgen]
pub struct WasmLayer {
    inner: AdaptedLinear,
}

#[wasm_bindgen]
impl WasmLayer {
    #[wasm_bindgen(constructor)]
    pub fn new(
        kind: &str,
        options_json: &str,
        weight: Option<Vec<f32>>,
        bias: Option<Vec<f32>>,
    ) -> Result<WasmLayer, JsError> {
        let inner = api::create_layer(kind, options_json, weight.as_deref(), bias.as_deref()).map_err(js_error)?;
        Ok(WasmLayer { inner })
    }

    #[wasm_bindgen(getter, js_name = inFeatures)]
    pub fn in_features(&self) -> u32 {
        self.inner.in_features() as u32
    }

    #[wasm_bindgen(getter, js_name = outFeatures)]
    pub fn out_features(&self) -> u32 {
        self.inner.out_features() as u32
    }

    #[wasm_bindgen(getter, js_name = numTrainableParameters)]
    pub fn num_trainable_parameters(&self) -> u32 {
        self.inner.num_trainable_parameters() as u32
    }

    #[wasm_bindgen(getter)]
    pub fn merged(&self) -> bool {
        self.inner.is_merged()
    }

    pub fn forward(&self, x: &[f32], rows: u32) -> Result<Vec<f32>, JsError> {
        self.inner.forward_rows(x, rows as usize).map_err(js_error)
    }

    pub fn gradients(&self, x: &[f32], rows: u32, grad_output: &[f32]) -> Result<JsValue, JsError> {
        let g = self.inner.gradients(x, rows as usize, grad_output).map_err(js_error)?;
        let obj = Object::new();
        set(&obj, "parameters", &named_all(g.parameters));
        set(&obj, "input", &named("x", g.input));
        Ok(obj.into())
    }

    #[wasm_bindgen(js_name = getParameters)]
    pub fn get_parameters(&self) -> Result<Array, JsError> {
        self.inner.parameters().map(named_all).map_err(js_error)
    }

    #[wasm_bindgen(js_name = setParameters)]
    pub fn set_parameters(&self, values: JsValue) -> Result<(), JsError> {
        self.inner.set_parameters(&read_named_all(&values)?).map_err(js_error)
    }

    #[wasm_bindgen(js_name = deltaWeight)]
    pub fn delta_weight(&self) -> Result<JsValue, JsError> {
        self.inner.delta_weight().map(|t| named("deltaWeight", t)).map_err(js_error)
    }

    pub fn weight(&self) -> Result<JsValue, JsError> {
        let w = self.inner.weight_data().map_err(js_error)?;
        Ok(w.map(|t| named("weight", t)).unwrap_or(JsValue::NULL))
    }

    pub fn merge(&mut self) -> Result<(), JsError> {
        self.inner.merge().map_err(js_error)
    }

    pub fn unmerge(&mut self) -> Result<(), JsError> {
        self.inner.unmerge().map_err(js_error)
    }

    #[wasm_bindgen(js_name = toLora)]
    pub fn to_lora(&self) -> Result<JsValue, JsError> {
        let (a, b, rank, alpha) = self.inner.to_lora().map_err(js_error)?;
        let obj = Object::new();
        set(&obj, "loraA", &named("lora_A", a));
        set(&obj, "loraB", &named("lora_B", b));
        set(&obj, "rank", &JsValue::from(rank as u32));
        set(&obj, "alpha", &JsValue::from(alpha));
        Ok(obj.into())
    }
}
