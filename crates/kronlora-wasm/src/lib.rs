//! WebAssembly binding of kronlora-core, the same shape as the Node binding: argument
//! conversion around `kronlora_core::api`, and nothing else. Errors carry the same
//! `[CODE] message` text as the native ones.

mod layer;
mod model;
mod storage;

use js_sys::{Array, Float32Array, Object, Reflect};
use kronlora_core::api::{self, TensorData};
use wasm_bindgen::prelude::*;

pub(crate) fn js_error(e: api::Error) -> JsError {
    JsError::new(&e.to_js_message())
}

pub(crate) fn set(obj: &Object, key: &str, value: &JsValue) {
    // Setting a property on a fresh plain object cannot fail.
    let _ = Reflect::set(obj, &JsValue::from_str(key), value);
}

/// `{ name, shape, data }`, the same object the Node binding returns.
pub(crate) fn named(name: &str, t: TensorData) -> JsValue {
    let obj = Object::new();
    set(&obj, "name", &JsValue::from_str(name));
    let shape: Array = t.shape.iter().map(|&d| JsValue::from(d as u32)).collect();
    set(&obj, "shape", &shape);
    set(&obj, "data", &Float32Array::from(t.data.as_slice()));
    obj.into()
}

pub(crate) fn named_all(list: Vec<(String, TensorData)>) -> Array {
    list.into_iter().map(|(n, t)| named(&n, t)).collect()
}

fn field(obj: &JsValue, key: &str) -> Result<JsValue, JsError> {
    Reflect::get(obj, &JsValue::from_str(key))
        .map_err(|_| JsError::new(&format!("[ERR_INVALID_OPTION] missing `{key}`")))
}

/// Read `[{ name, shape, data }]` back.
pub(crate) fn read_named_all(values: &JsValue) -> Result<Vec<(String, TensorData)>, JsError> {
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
            let data =
                field(&item, "data")?.dyn_into::<Float32Array>().map_err(|_| bad("`data` must be a Float32Array"))?;
            Ok((name, TensorData { shape, data: data.to_vec() }))
        })
        .collect()
}

/// `factorization(dim, factor)` as `[m, n]`.
#[wasm_bindgen]
pub fn factorization(dim: f64, factor: f64) -> Result<Vec<u32>, JsError> {
    let (m, n) = api::factorization(dim, factor).map_err(js_error)?;
    Ok(vec![m as u32, n as u32])
}

/// How many CUDA GPUs this build can use: always 0 (the WASM core runs on the CPU); the native
/// binding's counterpart counts them.
#[wasm_bindgen(js_name = cudaDeviceCount)]
pub fn cuda_device_count() -> u32 {
    api::cuda_device_count() as u32
}

/// `{ dir, task, numLabels, type, name }` of the adapter saved at `dir` (or in `dir/adapter`);
/// `storage` reads the files (see `JsStorage`).
#[wasm_bindgen(js_name = savedAdapter)]
pub fn saved_adapter(dir: &str, storage: JsValue) -> Result<String, JsError> {
    api::saved_adapter_json(&storage::JsStorage::new(storage), dir).map_err(js_error)
}

/// `{ task, modelOptions }`: what to load the model at `model_path` with to train it with
/// `options_json` (`{ task?, data }`); `storage` reads the files (see `JsStorage`).
#[wasm_bindgen(js_name = trainingSetup)]
pub fn training_setup(model_path: &str, options_json: &str, storage: JsValue) -> Result<String, JsError> {
    api::training_setup_json(&storage::JsStorage::new(storage), model_path, options_json).map_err(js_error)
}
