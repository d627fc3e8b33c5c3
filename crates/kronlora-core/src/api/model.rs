//! `loadModel` and the model's methods: options in, JSON out.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::adapter::adapter_plan;
use super::adapters::{check_inference_options, with_call_adapter};
use super::device::device;
use super::fields::{bounded_int, invalid, json_error, positive_int, seed};
use crate::error::{Error, Result};
use crate::io::ModelSource;
use crate::io::Storage;
use crate::limits::MAX_NUM_LABELS;
use crate::models::Task;
use crate::pretrained::{ExportFormat, GenerateOptions, ModelOptions, PretrainedModel};

/// A result as the JSON the bindings hand to JavaScript.
pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::InvalidState(format!("cannot serialise a result: {e}")))
}

/// A task name of `loadModel` (`sequence-classification`, `causal-lm`, `embedding`).
pub(crate) fn task(value: Option<&Value>) -> Result<Option<Task>> {
    match value.filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(Value::String(s)) => Task::from_name(s).map(Some).ok_or_else(|| {
            invalid(format!(
                "option `task` must be \"sequence-classification\", \"causal-lm\" or \"embedding\", got \"{s}\""
            ))
        }),
        Some(v) => Err(invalid(format!("option `task` must be a string, got {v}"))),
    }
}

/// `{ task?, numLabels?, seed?, device?, quantized? }`; `task` defaults to the model family's natural one.
pub fn model_options(json: &str) -> Result<ModelOptions> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Raw {
        task: Option<Value>,
        num_labels: Option<Value>,
        seed: Option<Value>,
        device: Option<Value>,
        quantized: Option<Value>,
    }
    let raw: Raw = serde_json::from_str(json).map_err(|e| json_error("model options", e))?;
    let task = task(raw.task.as_ref())?;
    let num_labels = bounded_int("numLabels", raw.num_labels.as_ref(), MAX_NUM_LABELS)?;
    if num_labels.is_some() && task != Some(Task::SequenceClassification) {
        return Err(invalid("option `numLabels` applies to task \"sequence-classification\" only".into()));
    }
    Ok(ModelOptions {
        task,
        num_labels: num_labels.unwrap_or(2),
        seed: seed("seed", raw.seed.as_ref())?,
        device: device(raw.device.as_ref())?,
        quantized: match raw.quantized.filter(|v| !v.is_null()) {
            None => None,
            Some(Value::Bool(b)) => Some(b),
            Some(v) => return Err(invalid(format!("option `quantized` must be true or false, got {v}"))),
        },
    })
}

/// Load a model directory / `.gguf` path or file bytes with `loadModel`'s JSON options.
pub fn load_model(source: ModelSource, options_json: &str) -> Result<PretrainedModel> {
    PretrainedModel::load(source, &model_options(options_json)?)
}

/// JSON `{ architecture, family, task, device, report, modules, labels }`.
pub fn describe_json(model: &PretrainedModel) -> Result<String> {
    to_json(&model.describe())
}

/// Add adapter `name` from `addAdapter`'s JSON options; returns how many projections got one.
pub fn add_adapter(model: &mut PretrainedModel, name: &str, options_json: &str) -> Result<usize> {
    model.add_adapter(name, &adapter_plan(options_json)?)
}

/// `classify(texts, { adapter? })` as JSON `[{ label, score, scores }]`.
pub fn classify_json(model: &PretrainedModel, texts: &[String], options_json: &str) -> Result<String> {
    check_inference_options(options_json)?;
    with_call_adapter(model, options_json, || to_json(&model.classify(texts)?))
}

