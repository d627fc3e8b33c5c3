//! Several adapters on one model: the active set and its weights, per-call choices, deleting,
//! merging (undone bit for bit), hot-swapping an adapter's weights, and training only the active
//! adapters. References: the same adapters saved and loaded alone into a fresh model, and the
//! weighted updates folded into the weights (`delta_weight`, a different code path).

use std::path::Path;

use candle_core::{Device, Tensor};
use kronlora_core::api;
use kronlora_core::api::TrainEvent;
use kronlora_core::io::FsStorage;
use kronlora_core::pretrained::PretrainedModel;

use crate::reference::Lcg;
use crate::tiny::llama::temp_dir;
use crate::tiny::tiny_classifier;
use crate::training::Recorder;

fn classifier(dir: &Path) -> PretrainedModel {
    tiny_classifier(dir, 5, 2)
}

/// Random values in adapter `name`'s parameters (not the head's).
fn randomise(model: &PretrainedModel, name: &str, seed: u64) {
    let mut rng = Lcg::new(seed);
    for (_, n, a) in model.adapters() {
        if n != name {
            continue;
        }
        for (_, var) in a.parameters() {
            let v: Vec<f32> = rng.vec(var.elem_count()).into_iter().map(|x| x * 1.5).collect();
            var.set(&Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap()).unwrap();
        }
    }
}

fn texts() -> Vec<String> {
    ["a b c", "c c a b", "b"].map(String::from).to_vec()
}

