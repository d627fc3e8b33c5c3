//! Node.js binding of kronlora-core: argument conversion around `kronlora_core::api`, and
//! nothing else. Every entry point catches panics so a bug surfaces as a JS exception instead
//! of taking Node down.

mod layer;
mod model;
mod task;
mod training;

use kronlora_core::api;
use napi::bindgen_prelude::*;
use napi_derive::napi;

/// Core errors become JS errors whose message starts with `[CODE]`; the TS package turns that
/// prefix into `error.code`, the same way for the WASM backend.
pub(crate) fn js_error(e: api::Error) -> napi::Error {
    napi::Error::new(Status::GenericFailure, e.to_js_message())
}

/// `factorization(dim, factor)` as `[m, n]`.
#[napi(catch_unwind)]
pub fn factorization(dim: f64, factor: f64) -> Result<Vec<u32>> {
    let (m, n) = api::factorization(dim, factor).map_err(js_error)?;
    Ok(vec![m as u32, n as u32])
}

/// How many CUDA GPUs this addon can use (0 for the CPU build, or without a driver or GPU).
#[napi(catch_unwind)]
pub fn cuda_device_count() -> u32 {
    api::cuda_device_count() as u32
}

/// `{ dir, task, numLabels, type, name }` of the adapter saved at `dir` (or in `dir/adapter`).
#[napi(catch_unwind)]
pub fn saved_adapter(dir: String) -> Result<String> {
    api::saved_adapter_json(&api::FsStorage, &dir).map_err(js_error)
}

/// `{ task, modelOptions }`: what to load the model at `model_path` with to train it with
/// `options_json` (`{ task?, data }`).
#[napi(catch_unwind)]
pub fn training_setup(model_path: String, options_json: String) -> Result<String> {
    api::training_setup_json(&api::FsStorage, &model_path, &options_json).map_err(js_error)
}
