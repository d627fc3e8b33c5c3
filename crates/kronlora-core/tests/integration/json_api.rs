//! `train` and `evaluate_model` with their options as JSON, as the bindings pass them (parsed
//! by `api`, so option errors surface from these calls as they do from JavaScript).

use kronlora_core::api::{self, Storage};
use kronlora_core::pretrained::PretrainedModel;
use kronlora_core::train::{EvalMetrics, TrainObserver, TrainResult};
use kronlora_core::Result;

pub(crate) fn train(
    model: &mut PretrainedModel,
    options_json: &str,
    storage: &dyn Storage,
    observer: &mut dyn TrainObserver,
) -> Result<TrainResult> {
    kronlora_core::train::train(model, &api::train_options(options_json)?, storage, observer)
}

pub(crate) fn evaluate_model(
    model: &PretrainedModel,
    data_json: &str,
    options_json: &str,
    storage: &dyn Storage,
) -> Result<EvalMetrics> {
    let data = kronlora_core::data::parse_json(data_json)
        .map_err(|e| kronlora_core::Error::InvalidOption(format!("invalid data: {e}")))?;
    kronlora_core::train::evaluate_model(
        model,
        &api::data_spec("data", &data)?,
        &api::eval_options(options_json)?,
        storage,
    )
}
