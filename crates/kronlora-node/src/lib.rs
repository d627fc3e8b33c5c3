//! Node.js binding of kronlora-core: argument conversion only. Every entry point catches
//! panics so a bug surfaces as a JS exception instead of taking Node down.

mod layer;
mod model;
mod task;
mod training;

use napi::bindgen_prelude::*;
use napi_derive::napi;

/// Core errors become JS errors whose message starts with `[CODE]`; the TS package turns that
/// prefix into `error.code`, the same way for the WASM backend.
pub(crate) fn js_error(e: kronlora_core::Error) -> napi::Error {
    napi::Error::new(Status::GenericFailure, e.to_js_message())
}

/// `factorization(dim, factor)` as `[m, n]`.
#[napi(catch_unwind)]
pub fn factorization(dim: f64, factor: f64) -> Result<Vec<u32>> {
    let (m, n) = kronlora_core::factorization_checked(dim, factor).map_err(js_error)?;
    Ok(vec![m as u32, n as u32])
}

/// `{ records, labels, numLabels }` of classification data given as file contents.
#[napi(catch_unwind)]
pub fn label_summary(text: String, name: String) -> Result<String> {
    kronlora_core::train::label_summary_json(&text, &name).map_err(js_error)
}

/// `{ task, numLabels, type, name }` of an `adapter_config.json` given as its text.
#[napi(catch_unwind)]
pub fn adapter_config_summary(text: String, path: String) -> Result<String> {
    kronlora_core::pretrained::adapter_config_summary_json(text.as_bytes(), &path).map_err(js_error)
}
