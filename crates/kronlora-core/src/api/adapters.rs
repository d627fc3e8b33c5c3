//! Several adapters on one model: `setActiveAdapters`, `deleteAdapter`, `mergeAdapters` /
//! `unmergeAdapters`, and the per-call `adapter` option of `classify`, `logits`, `embed`,
//! `generate` and `evaluate`.

use serde::Deserialize;
use serde_json::Value;

use super::fields::{invalid, json_error};
use crate::error::Result;
use crate::models::with_adapter_selection;
use crate::pretrained::PretrainedModel;

/// `setActiveAdapters(adapters, { weights? })` as `{ adapters: [names], weights?: [numbers] }`:
/// exactly these adapters active, each update scaled by its weight (default 1); `[]` leaves the
/// base model alone.
pub fn set_active_adapters(model: &mut PretrainedModel, json: &str) -> Result<()> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        adapters: Option<Value>,
        weights: Option<Value>,
    }
    let raw: Raw = serde_json::from_str(json).map_err(|e| json_error("setActiveAdapters arguments", e))?;
    let names = names("adapters", raw.adapters.as_ref())?
        .ok_or_else(|| invalid("setActiveAdapters needs the adapter names, e.g. ['a', 'b'] ([] for none)".into()))?;
    let weights = match raw.weights.filter(|v| !v.is_null()) {
        None => vec![1.0; names.len()],
        Some(Value::Array(ws)) if ws.len() == names.len() => ws
            .iter()
            .map(|w| {
                w.as_f64()
                    .filter(|w| w.is_finite())
                    .ok_or_else(|| invalid(format!("option `weights`: {w} is not a finite number")))
            })
            .collect::<Result<_>>()?,
        Some(v) => {
            return Err(invalid(format!("option `weights` must be {} numbers, one per adapter, got {v}", names.len())))
        }
    };
    model.set_active_adapters(&names.into_iter().zip(weights).collect::<Vec<_>>())
}

/// Adapter names: one string or an array of strings.
fn names(field: &str, value: Option<&Value>) -> Result<Option<Vec<String>>> {
    let wrong = |v: &Value| invalid(format!("option `{field}` must be an adapter name or an array of names, got {v}"));
    match value.filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or_else(|| wrong(i)))
            .collect::<Result<_>>()
            .map(Some),
        Some(v) => Err(wrong(v)),
    }
}

/// The `adapter` field of a call's options JSON (`"name"`, `["a", "b"]`, or `[]` for the base
/// model; weight 1 each), if present.
pub(crate) fn call_adapter(options_json: &str) -> Result<Option<Vec<(String, f64)>>> {
    let v: Value = serde_json::from_str(options_json).map_err(|e| json_error("options", e))?;
    Ok(names("adapter", v.get("adapter"))?.map(|n| n.into_iter().map(|name| (name, 1.0)).collect()))
}

/// Run `f` with the call's adapters (`call_adapter`), or the model's active ones.
pub(crate) fn with_call_adapter<T>(
    model: &PretrainedModel,
    options_json: &str,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    match call_adapter(options_json)? {
        None => f(),
        Some(choice) => with_adapter_selection(Some(model.selection_for_call(&choice)?), f),
    }
}

/// `{ adapter? }`: the options of `classify`, `logits` and `embed`.
pub(crate) fn check_inference_options(json: &str) -> Result<()> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        #[allow(dead_code)]
        adapter: Option<Value>,
    }
    serde_json::from_str::<Raw>(json).map_err(|e| json_error("options", e))?;
    Ok(())
}

/// Remove adapter `name` from the model.
pub fn delete_adapter(model: &mut PretrainedModel, name: &str) -> Result<()> {
    model.delete_adapter(name)
}

/// Fold the active adapters into the base weights; how many projections changed.
pub fn merge_adapters(model: &mut PretrainedModel) -> Result<usize> {
    model.merge_adapters()
}

/// Restore the base weights exactly; how many projections were restored.
pub fn unmerge_adapters(model: &mut PretrainedModel) -> Result<usize> {
    model.unmerge_adapters()
}
