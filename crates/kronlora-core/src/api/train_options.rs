//! `train()`'s and `evaluate()`'s options: parsed, checked and defaulted once, for every backend.

use serde::Deserialize;
use serde_json::Value;

use super::fields::{bounded_int, flag, invalid, json_error, number, positive_int, seed};
use crate::error::Result;
use crate::train::{DataSpec, EarlyStopping, EvalOptions, Metric, ScheduleKind, TrainOptions, TrainTask};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Raw {
    task: Option<Value>,
    data: Option<Value>,
    validation_data: Option<Value>,
    validation_split: Option<Value>,
    epochs: Option<Value>,
    max_steps: Option<Value>,
    batch_size: Option<Value>,
    eval_batch_size: Option<Value>,
    learning_rate: Option<Value>,
    warmup_ratio: Option<Value>,
    warmup_steps: Option<Value>,
    schedule: Option<Value>,
    weight_decay: Option<Value>,
    max_grad_norm: Option<Value>,
    gradient_accumulation: Option<Value>,
    gradient_checkpointing: Option<Value>,
    max_length: Option<Value>,
    seed: Option<Value>,
    eval_every: Option<Value>,
    metric: Option<Value>,
    early_stopping: Option<Value>,
    load_best_at_end: Option<Value>,
    output_dir: Option<Value>,
    checkpoint_every: Option<Value>,
    keep_checkpoints: Option<Value>,
    resume_from: Option<Value>,
    log_every: Option<Value>,
}

/// `task`: absent (the model's own), or one of the three task names.
pub(crate) fn parse_task(value: Option<&Value>) -> Result<Option<TrainTask>> {
    match value.filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(Value::String(s)) => TrainTask::from_name(s).map(Some).ok_or_else(|| {
            invalid(format!(
                "option `task` must be \"classification\", \"causal-lm\" or \"multiple-choice\", got \"{s}\""
            ))
        }),
        Some(v) => Err(invalid(format!("option `task` must be a string, got {v}"))),
    }
}

