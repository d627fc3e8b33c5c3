//! The API both bindings call, and the only module that speaks JSON and the caller's names
//! (camelCase options, `"kron-lora"`, `KronLoraLinear`). It parses and validates every option
//! once, fills in defaults, picks the device, and hands typed settings to the rest of the core;
//! results and events go back as JSON. The Node (napi) and WASM bindings convert arguments and
//! call these functions and nothing else, so the two backends behave the same by construction.

mod adapter;
mod adapters;
mod device;
mod fields;
mod layer;
mod model;
mod train;
mod train_options;

pub use adapter::adapter_plan;
pub use adapters::{delete_adapter, merge_adapters, set_active_adapters, unmerge_adapters};
pub use device::{cuda_device_count, device, device_named};
pub use layer::{adapter_kind, class_name, create_layer, layer_options};
pub use model::{
    add_adapter, classify_json, describe_json, export_adapter, generate_json, generate_options, load_model,
    model_options,
};
pub use train::{evaluate_json, event_json, train_json, training_setup_json};
pub use train_options::{data_spec, eval_options, train_options};

pub use crate::error::{Error, Result};
#[cfg(not(target_arch = "wasm32"))]
pub use crate::io::FsStorage;
pub use crate::io::{EntryKind, ModelSource, Storage};
pub use crate::models::adapted_linear::AdaptedLinear;
pub use crate::pretrained::PretrainedModel;
pub use crate::tensor_data::TensorData;
pub use crate::train::{TrainEvent, TrainObserver};
pub use candle_core::Error as CandleError;

/// `factorization(dim, factor)` for callers holding JavaScript numbers: both must be integers.
pub fn factorization(dim: f64, factor: f64) -> crate::Result<(usize, usize)> {
    let limit = (1u64 << 40) as f64;
    if !(dim.is_finite() && dim >= 1.0 && dim.fract() == 0.0 && dim <= limit) {
        return Err(crate::Error::InvalidOption(format!("factorization: dim must be a positive integer, got {dim}")));
    }
    if !(factor.is_finite() && factor.fract() == 0.0 && factor.abs() <= limit) {
        return Err(crate::Error::InvalidOption(format!(
            "factorization: factor must be a positive integer or -1 (unlimited), got {factor}"
        )));
    }
    crate::factorization(dim as usize, factor as i64)
}

/// What the adapter saved at `dir` was trained for, to load its model before the adapter:
/// JSON `{ dir, task, numLabels, type, name }`. `dir` may be an adapter directory or the output
/// directory of a training run (its `adapter/`); `dir` in the result is the adapter directory.
pub fn saved_adapter_json(storage: &dyn Storage, dir: &str) -> crate::Result<String> {
    use crate::io::peft::CONFIG_FILE as CONFIG;
    let adapter_dir = [dir.to_string(), crate::io::join(dir, "adapter")]
        .into_iter()
        .find(|d| storage.exists(&crate::io::join(d, CONFIG)))
        .ok_or_else(|| {
            crate::Error::InvalidOption(if storage.exists(dir) {
                format!("{dir} holds no {CONFIG} (nor adapter/{CONFIG}); give an adapter directory or a training run's output directory")
            } else {
                format!("{dir}: no such file or directory")
            })
        })?;
    let path = crate::io::join(&adapter_dir, CONFIG);
    let summary = crate::io::peft::adapter_config_summary_json(&storage.read(&path)?, &path)?;
    let mut value: serde_json::Value =
        serde_json::from_str(&summary).map_err(|e| crate::Error::InvalidState(format!("adapter summary: {e}")))?;
    value["dir"] = serde_json::Value::String(adapter_dir);
    Ok(value.to_string())
}

/// Write adapter `name` (default: the only one) and the head to `dir` in PEFT's layout.
pub fn save_adapter(
    model: &PretrainedModel,
    storage: &dyn Storage,
    dir: &str,
    name: Option<&str>,
) -> crate::Result<()> {
    model.save_adapter(storage, dir, name)
}

/// Add the adapter saved in `dir` with options `{ name?, replace? }` (`name`: default the saved
/// one; `replace`: swap the weights of the adapter already named so); returns the module count.
pub fn load_adapter(
    model: &mut PretrainedModel,
    storage: &dyn Storage,
    dir: &str,
    options_json: &str,
) -> crate::Result<usize> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        name: Option<serde_json::Value>,
        replace: Option<serde_json::Value>,
    }
    let raw: Raw = serde_json::from_str(options_json).map_err(|e| fields::json_error("loadAdapter options", e))?;
    let name = match raw.name.filter(|v| !v.is_null()) {
        None => None,
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
        Some(v) => return Err(fields::invalid(format!("option `name` must be an adapter name, got {v}"))),
    };
    let replace = match raw.replace.filter(|v| !v.is_null()) {
        None => false,
        Some(serde_json::Value::Bool(b)) => b,
        Some(v) => return Err(fields::invalid(format!("option `replace` must be true or false, got {v}"))),
    };
    model.load_adapter_with(storage, dir, name.as_deref(), replace)
}

/// `saveMerged(path)`: the model with its active adapters merged, as a GGUF file (GGUF base) or
/// a Hugging Face directory.
pub fn save_merged(model: &PretrainedModel, storage: &dyn Storage, path: &str) -> crate::Result<()> {
    model.save_merged(storage, path)
}

/// Sentence embeddings: `texts.len() × width` row-major, and `width`; options `{ adapter? }`.
pub fn embed(model: &PretrainedModel, texts: &[String], options_json: &str) -> crate::Result<(Vec<f32>, usize)> {
    adapters::check_inference_options(options_json)?;
    adapters::with_call_adapter(model, options_json, || model.embed(texts))
}

/// Class logits (classification) or next-token logits (causal LM), row-major, and the width;
/// options `{ adapter? }`.
pub fn logits(model: &PretrainedModel, texts: &[String], options_json: &str) -> crate::Result<(Vec<f32>, usize)> {
    adapters::check_inference_options(options_json)?;
    adapters::with_call_adapter(model, options_json, || model.logits(texts))
}
