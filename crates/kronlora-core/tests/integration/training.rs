//! The training loop on tiny generated models: it learns with Kron-LoRA and with LoRA, changes
//! only adapters and head (every adapter, in every layer), resumes exactly, stops cleanly on
//! cancellation and early stopping, names the step of a non-finite loss, reports malformed
//! data by file and line, and saved adapters reload to identical outputs.

use crate::json_api::{evaluate_model, train};
use crate::reference::Lcg;
use crate::tiny::{temp_dir, tiny_bert_tensors, write_model, CONFIG};
use kronlora_core::api;
use kronlora_core::io::{FsStorage, ModelSource};
use kronlora_core::pretrained::PretrainedModel;
use kronlora_core::train::{trainable_named, StopReason, TrainEvent, TrainObserver, TrainResult};
use serde_json::{json, Value};

pub(crate) const KRON: &str =
    r#"{"type":"kron-lora","rank":4,"alpha":8,"kronIn":2,"kronOut":4,"targetModules":"all-linear"}"#;
pub(crate) const LORA: &str = r#"{"type":"lora","rank":4,"alpha":8,"targetModules":"all-linear"}"#;

/// Sentences of words w4..w8 are "neg", of w9..w13 "pos".
pub(crate) fn dataset(n: usize, seed: u64) -> Value {
    let mut rng = Lcg::new(seed);
    let records: Vec<Value> = (0..n)
        .map(|i| {
            let label = i % 2;
            let len = 3 + (rng.next().abs() * 4.0) as usize;
            let words: Vec<String> =
                (0..len).map(|_| format!("w{}", 4 + label * 5 + (rng.next().abs() * 5.0) as usize % 5)).collect();
            json!({ "text": words.join(" "), "label": if label == 0 { "neg" } else { "pos" } })
        })
        .collect();
    Value::Array(records)
}

pub(crate) fn model_dir(name: &str) -> std::path::PathBuf {
    let dir = temp_dir(name);
    write_model(&dir, &tiny_bert_tensors(11), CONFIG);
    std::fs::write(dir.join("tokenizer.json"), crate::tiny::word_tokenizer(50)).unwrap();
    dir
}

pub(crate) fn model(dir: &std::path::Path, adapter: &str) -> PretrainedModel {
    let mut m = api::load_model(
        ModelSource::Path(dir.to_path_buf()),
        r#"{"task":"sequence-classification","numLabels":2,"seed":1}"#,
    )
    .unwrap();
    api::add_adapter(&mut m, "default", adapter).unwrap();
    m
}

#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) events: Vec<TrainEvent>,
    pub(crate) stop_after: Option<u64>,
}

impl TrainObserver for Recorder {
    fn event(&mut self, event: &TrainEvent) {
        self.events.push(event.clone());
    }
    fn should_stop(&mut self) -> bool {
        let step =
            self.events
                .iter()
                .rev()
                .find_map(|e| if let TrainEvent::Step { step, .. } = e { Some(*step) } else { None });
        self.stop_after.is_some_and(|s| step >= Some(s))
    }
}

pub(crate) fn run(
    m: &mut PretrainedModel,
    options: Value,
    recorder: &mut Recorder,
) -> kronlora_core::Result<TrainResult> {
    train(m, &options.to_string(), &FsStorage, recorder)
}

pub(crate) fn params(m: &PretrainedModel) -> Vec<Vec<f32>> {
    trainable_named(m).iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect()
}

fn frozen(m: &PretrainedModel) -> Vec<Vec<f32>> {
    m.backbone
        .projections()
        .iter()
        .map(|p| p.weight().unwrap().unwrap().flatten_all().unwrap().to_vec1().unwrap())
        .collect()
}