/// A data source from its JSON form; `field` names it in errors.
pub fn data_spec(field: &str, value: &Value) -> Result<DataSpec> {
    match value {
        Value::String(s) if !s.is_empty() => Ok(DataSpec::Path(s.clone())),
        Value::Array(_) => Ok(DataSpec::Records(value.clone())),
        Value::Object(o)
            if o.len() == 2
                && o.get("name").is_some_and(Value::is_string)
                && o.get("text").is_some_and(Value::is_string) =>
        {
            Ok(DataSpec::Text {
                name: o["name"].as_str().unwrap_or_default().to_string(),
                text: o["text"].as_str().unwrap_or_default().to_string(),
            })
        }
        v => Err(invalid(format!(
            "option `{field}` must be a path to a .jsonl file or an array of records, got {}",
            short(v)
        ))),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

fn fraction(field: &str, value: Option<&Value>, default: f64, allow_one: bool) -> Result<f64> {
    let Some(v) = value.filter(|v| !v.is_null()) else { return Ok(default) };
    let x = number(field, v)?;
    if !(x.is_finite() && x >= 0.0 && (x < 1.0 || (allow_one && x == 1.0))) {
        return Err(invalid(format!(
            "option `{field}` must be a number in [0, 1{}, got {v}",
            if allow_one { "]" } else { ")" }
        )));
    }
    Ok(x)
}

fn non_negative(field: &str, value: Option<&Value>, default: f64) -> Result<f64> {
    let Some(v) = value.filter(|v| !v.is_null()) else { return Ok(default) };
    let x = number(field, v)?;
    if !(x.is_finite() && x >= 0.0) {
        return Err(invalid(format!("option `{field}` must be a finite number ≥ 0, got {v}")));
    }
    Ok(x)
}

fn text(field: &str, value: Option<&Value>) -> Result<Option<String>> {
    match value.filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(v) => Err(invalid(format!("option `{field}` must be a non-empty string, got {v}"))),
    }
}

const MAX_BATCH: usize = 1 << 16;

/// `train()`'s options: `{ data, validationData?, validationSplit?, epochs?, … }`.
pub fn train_options(json: &str) -> Result<TrainOptions> {
    // Records given in memory arrive inside the options; JSON.stringify writes a lone
    // surrogate in a JavaScript string as a `\ud800` escape that serde cannot hold.
    let raw: Raw = serde_json::from_str(&crate::data::replace_lone_surrogates(json))
        .map_err(|e| json_error("training options", e))?;
    let task = parse_task(raw.task.as_ref())?;
    let data = match raw.data.as_ref().filter(|v| !v.is_null()) {
        Some(v) => data_spec("data", v)?,
        None => {
            return Err(invalid("option `data` is required: a path to a .jsonl file or an array of records".into()))
        }
    };
    let validation_data =
        raw.validation_data.as_ref().filter(|v| !v.is_null()).map(|v| data_spec("validationData", v)).transpose()?;
    let schedule = match raw.schedule.as_ref().filter(|v| !v.is_null()) {
        None => ScheduleKind::Linear,
        Some(Value::String(s)) if s == "linear" => ScheduleKind::Linear,
        Some(Value::String(s)) if s == "cosine" => ScheduleKind::Cosine,
        Some(Value::String(s)) if s == "constant" => ScheduleKind::Constant,
        Some(v) => {
            return Err(invalid(format!("option `schedule` must be \"linear\", \"cosine\" or \"constant\", got {v}")))
        }
    };
    let metric = match raw.metric.as_ref().filter(|v| !v.is_null()) {
        None => Metric::Loss,
        Some(Value::String(s)) if s == "loss" => Metric::Loss,
        Some(Value::String(s)) if s == "accuracy" => Metric::Accuracy,
        Some(Value::String(s)) if s == "perplexity" => Metric::Perplexity,
        Some(v) => {
            return Err(invalid(format!("option `metric` must be \"loss\", \"accuracy\" or \"perplexity\", got {v}")))
        }
    };
    let early_stopping = match raw.early_stopping.as_ref().filter(|v| !v.is_null() && **v != Value::Bool(false)) {
        None => None,
        Some(Value::Bool(true)) => Some(EarlyStopping { patience: 3, min_delta: 0.0 }),
        Some(Value::Object(o)) => {
            if let Some(k) = o.keys().find(|k| !["patience", "minDelta"].contains(&k.as_str())) {
                return Err(invalid(format!("option `earlyStopping.{k}` is unknown; use patience and minDelta")));
            }
            Some(EarlyStopping {
                patience: positive_int("earlyStopping.patience", o.get("patience"))?.unwrap_or(3),
                min_delta: non_negative("earlyStopping.minDelta", o.get("minDelta"), 0.0)?,
            })
        }
        Some(v) => {
            return Err(invalid(format!("option `earlyStopping` must be true or {{ patience, minDelta }}, got {v}")))
        }
    };
    let learning_rate = match raw.learning_rate.as_ref().filter(|v| !v.is_null()) {
        None => 1e-3,
        Some(v) => {
            let x = number("learningRate", v)?;
            if !(x.is_finite() && x > 0.0) {
                return Err(invalid(format!("option `learningRate` must be a positive number, got {v}")));
            }
            x
        }
    };
    let max_grad_norm = match raw.max_grad_norm.as_ref() {
        None => Some(1.0),
        Some(Value::Null) => None,
        Some(v) => {
            let x = number("maxGradNorm", v)?;
            if !(x.is_finite() && x > 0.0) {
                return Err(invalid(format!(
                    "option `maxGradNorm` must be a positive number or null (no clipping), got {v}"
                )));
            }
            Some(x)
        }
    };
    let batch_size = bounded_int("batchSize", raw.batch_size.as_ref(), MAX_BATCH)?.unwrap_or(16);
    let validation_split = fraction(
        "validationSplit",
        raw.validation_split.as_ref(),
        if validation_data.is_some() { 0.0 } else { 0.1 },
        false,
    )?;
    if validation_data.is_some() && validation_split > 0.0 {
        return Err(invalid("give either `validationData` or `validationSplit`, not both".into()));
    }
    let load_best = match raw.load_best_at_end.as_ref() {
        None | Some(Value::Null) => None,
        Some(v) => Some(flag("loadBestAtEnd", Some(v))?),
    };
    Ok(TrainOptions {
        task,
        data,
        validation_data,
        validation_split,
        epochs: bounded_int("epochs", raw.epochs.as_ref(), 1 << 20)?.unwrap_or(1),
        max_steps: positive_int("maxSteps", raw.max_steps.as_ref())?.map(|x| x as u64),
        batch_size,
        eval_batch_size: bounded_int("evalBatchSize", raw.eval_batch_size.as_ref(), MAX_BATCH)?
            .unwrap_or(batch_size.max(16)),
        learning_rate,
        warmup_ratio: fraction("warmupRatio", raw.warmup_ratio.as_ref(), 0.06, false)?,
        warmup_steps: positive_int("warmupSteps", raw.warmup_steps.as_ref())?.map(|x| x as u64),
        schedule,
        weight_decay: non_negative("weightDecay", raw.weight_decay.as_ref(), 0.01)?,
        max_grad_norm,
        gradient_accumulation: bounded_int("gradientAccumulation", raw.gradient_accumulation.as_ref(), 1 << 16)?
            .unwrap_or(1),
        gradient_checkpointing: flag("gradientCheckpointing", raw.gradient_checkpointing.as_ref())?,
        max_length: bounded_int("maxLength", raw.max_length.as_ref(), 1 << 20)?,
        seed: seed("seed", raw.seed.as_ref())?,
        eval_every: positive_int("evalEvery", raw.eval_every.as_ref())?.map(|x| x as u64),
        metric,
        early_stopping,
        load_best_at_end: load_best,
        output_dir: text("outputDir", raw.output_dir.as_ref())?,
        checkpoint_every: positive_int("checkpointEvery", raw.checkpoint_every.as_ref())?.map(|x| x as u64),
        keep_checkpoints: bounded_int("keepCheckpoints", raw.keep_checkpoints.as_ref(), 1 << 16)?.unwrap_or(2),
        resume_from: text("resumeFrom", raw.resume_from.as_ref())?,
        log_every: positive_int("logEvery", raw.log_every.as_ref())?.unwrap_or(1) as u64,
    })
}

/// `evaluate()`'s options: `{ task?, batchSize?, maxLength?, adapter? }` (`adapter`: read by
/// `evaluate_json`).
pub fn eval_options(json: &str) -> Result<EvalOptions> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct RawEval {
        task: Option<Value>,
        batch_size: Option<Value>,
        max_length: Option<Value>,
        #[allow(dead_code)]
        adapter: Option<Value>,
    }
    let raw: RawEval = serde_json::from_str(json).map_err(|e| json_error("evaluation options", e))?;
    let task = parse_task(raw.task.as_ref())?;
    Ok(EvalOptions {
        task,
        batch_size: bounded_int("batchSize", raw.batch_size.as_ref(), MAX_BATCH)?.unwrap_or(16),
        max_length: bounded_int("maxLength", raw.max_length.as_ref(), 1 << 20)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let o = train_options(r#"{"data":"train.jsonl"}"#).unwrap();
        assert_eq!((o.epochs, o.batch_size, o.learning_rate, o.validation_split), (1, 16, 1e-3, 0.1));
        assert_eq!(o.data, DataSpec::Path("train.jsonl".into()));
        for (json, want) in [
            (r#"{}"#, "option `data` is required"),
            (r#"{"data":"a","epochs":0}"#, "`epochs` must be a positive integer"),
            (r#"{"data":"a","learningRate":-1}"#, "`learningRate` must be a positive number"),
            (r#"{"data":"a","lr":1}"#, "unknown"),
            (r#"{"data":"a","schedule":"step"}"#, "`schedule` must be"),
            (r#"{"data":"a","earlyStopping":{"patience":0}}"#, "earlyStopping.patience"),
            (r#"{"data":"a","validationData":"b","validationSplit":0.2}"#, "not both"),
            (r#"{"data":5}"#, "option `data` must be a path"),
        ] {
            let e = train_options(json).unwrap_err();
            assert_eq!(e.code(), "ERR_INVALID_OPTION");
            assert!(e.to_string().contains(want), "{json}: {e}");
        }
    }
}