fn logits(model: &PretrainedModel, options: &str) -> Vec<f32> {
    api::logits(model, &texts(), options).unwrap().0
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn active(model: &PretrainedModel) -> Vec<(String, f64)> {
    model.active_adapters().into_iter().map(|a| (a.name, a.weight)).collect()
}

/// A model with adapters `a` (Kron-LoRA) and `b` (LoRA), both random, and the directory of each
/// saved alone.
fn two_adapters(dir: &Path) -> PretrainedModel {
    let mut m = classifier(&dir.join("model"));
    api::add_adapter(&mut m, "a", r#"{"type":"kron-lora","rank":2,"alpha":4,"targetModules":"all-linear"}"#).unwrap();
    api::add_adapter(&mut m, "b", r#"{"type":"lora","rank":3,"alpha":3,"targetModules":["query","value"]}"#).unwrap();
    randomise(&m, "a", 1);
    randomise(&m, "b", 2);
    for name in ["a", "b"] {
        m.save_adapter(&FsStorage, dir.join(name).to_str().unwrap(), Some(name)).unwrap();
    }
    m
}

fn alone(dir: &Path, name: &str) -> Vec<f32> {
    let mut m = classifier(&dir.join("model"));
    api::load_adapter(&mut m, &FsStorage, dir.join(name).to_str().unwrap(), "{}").unwrap();
    logits(&m, "{}")
}

#[test]
fn the_active_set_weights_and_per_call_choices_select_the_updates() {
    let dir = temp_dir("multi-select");
    let mut m = two_adapters(&dir);
    assert_eq!(active(&m), [("a".into(), 1.0), ("b".into(), 1.0)], "added adapters start active");
    let both = logits(&m, "{}");
    let (only_a, only_b) = (alone(&dir, "a"), alone(&dir, "b"));
    let base = logits(&classifier(&dir.join("model")), "{}");

    api::set_active_adapters(&mut m, r#"{"adapters":["a"]}"#).unwrap();
    assert!(max_diff(&logits(&m, "{}"), &only_a) < 1e-5);
    api::set_active_adapters(&mut m, r#"{"adapters":[]}"#).unwrap();
    assert!(max_diff(&logits(&m, "{}"), &base) < 1e-6, "no adapter active: the base model");
    assert!(
        max_diff(&only_a, &base) > 1e-2 && max_diff(&only_b, &base) > 1e-2,
        "each adapter matters: {} {}",
        max_diff(&only_a, &base),
        max_diff(&only_b, &base)
    );

    // Per call, without touching the model's choice (none active now).
    assert!(max_diff(&logits(&m, r#"{"adapter":"b"}"#), &only_b) < 1e-5);
    assert!(max_diff(&logits(&m, r#"{"adapter":["a","b"]}"#), &both) < 1e-5);
    assert!(active(&m).is_empty());
    let classified: serde_json::Value =
        serde_json::from_str(&api::classify_json(&m, &texts(), r#"{"adapter":"a"}"#).unwrap()).unwrap();
    let p = classified[0]["scores"][1].as_f64().unwrap() as f32;
    let (l0, l1) = (only_a[0], only_a[1]);
    assert!((p - 1.0 / (1.0 + (l0 - l1).exp())).abs() < 1e-5, "classify uses the chosen adapter");

    // Weighted: the weighted updates folded into the weights give the same logits.
    api::set_active_adapters(&mut m, r#"{"adapters":["a","b"],"weights":[0.7,-0.4]}"#).unwrap();
    assert_eq!(active(&m), [("a".into(), 0.7), ("b".into(), -0.4)]);
    let weighted = logits(&m, "{}");
    let weights_before: Vec<Vec<f32>> = m
        .backbone
        .projections()
        .iter()
        .map(|p| p.weight().unwrap().unwrap().flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    assert_eq!(api::merge_adapters(&mut m).unwrap(), 12);
    assert!(m.is_merged());
    let merged = logits(&m, "{}");
    assert!(max_diff(&merged, &weighted) < 1e-5, "merged vs weighted updates: {}", max_diff(&merged, &weighted));
    for (options, want) in
        [(r#"{"adapters":["a"]}"#, "unmergeAdapters() before changing"), ("", "unmergeAdapters() before choosing")]
    {
        let err = if options.is_empty() {
            api::logits(&m, &texts(), r#"{"adapter":"a"}"#).unwrap_err()
        } else {
            api::set_active_adapters(&mut m, options).unwrap_err()
        };
        assert!(err.to_string().contains(want), "{err}");
    }
    let err = api::train_json(&mut m, r#"{"data":[{"text":"a","label":0}]}"#, &FsStorage, &mut Recorder::default())
        .unwrap_err();
    assert!(err.to_string().contains("before training"), "{err}");
    assert_eq!(api::unmerge_adapters(&mut m).unwrap(), 12);
    let weights_after: Vec<Vec<f32>> = m
        .backbone
        .projections()
        .iter()
        .map(|p| p.weight().unwrap().unwrap().flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    assert!(weights_before == weights_after, "unmerge restores the weights bit for bit");
    assert_eq!(logits(&m, "{}"), weighted);
}

#[test]
fn bad_choices_are_refused_and_change_nothing() {
    let dir = temp_dir("multi-errors");
    let mut m = two_adapters(&dir);
    for (json, want) in [
        (r#"{"adapters":["c"]}"#, "no adapter named `c`; it has a, b"),
        (r#"{"adapters":["a","a"]}"#, "named twice"),
        (r#"{"adapters":["a"],"weights":["NaN"]}"#, "not a finite number"),
        (r#"{"adapters":["a"],"weights":[1,2]}"#, "1 numbers, one per adapter"),
        (r#"{"adapters":"a","weight":[1]}"#, "unknown field `weight`"),
        (r#"{}"#, "needs the adapter names"),
    ] {
        let err = api::set_active_adapters(&mut m, json).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_OPTION", "{json}");
        assert!(err.to_string().contains(want), "{json}: {err}");
    }
    assert_eq!(active(&m).len(), 2);
    assert!(api::logits(&m, &texts(), r#"{"adapter":"z"}"#).unwrap_err().to_string().contains("no adapter named `z`"));
    assert!(api::logits(&m, &texts(), r#"{"adaptor":"a"}"#).unwrap_err().to_string().contains("unknown field"));
    assert!(api::merge_adapters(&mut m).is_ok() && api::merge_adapters(&mut m).is_err());
    api::unmerge_adapters(&mut m).unwrap();
    assert!(api::unmerge_adapters(&mut m).unwrap_err().to_string().contains("not merged"));
    api::delete_adapter(&mut m, "b").unwrap();
    assert!(api::delete_adapter(&mut m, "b").is_err());
    assert_eq!(active(&m), [("a".into(), 1.0)]);
    assert!(m.backbone.projections().iter().all(|p| p.adapters().all(|(n, _)| n == "a")));
}

#[test]
fn training_trains_the_active_adapters_only_and_says_which() {
    let dir = temp_dir("multi-train");
    let mut m = two_adapters(&dir);
    api::set_active_adapters(&mut m, r#"{"adapters":["b"]}"#).unwrap();
    let values = |m: &PretrainedModel, name: &str| -> Vec<f32> {
        m.adapters()
            .into_iter()
            .filter(|(_, n, _)| n == name)
            .flat_map(|(_, _, a)| {
                a.parameters()
                    .into_iter()
                    .flat_map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())
            })
            .collect()
    };
    let (a0, b0) = (values(&m, "a"), values(&m, "b"));
    let mut events = Recorder::default();
    let data = r#"{"data":[{"text":"a b","label":0},{"text":"c","label":1}],"epochs":2,"batchSize":2,"validationSplit":0,"learningRate":0.05}"#;
    api::train_json(&mut m, data, &FsStorage, &mut events).unwrap();
    assert_eq!(values(&m, "a"), a0, "the inactive adapter is not trained");
    assert_ne!(values(&m, "b"), b0, "the active one is");
    let start = events.events.iter().find_map(|e| match e {
        TrainEvent::Start { adapters, .. } => Some(adapters.clone()),
        _ => None,
    });
    assert_eq!(start, Some(vec!["b".to_string()]));
    api::set_active_adapters(&mut m, r#"{"adapters":[]}"#).unwrap();
    let err = api::train_json(&mut m, data, &FsStorage, &mut Recorder::default()).unwrap_err();
    assert!(err.to_string().contains("no adapter is active"), "{err}");
}

#[test]
fn an_adapter_is_hot_swapped_in_place_and_a_bad_file_leaves_it() {
    let dir = temp_dir("multi-swap");
    let mut m = two_adapters(&dir);
    api::set_active_adapters(&mut m, r#"{"adapters":["a","b"],"weights":[1,0.5]}"#).unwrap();
    // Another version of `b`: written from a second model with other values.
    let mut other = classifier(&dir.join("model"));
    api::add_adapter(&mut other, "b", r#"{"type":"lora","rank":3,"alpha":3,"targetModules":["query","value"]}"#)
        .unwrap();
    randomise(&other, "b", 9);
    let b2 = dir.join("b2");
    other.save_adapter(&FsStorage, b2.to_str().unwrap(), None).unwrap();
    let err = api::load_adapter(&mut m, &FsStorage, b2.to_str().unwrap(), r#"{"name":"b"}"#).unwrap_err();
    assert!(err.to_string().contains("replace: true"), "{err}");
    let before = logits(&m, "{}");
    std::fs::create_dir_all(dir.join("broken")).unwrap();
    std::fs::copy(b2.join("adapter_config.json"), dir.join("broken/adapter_config.json")).unwrap();
    std::fs::write(dir.join("broken/adapter_model.safetensors"), b"not safetensors").unwrap();
    assert!(api::load_adapter(
        &mut m,
        &FsStorage,
        dir.join("broken").to_str().unwrap(),
        r#"{"name":"b","replace":true}"#
    )
    .is_err());
    assert_eq!(logits(&m, "{}"), before, "a refused swap leaves the adapter as it was");
    api::load_adapter(&mut m, &FsStorage, b2.to_str().unwrap(), r#"{"name":"b","replace":true}"#).unwrap();
    assert_eq!(active(&m), [("a".into(), 1.0), ("b".into(), 0.5)], "the swapped adapter keeps its weight");
    // Reference: `a` and the new `b` loaded into a fresh model at the same weights.
    let mut fresh = classifier(&dir.join("model"));
    api::load_adapter(&mut fresh, &FsStorage, dir.join("a").to_str().unwrap(), "{}").unwrap();
    api::load_adapter(&mut fresh, &FsStorage, b2.to_str().unwrap(), r#"{"name":"b"}"#).unwrap();
    api::set_active_adapters(&mut fresh, r#"{"adapters":["a","b"],"weights":[1,0.5]}"#).unwrap();
    let d = max_diff(&logits(&m, "{}"), &logits(&fresh, "{}"));
    assert!(d < 1e-5, "swapped vs freshly loaded: {d}");
}