#[test]
fn kron_lora_and_lora_both_learn_and_only_adapters_and_head_change() {
    let dir = model_dir("learn");
    for adapter in [KRON, LORA] {
        let mut m = model(&dir, adapter);
        let base_before = frozen(&m);
        let options = json!({ "data": dataset(64, 1), "validationData": dataset(32, 2), "epochs": 6, "batchSize": 8, "learningRate": 5e-3, "seed": 3 });
        let mut rec = Recorder::default();
        let result = run(&mut m, options, &mut rec).unwrap();
        assert_eq!((result.reason, result.step, result.total_steps), (StopReason::Completed, 48, 48));
        let losses = &result.losses;
        let early: f64 = losses[..5].iter().sum::<f64>() / 5.0;
        let late: f64 = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
        assert!(late < early * 0.5, "{adapter}: training loss did not fall ({early} → {late})");
        let after = result.metrics.clone().unwrap();
        let first_eval = rec
            .events
            .iter()
            .find_map(|e| if let TrainEvent::Eval { metrics, .. } = e { Some(metrics.clone()) } else { None })
            .unwrap();
        assert!(
            after.accuracy.unwrap() >= 0.9 && after.loss < first_eval.loss.min(std::f64::consts::LN_2),
            "{adapter}: {first_eval:?} → {after:?}"
        );
        // Events: start, a step per optimiser step, an eval per epoch, done.
        assert!(matches!(
            rec.events[0],
            TrainEvent::Start { total_steps: 48, train_examples: 64, validation_examples: 32, .. }
        ));
        assert_eq!(rec.events.iter().filter(|e| matches!(e, TrainEvent::Step { .. })).count(), 48);
        assert_eq!(rec.events.iter().filter(|e| matches!(e, TrainEvent::Eval { .. })).count(), 6);
        assert!(matches!(rec.events.last(), Some(TrainEvent::Done(_))));
        // String labels were mapped, sorted.
        assert_eq!(m.labels.names, ["neg", "pos"]);
        // Frozen weights unchanged; every adapter's zero-initialised factor has moved.
        assert_eq!(base_before, frozen(&m));
        for (path, _, a) in m.adapters() {
            let (name, zero_init) = a.parameters()[1];
            let moved = zero_init.as_tensor().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(moved > 0.0, "{path}.{name} did not train");
        }
    }
}

#[test]
fn interrupted_and_resumed_equals_uninterrupted() {
    let dir = model_dir("resume");
    let out = temp_dir("resume-out");
    let options = |out: &std::path::Path| {
        json!({ "data": dataset(40, 1), "validationSplit": 0.2, "epochs": 3, "batchSize": 4, "gradientAccumulation": 2,
                "learningRate": 5e-3, "seed": 9, "evalEvery": 3, "outputDir": out.display().to_string() })
    };
    // Adapter dropout too: its masks must also continue where they stopped.
    let adapter = r#"{"type":"kron-lora","rank":4,"alpha":8,"targetModules":"all-linear","dropout":0.1}"#;
    let mut whole = model(&dir, adapter);
    let full = run(&mut whole, options(&temp_dir("resume-whole")), &mut Recorder::default()).unwrap();

    let mut first = model(&dir, adapter);
    let mut rec = Recorder { stop_after: Some(5), ..Default::default() };
    let cut = run(&mut first, options(&out), &mut rec).unwrap();
    assert_eq!((cut.reason, cut.step), (StopReason::Cancelled, 5));
    let checkpoint = cut.checkpoint.clone().expect("a checkpoint on cancel");
    assert!(checkpoint.ends_with("checkpoint-000005"), "{checkpoint}");
    for f in [
        "trainer_state.json",
        "trainable.safetensors",
        "optimizer.safetensors",
        "adapter_config.json",
        "adapter_model.safetensors",
    ] {
        assert!(std::path::Path::new(&checkpoint).join(f).exists(), "{f} missing");
    }

    let mut second = model(&dir, adapter);
    let mut o = options(&out);
    o["resumeFrom"] = json!(out.display().to_string());
    let mut rec = Recorder::default();
    let resumed = run(&mut second, o, &mut rec).unwrap();
    assert!(matches!(rec.events[0], TrainEvent::Start { resumed_from_step: Some(5), .. }));
    assert_eq!(resumed.losses, full.losses, "the resumed loss sequence differs");
    assert_eq!(resumed.metrics, full.metrics);
    assert_eq!(params(&second), params(&whole));

    // A different setting is refused, not silently mixed.
    let mut third = model(&dir, adapter);
    let mut o = options(&out);
    o["resumeFrom"] = json!(out.display().to_string());
    o["learningRate"] = json!(1e-2);
    let err = run(&mut third, o, &mut Recorder::default()).unwrap_err();
    assert!(err.to_string().contains("different training options"), "{err}");
}

