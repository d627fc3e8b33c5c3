//! WebAssembly binding of kronlora-core, the same shape as the Node binding: argument
//! conversion only. Errors carry the same `[CODE] message` text as the native ones.

use js_sys::{Array, Float32Array, Object, Reflect};
use kronlora_core::{AdaptedLinear, AdapterKind, LayerOptions, TensorData};
use wasm_bindgen::prelude::*;

fn js_error(e: kronlora_core::Error) -> JsError {
    JsError::new(&format!("[{}] {}", e.code(), e))
}

fn set(obj: &Object, key: &str, value: &JsValue) {
    // Setting a property on a fresh plain object cannot fail.
    let _ = Reflect::set(obj, &JsValue::from_str(key), value);
}

/// `{ name, shape, data }`, the same object the Node binding returns.
fn named(name: &str, t: TensorData) -> JsValue {
    let obj = Object::new();
    set(&obj, "name", &JsValue::from_str(name));
    let shape: Array = t.shape.iter().map(|&d| JsValue::from(d as u32)).collect();
    set(&obj, "shape", &shape);
    set(&obj, "data", &Float32Array::from(t.data.as_slice()));
    obj.into()
}

fn named_all(list: Vec<(String, TensorData)>) -> Array {
    list.into_iter().map(|(n, t)| named(&n, t)).collect()
}

fn field(obj: &JsValue, key: &str) -> Result<JsValue, JsError> {
    Reflect::get(obj, &JsValue::from_str(key)).map_err(|_| JsError::new(&format!("[ERR_INVALID_OPTION] missing `{key}`")))
}

/// Read `[{ name, shape, data }]` back.
fn read_named_all(values: &JsValue) -> Result<Vec<(String, TensorData)>, JsError> {
    let bad = |what: &str| JsError::new(&format!("[ERR_INVALID_OPTION] setParameters: {what}"));
    if !Array::is_array(values) {
        return Err(bad("expected an array of { name, shape, data }"));
    }
    Array::from(values)
        .iter()
        .map(|item| {
            let name = field(&item, "name")?.as_string().ok_or_else(|| bad("`name` must be a string"))?;
            let shape = field(&item, "shape")?;
            if !Array::is_array(&shape) {
                return Err(bad("`shape` must be an array of sizes"));
            }
            let shape = Array::from(&shape)
                .iter()
                .map(|d| d.as_f64().filter(|d| *d >= 0.0 && d.fract() == 0.0).map(|d| d as usize))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("`shape` must hold non-negative integers"))?;
            let data = field(&item, "data")?.dyn_into::<Float32Array>().map_err(|_| bad("`data` must be a Float32Array"))?;
            Ok((name, TensorData { shape, data: data.to_vec() }))
        })
        .collect()
}

fn parse_kind(kind: &str) -> Result<AdapterKind, JsError> {
    match kind {
        "kron-lora" => Ok(AdapterKind::KronLora),
        "lora" => Ok(AdapterKind::Lora),
        other => Err(js_error(kronlora_core::Error::InvalidOption(format!(
            "unknown adapter type `{other}`; use \"kron-lora\" or \"lora\""
        )))),
    }
}

/// An adapted linear layer; the TS classes `KronLoraLinear` / `LoraLinear` wrap it.
#[wasm_bindgen]
pub struct WasmLayer {
    inner: AdaptedLinear,
}

#[wasm_bindgen]
impl WasmLayer {
    #[wasm_bindgen(constructor)]
    pub fn new(kind: &str, options_json: &str, weight: Option<Vec<f32>>, bias: Option<Vec<f32>>) -> Result<WasmLayer, JsError> {
        let options = LayerOptions::from_json(parse_kind(kind)?, options_json).map_err(js_error)?;
        let inner = AdaptedLinear::new(&options, weight.as_deref(), bias.as_deref(), &kronlora_core::default_device())
            .map_err(js_error)?;
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
        let w = self.inner.weight().map_err(js_error)?;
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

/// `factorization(dim, factor)` as `[m, n]`.
#[wasm_bindgen]
pub fn factorization(dim: f64, factor: f64) -> Result<Vec<u32>, JsError> {
    let (m, n) = kronlora_core::factorization_checked(dim, factor).map_err(js_error)?;
    Ok(vec![m as u32, n as u32])
}