/// `generate`'s options `{ maxTokens? (64), temperature? (0: greedy), seed? (0), adapter? }`.
pub fn generate_options(json: &str) -> Result<GenerateOptions> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Raw {
        max_tokens: Option<Value>,
        temperature: Option<Value>,
        seed: Option<Value>,
        /// Read by `generate_json` (`call_adapter`).
        #[allow(dead_code)]
        adapter: Option<Value>,
    }
    let raw: Raw = serde_json::from_str(json).map_err(|e| json_error("generate options", e))?;
    let temperature = match raw.temperature.as_ref().filter(|v| !v.is_null()) {
        None => 0.0,
        Some(v) => match v.as_f64() {
            Some(t) if t.is_finite() && t >= 0.0 => t,
            _ => return Err(invalid(format!("option `temperature` must be a finite number ≥ 0, got {v}"))),
        },
    };
    Ok(GenerateOptions {
        max_tokens: positive_int("maxTokens", raw.max_tokens.as_ref())?.unwrap_or(64),
        temperature,
        seed: seed("seed", raw.seed.as_ref())?,
    })
}

/// `generate` as JSON `{ text, promptTokens, generatedTokens, stoppedAtEos }`.
pub fn generate_json(model: &PretrainedModel, prompt: &str, options_json: &str) -> Result<String> {
    let options = generate_options(options_json)?;
    with_call_adapter(model, options_json, || to_json(&model.generate(prompt, &options)?))
}

/// `exportAdapter(path, { format, name? })`: adapter `name` (default: the only one) written as
/// `format` ("peft-lora": a directory, "gguf-lora": a file).
pub fn export_adapter(model: &PretrainedModel, storage: &dyn Storage, path: &str, options_json: &str) -> Result<()> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        format: Option<Value>,
        name: Option<Value>,
    }
    let raw: Raw = serde_json::from_str(options_json).map_err(|e| json_error("export options", e))?;
    let formats = || ExportFormat::NAMES.map(|n| format!("\"{n}\"")).join(" or ");
    let format = match raw.format.filter(|v| !v.is_null()) {
        None => return Err(invalid(format!("option `format` is required: {}", formats()))),
        Some(Value::String(s)) => ExportFormat::from_name(&s)
            .ok_or_else(|| invalid(format!("option `format` must be {}, got \"{s}\"", formats())))?,
        Some(v) => return Err(invalid(format!("option `format` must be a string ({}), got {v}", formats()))),
    };
    let name = match raw.name.filter(|v| !v.is_null()) {
        None => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        Some(v) => return Err(invalid(format!("option `name` must be an adapter's name, got {v}"))),
    };
    model.export_adapter(storage, path, name.as_deref(), format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_and_generate_options_parse_with_defaults_and_refuse_mistakes() {
        let o = model_options("{}").unwrap();
        assert_eq!((o.task, o.num_labels, o.seed), (None, 2, 0));
        assert!(o.device.is_cpu());
        let o = model_options(r#"{"task":"sequence-classification","numLabels":3,"device":"cpu"}"#).unwrap();
        assert_eq!((o.task, o.num_labels), (Some(Task::SequenceClassification), 3));
        for (json, want) in [
            (r#"{"task":"chat"}"#, "option `task` must be"),
            (r#"{"numLabels":3}"#, "applies to task \"sequence-classification\" only"),
            (r#"{"device":"tpu"}"#, "option `device` must be"),
            (r#"{"dtype":"f16"}"#, "unknown field `dtype`"),
        ] {
            let e = model_options(json).unwrap_err();
            assert_eq!(e.code(), "ERR_INVALID_OPTION", "{json}");
            assert!(e.to_string().contains(want), "{json}: {e}");
        }
        let g = generate_options("{}").unwrap();
        assert_eq!((g.max_tokens, g.temperature, g.seed), (64, 0.0, 0));
        for (json, want) in [
            (r#"{"maxTokens":0}"#, "`maxTokens` must be a positive integer"),
            (r#"{"maxTokens":2.5}"#, "`maxTokens` must be a positive integer"),
            (r#"{"temperature":-1}"#, "`temperature` must be a finite number"),
            (r#"{"temperature":"NaN"}"#, "`temperature` must be a finite number"),
            (r#"{"seed":-1}"#, "`seed` must be a non-negative safe integer"),
            (r#"{"topK":5}"#, "unknown field `topK`"),
        ] {
            let e = generate_options(json).unwrap_err();
            assert_eq!(e.code(), "ERR_INVALID_OPTION", "{json}");
            assert!(e.to_string().contains(want), "{json}: {e}");
        }
    }
}
