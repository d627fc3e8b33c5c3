//! The device is a value: a model loaded for a device handed in keeps its weights, adapters,
//! head and trained parameters there, and says so; asking for a device this build lacks is a
//! coded error. (CPU here; the same code path serves CUDA.)

use candle_core::Device;
use kronlora_core::api::{self, FsStorage, ModelSource};
use kronlora_core::models::Task;
use kronlora_core::pretrained::{ModelOptions, PretrainedModel};
use kronlora_core::train::trainable_named;

use crate::training::{dataset, model_dir, Recorder, KRON};

fn on(device: &Device, t: &candle_core::Tensor) -> bool {
    t.device().same_device(device)
}

#[test]
fn a_model_keeps_everything_on_the_device_it_was_handed() {
    let dir = model_dir("device-handed-in");
    let device = Device::Cpu;
    let options =
        ModelOptions { task: Some(Task::SequenceClassification), device: device.clone(), ..Default::default() };
    let mut model = PretrainedModel::load(ModelSource::Path(dir.clone()), &options).unwrap();
    assert!(model.device().same_device(&device));
    assert_eq!(model.describe().device, "cpu");
    api::add_adapter(&mut model, "default", KRON).unwrap();
    assert!(model.backbone.projections().iter().all(|p| p.weight().unwrap().is_some_and(|w| on(&device, &w))));
    let options = serde_json::json!({ "data": dataset(24, 1), "epochs": 1, "batchSize": 8, "seed": 3 }).to_string();
    api::train_json(&mut model, &options, &FsStorage, &mut Recorder::default()).unwrap();
    let trained = trainable_named(&model);
    assert!(!trained.is_empty());
    for (name, var) in trained {
        assert!(on(&device, var.as_tensor()), "{name} left the model's device");
    }
    let description: serde_json::Value = serde_json::from_str(&api::describe_json(&model).unwrap()).unwrap();
    assert_eq!(description["device"], "cpu");
    assert_eq!(description["family"], "encoder");
}

#[test]
fn devices_are_named_in_options_and_a_missing_one_is_a_coded_error() {
    let dir = model_dir("device-options");
    let source = || ModelSource::Path(dir.clone());
    assert_eq!(api::load_model(source(), r#"{"device":"cpu"}"#).unwrap().describe().device, "cpu");
    assert_eq!(
        api::load_model(source(), r#"{"device":"auto"}"#).unwrap().describe().device.split(':').next(),
        Some(if candle_core::utils::cuda_is_available() { "cuda" } else { "cpu" })
    );
    let err = api::load_model(source(), r#"{"device":"tpu"}"#).err().unwrap();
    assert_eq!(err.code(), "ERR_INVALID_OPTION");
    if !candle_core::utils::cuda_is_available() {
        let err = api::load_model(source(), r#"{"device":"cuda:0"}"#).err().unwrap();
        assert_eq!(err.code(), "ERR_UNSUPPORTED");
        assert!(err.to_string().contains("CUDA"), "{err}");
        let err = api::create_layer(
            "lora",
            r#"{"inFeatures":4,"outFeatures":4,"rank":1,"alpha":1,"device":"cuda"}"#,
            None,
            None,
        )
        .err()
        .unwrap();
        assert_eq!(err.code(), "ERR_UNSUPPORTED");
    }
}