#[test]
fn a_non_finite_loss_stops_training_names_the_step_and_keeps_the_last_checkpoint() {
    let dir = model_dir("nan");
    let out = temp_dir("nan-out");
    let mut m = model(&dir, LORA);
    let options = json!({ "data": dataset(32, 1), "validationSplit": 0, "learningRate": 1e30, "warmupRatio": 0, "maxGradNorm": null,
                          "batchSize": 4, "checkpointEvery": 1, "outputDir": out.display().to_string() });
    let err = run(&mut m, options, &mut Recorder::default()).unwrap_err();
    assert_eq!(err.code(), "ERR_NON_FINITE");
    let msg = err.to_string();
    assert!(
        msg.starts_with("step 2: ") && msg.contains("lower the learning rate") && msg.contains("checkpoint-000001"),
        "{msg}"
    );
    // The last good checkpoint is complete and readable.
    let c = kronlora_core::train::read_checkpoint(&FsStorage, &out.join("checkpoint-000001").display().to_string())
        .unwrap();
    assert!(c.parameters.iter().all(|t| t.data.iter().all(|v| v.is_finite())));
    assert!(!out.join("checkpoint-000002").exists());
}

#[test]
fn malformed_data_is_reported_by_file_and_line() {
    let dir = model_dir("bad-data");
    let file = dir.join("train.jsonl");
    std::fs::write(
        &file,
        "{\"text\":\"w4 w5\",\"label\":0}\n{\"text\":\"w9\",\"label\":1}\n{\"text\":\"w5\" \"label\":0}\n",
    )
    .unwrap();
    let mut m = model(&dir, LORA);
    let err = run(&mut m, json!({ "data": file.display().to_string() }), &mut Recorder::default()).unwrap_err();
    assert_eq!(err.code(), "ERR_INVALID_DATA");
    assert!(err.to_string().contains("train.jsonl:3: invalid JSON"), "{err}");
    let err = run(&mut m, json!({ "data": [] }), &mut Recorder::default()).unwrap_err();
    assert!(err.to_string().contains("the dataset is empty"), "{err}");
    let err = run(&mut m, json!({ "data": [{"text": "w4", "label": 5}] }), &mut Recorder::default()).unwrap_err();
    assert!(err.to_string().contains("label 5 is out of range for numLabels = 2"), "{err}");
    // The tiny model has 24 positions: a longer maxLength is refused before training starts.
    let err = run(&mut m, json!({ "data": dataset(8, 1), "maxLength": 25 }), &mut Recorder::default()).unwrap_err();
    assert!(
        err.to_string().contains("maxLength = 25 exceeds the model's context of 24 positions; use at most 24"),
        "{err}"
    );
    let err = evaluate_model(&m, &dataset(4, 1).to_string(), r#"{"maxLength":100}"#, &FsStorage).unwrap_err();
    assert_eq!(err.code(), "ERR_INVALID_OPTION");
    let err = run(
        &mut m,
        json!({ "data": dataset(8, 1), "validationSplit": 0, "earlyStopping": true }),
        &mut Recorder::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("earlyStopping and evalEvery need validation data"), "{err}");
    let err =
        run(&mut m, json!({ "data": dataset(8, 1), "metric": "perplexity" }), &mut Recorder::default()).unwrap_err();
    assert!(err.to_string().contains("metric \"perplexity\" is not computed for task \"classification\""), "{err}");
    // Unknown labels at evaluation name the labels the model knows.
    run(&mut m, json!({ "data": dataset(8, 1), "maxSteps": 1 }), &mut Recorder::default()).unwrap();
    let err = evaluate_model(&m, &json!([{"text": "w4", "label": "meh"}]).to_string(), "{}", &FsStorage).unwrap_err();
    assert!(err.to_string().contains("unknown label `meh`; the model knows neg, pos"), "{err}");
}

#[test]
fn early_stopping_keeps_the_best_weights() {
    let dir = model_dir("early");
    let mut m = model(&dir, LORA);
    let mut rec = Recorder::default();
    // minDelta 2 on the loss: nothing after the first evaluation counts as an improvement.
    let options = json!({ "data": dataset(48, 1), "validationData": dataset(16, 2), "epochs": 10, "batchSize": 8, "learningRate": 5e-3,
                          "evalEvery": 2, "earlyStopping": { "patience": 2, "minDelta": 2 } });
    let result = run(&mut m, options, &mut rec).unwrap();
    assert_eq!((result.reason, result.step, result.best_step), (StopReason::EarlyStopped, 6, Some(2)));
    let evals: Vec<&TrainEvent> = rec.events.iter().filter(|e| matches!(e, TrainEvent::Eval { .. })).collect();
    assert_eq!(evals.len(), 3);
    let TrainEvent::Eval { metrics: first, is_best: true, .. } = evals[0] else { panic!("{:?}", evals[0]) };
    // The model holds the step-2 weights again: evaluating now gives the step-2 metrics.
    let now = evaluate_model(&m, &dataset(16, 2).to_string(), "{}", &FsStorage).unwrap();
    assert!((now.loss - first.loss).abs() < 1e-6 && now.accuracy == first.accuracy, "{now:?} vs {first:?}");
    assert_eq!(result.metrics.as_ref().map(|x| x.loss), Some(first.loss));
}

#[test]
fn saved_adapters_reload_to_identical_outputs_in_peft_layout() {
    let dir = model_dir("save");
    for (adapter, keys) in
        [(KRON, ["lokr_w1", "lokr_w2_a", "lokr_w2_b"]), (LORA, ["lora_A.weight", "lora_B.weight", "lora_B.weight"])]
    {
        let out = temp_dir("save-out");
        let mut m = model(&dir, adapter);
        run(
            &mut m,
            json!({ "data": dataset(32, 1), "epochs": 2, "batchSize": 8, "learningRate": 5e-3 }),
            &mut Recorder::default(),
        )
        .unwrap();
        let adapter_dir = out.join("adapter").display().to_string();
        m.save_adapter(&FsStorage, &adapter_dir, None).unwrap();
        let config: Value =
            serde_json::from_slice(&std::fs::read(out.join("adapter/adapter_config.json")).unwrap()).unwrap();
        let tensors = kronlora_core::io::read_safetensors_bytes(
            &std::fs::read(out.join("adapter/adapter_model.safetensors")).unwrap(),
            "x",
        )
        .unwrap();
        let q = "base_model.model.bert.encoder.layer.0.attention.self.query";
        for k in keys {
            assert!(
                tensors.contains_key(&format!("{q}.{k}")),
                "{q}.{k} missing: {:?}",
                tensors.keys().take(4).collect::<Vec<_>>()
            );
        }
        assert!(
            tensors.contains_key("base_model.model.classifier.weight")
                && tensors.contains_key("base_model.model.bert.pooler.dense.weight")
        );
        if adapter == KRON {
            assert_eq!(config["peft_type"], "LOKR");
            assert_eq!(
                (config["r"].clone(), config["alpha"].clone(), config["decompose_both"].clone()),
                (json!(4), json!(8.0), json!(false))
            );
            // d_A1 = 2 ≠ d_A2 = 4: no single PEFT decompose_factor rebuilds these shapes.
            assert_eq!(
                (config["decompose_factor"].clone(), config["kronlora"]["peftLoadable"].clone()),
                (json!(-1), json!(false))
            );
            assert_eq!(tensors[&format!("{q}.lokr_w1")].shape, vec![4, 2]);
            assert_eq!(tensors[&format!("{q}.lokr_w2_a")].shape, vec![4, 4]);
            assert_eq!(tensors[&format!("{q}.lokr_w2_b")].shape, vec![4, 8]);
        } else {
            assert_eq!((config["peft_type"].clone(), config["lora_alpha"].clone()), (json!("LORA"), json!(8.0)));
            assert_eq!(tensors[&format!("{q}.lora_A.weight")].shape, vec![4, 16]);
            assert_eq!(tensors[&format!("{q}.lora_B.weight")].shape, vec![16, 4]);
        }
        assert_eq!(config["task_type"], "SEQ_CLS");
        assert_eq!(config["modules_to_save"], json!(["pooler", "classifier"]));
        assert_eq!(config["kronlora"]["labels"], json!(["neg", "pos"]));

        let texts: Vec<String> = vec!["w4 w5 w6".into(), "w10 w11".into()];
        let mut fresh = api::load_model(
            ModelSource::Path(dir.clone()),
            r#"{"task":"sequence-classification","numLabels":2,"seed":7}"#,
        )
        .unwrap();
        assert_ne!(fresh.classify(&texts).unwrap(), m.classify(&texts).unwrap());
        assert_eq!(fresh.load_adapter(&FsStorage, &adapter_dir, None).unwrap(), 12);
        assert_eq!(fresh.classify(&texts).unwrap(), m.classify(&texts).unwrap());
        assert_eq!(fresh.labels.names, ["neg", "pos"]);

        // Sequential fine-tuning: a loaded adapter trains on, starting where it was.
        let start = evaluate_model(&fresh, &dataset(16, 5).to_string(), "{}", &FsStorage).unwrap();
        let again = run(&mut fresh, json!({ "data": dataset(16, 5), "validationSplit": 0, "batchSize": 16, "learningRate": 1e-9, "warmupRatio": 0 }), &mut Recorder::default()).unwrap();
        assert!((again.losses[0] - start.loss).abs() < 1e-5, "{} vs {}", again.losses[0], start.loss);

        // Broken files are errors that name the file; the model is left as it was.
        std::fs::write(out.join("adapter/adapter_model.safetensors"), b"not safetensors").unwrap();
        let mut other =
            api::load_model(ModelSource::Path(dir.clone()), r#"{"task":"sequence-classification","numLabels":2}"#)
                .unwrap();
        let err = other.load_adapter(&FsStorage, &adapter_dir, None).unwrap_err();
        assert!(err.to_string().contains("adapter_model.safetensors: not a valid safetensors file"), "{err}");
        assert!(other.adapter_infos().is_empty());
        let err = other.load_adapter(&FsStorage, &out.join("missing").display().to_string(), None).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}

#[test]
fn adapter_dropout_is_seeded_and_only_in_training() {
    let dir = model_dir("dropout");
    let with = r#"{"type":"lora","rank":4,"alpha":8,"targetModules":"all-linear","dropout":0.3}"#;
    let options =
        json!({ "data": dataset(32, 1), "validationSplit": 0, "batchSize": 8, "epochs": 2, "learningRate": 5e-3 });
    let a = run(&mut model(&dir, with), options.clone(), &mut Recorder::default()).unwrap();
    let b = run(&mut model(&dir, with), options.clone(), &mut Recorder::default()).unwrap();
    let c = run(&mut model(&dir, LORA), options, &mut Recorder::default()).unwrap();
    assert_eq!(a.losses, b.losses);
    // Step 1's loss is the same (B = 0: dropout has nothing to drop yet); later ones differ.
    assert_eq!(a.losses[0], c.losses[0]);
    assert_ne!(a.losses[1..], c.losses[1..]);
    // Inference is deterministic (no dropout outside training).
    let m = model(&dir, with);
    let texts = vec!["w4 w5".to_string()];
    assert_eq!(m.classify(&texts).unwrap(), m.classify(&texts).unwrap());
}

/// The compute pool runs every caller's work; a pool thread waiting inside one model's
/// inference may run another model's training step. That step must still train (its grad mode
/// is its own, not the thread's), so its losses are those of a run alone, bit for bit.
#[test]
fn inference_on_another_thread_does_not_change_training() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = model_dir("concurrent");
    let options =
        json!({ "data": dataset(32, 1), "validationSplit": 0, "batchSize": 8, "epochs": 2, "learningRate": 5e-3 });
    let alone = run(&mut model(&dir, KRON), options.clone(), &mut Recorder::default()).unwrap();
    let other = model(&dir, LORA);
    let texts: Vec<String> = (0..8).map(|i| format!("w{i} w{} w{}", i + 1, i + 2)).collect();
    let stop = AtomicBool::new(false);
    let (busy, inferences) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut count = 0;
            while !stop.load(Ordering::Relaxed) {
                other.classify(&texts).unwrap();
                count += 1;
            }
            count
        });
        let busy = run(&mut model(&dir, KRON), options, &mut Recorder::default()).unwrap();
        stop.store(true, Ordering::Relaxed);
        (busy, reader.join().unwrap())
    });
    assert!(inferences > 0);
    assert_eq!(busy.losses, alone.losses);
}
