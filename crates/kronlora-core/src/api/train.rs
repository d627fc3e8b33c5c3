//! `model.train()`, `model.evaluate()`, their events and results, and what the CLI asks before
//! loading a model to train it (`training_setup_json`).

use serde_json::{json, Value};

use super::fields::{invalid, json_error};
use super::model::to_json;
use super::train_options::{data_spec, eval_options, parse_task, train_options};
use crate::error::{Error, Result};
use crate::io::{join, read_text, EntryKind, Storage};
use crate::models::{family_of_model_type, model_type_of, Family, Task};
use crate::pretrained::PretrainedModel;
use crate::train::{TrainEvent, TrainObserver, TrainTask};

/// Train `model` with `train()`'s JSON options, reading data and writing checkpoints through
/// `storage`; events go to `observer`. The result as JSON.
pub fn train_json(
    model: &mut PretrainedModel,
    options_json: &str,
    storage: &dyn Storage,
    observer: &mut dyn TrainObserver,
) -> Result<String> {
    to_json(&crate::train::train(model, &train_options(options_json)?, storage, observer)?)
}

/// `evaluate(data, options)` with `data_json` a path or records; the metrics as JSON.
pub fn evaluate_json(
    model: &PretrainedModel,
    data_json: &str,
    options_json: &str,
    storage: &dyn Storage,
) -> Result<String> {
    let options = eval_options(options_json)?;
    let data: Value =
        crate::data::parse_json(data_json).map_err(|e| Error::InvalidOption(format!("invalid data: {e}")))?;
    let spec = data_spec("data", &data)?;
    super::adapters::with_call_adapter(model, options_json, || {
        to_json(&crate::train::evaluate_model(model, &spec, &options, storage)?)
    })
}

/// A training event as the JSON both bindings hand to JavaScript (`type` is the tag).
pub fn event_json(event: &TrainEvent) -> String {
    serde_json::to_string(event)
        .unwrap_or_else(|e| format!("{{\"type\":\"error\",\"message\":\"cannot serialise an event: {e}\"}}"))
}

/// The family of the model at `path` (a directory with `config.json`, or a `.gguf` file), from
/// its config alone.
fn family_at(storage: &dyn Storage, path: &str) -> Result<Family> {
    match storage.kind(path)? {
        EntryKind::File if path.to_ascii_lowercase().ends_with(".gguf") => Ok(Family::Decoder),
        EntryKind::Dir => {
            let config = join(path, "config.json");
            if !storage.exists(&config) {
                return Err(Error::InvalidModel(format!("{path}: no config.json; is this a model directory?")));
            }
            family_of_model_type(&model_type_of(&storage.read(&config)?, &config)?, &config)
        }
        _ => Err(Error::InvalidModel(format!(
            "{path}: not a model; give a Hugging Face model directory or a .gguf file"
        ))),
    }
}

/// What a caller needs before loading a model to train it (the CLI's `train`): for options
/// `{ task?, data }`, the training task (given, or the family's: classification for encoders,
/// causal-lm for decoders) and `loadModel`'s options for it (`numLabels` from the data's
/// labels for classification). JSON `{ task, modelOptions: { task, numLabels? } }`.
pub fn training_setup_json(storage: &dyn Storage, model_path: &str, options_json: &str) -> Result<String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        task: Option<Value>,
        data: Option<Value>,
    }
    let raw: Raw = serde_json::from_str(options_json).map_err(|e| json_error("training setup", e))?;
    let family = family_at(storage, model_path)?;
    let task = match parse_task(raw.task.as_ref())? {
        Some(task) => task,
        None if family == Family::Encoder => TrainTask::Classification,
        None => TrainTask::CausalLm,
    };
    let model_task = match task {
        TrainTask::Classification => Task::SequenceClassification,
        TrainTask::CausalLm | TrainTask::MultipleChoice => Task::CausalLm,
    };
    if !family.tasks().contains(&model_task) {
        return Err(Error::InvalidOption(format!(
            "{model_path}: {} cannot be trained for task \"{}\"",
            family.describe(),
            task.name()
        )));
    }
    let mut model_options = json!({ "task": model_task.name() });
    if task == TrainTask::Classification {
        let Some(Value::String(data)) = raw.data.as_ref() else {
            return Err(invalid("option `data` is required: the path of the classification data".into()));
        };
        model_options["numLabels"] = json!(crate::train::label_summary(&read_text(storage, data)?, data)?.num_labels);
    }
    Ok(json!({ "task": task.name(), "modelOptions": model_options }).to_string())
}
