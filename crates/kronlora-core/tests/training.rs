//! The classification training loop on a tiny generated BERT: it learns a learnable task with
//! Kron-LoRA and with LoRA, changes only adapters and head (every adapter, in every layer), and
//! stops with a named step on a non-finite loss.

mod reference;
mod tiny;

use kronlora_core::data::{encode_classification, EncodedExample};
use kronlora_core::io::ModelSource;
use kronlora_core::pretrained::PretrainedModel;
use kronlora_core::train::{evaluate, train_classification, TrainOptions};
use reference::Lcg;
use tiny::{temp_dir, tiny_bert_tensors, write_model, CONFIG};

/// Words 4..=13 of the tiny vocabulary: sentences of the first five are class 0, of the last five class 1.
fn dataset(n: usize, seed: u64) -> Vec<(String, usize)> {
    let mut rng = Lcg::new(seed);
    (0..n)
        .map(|i| {
            let label = i % 2;
            let len = 3 + (rng.next().abs() * 4.0) as usize;
            let words: Vec<String> = (0..len).map(|_| format!("w{}", 4 + label * 5 + (rng.next().abs() * 5.0) as usize % 5)).collect();
            (words.join(" "), label)
        })
        .collect()
}

fn model(dir: &std::path::Path) -> PretrainedModel {
    let mut vocab = serde_json::Map::new();
    for (i, w) in ["[PAD]", "[CLS]", "[UNK]", "[SEP]"].iter().enumerate() {
        vocab.insert(w.to_string(), i.into());
    }
    for i in 4..50 {
        vocab.insert(format!("w{i}"), i.into());
    }
    let tokenizer = serde_json::json!({
        "version": "1.0",
        "model": { "type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]" },
        "pre_tokenizer": { "type": "Whitespace" },
        "post_processor": { "type": "TemplateProcessing",
            "single": [{ "SpecialToken": { "id": "[CLS]", "type_id": 0 } }, { "Sequence": { "id": "A", "type_id": 0 } }],
            "pair": [{ "Sequence": { "id": "A", "type_id": 0 } }, { "Sequence": { "id": "B", "type_id": 1 } }],
            "special_tokens": { "[CLS]": { "id": "[CLS]", "ids": [1], "tokens": ["[CLS]"] } } }
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    PretrainedModel::load(ModelSource::Path(dir.to_path_buf()), r#"{"task":"sequence-classification","numLabels":2,"seed":1}"#).unwrap()
}

fn encode(m: &PretrainedModel, items: &[(String, usize)]) -> Vec<EncodedExample> {
    encode_classification(&m.tokenizer, items, 16, "data").unwrap()
}

#[test]
fn kron_lora_and_lora_both_learn_and_only_adapters_and_head_change() {
    let dir = temp_dir("train");
    write_model(&dir, &tiny_bert_tensors(11), CONFIG);
    for adapter in [r#"{"type":"kron-lora","rank":4,"alpha":8,"kronIn":2,"kronOut":4,"targetModules":"all-linear"}"#, r#"{"type":"lora","rank":4,"alpha":8,"targetModules":"all-linear"}"#] {
        let mut m = model(&dir);
        m.add_adapter("default", adapter).unwrap();
        let train = encode(&m, &dataset(64, 1));
        let test = encode(&m, &dataset(32, 2));
        let base_before: Vec<Vec<f32>> = m.adapters().iter().map(|(path, _, _)| weight_of(&m, path)).collect();
        let before = evaluate(&m, &test, 16).unwrap();
        let options = TrainOptions { epochs: 6, batch_size: 8, learning_rate: 5e-3, seed: 3, ..TrainOptions::default() };
        let mut losses = Vec::new();
        let steps = train_classification(&m, &train, &options, &mut |e| {
            assert!(e.learning_rate > 0.0 || e.step == 1);
            losses.push(e.loss);
            true
        })
        .unwrap();
        assert_eq!(steps, 6 * 8);
        let after = evaluate(&m, &test, 16).unwrap();
        let early: f64 = losses[..5].iter().sum::<f64>() / 5.0;
        let late: f64 = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
        assert!(late < early * 0.5, "{adapter}: training loss did not fall ({early} → {late})");
        assert!(after.accuracy >= 0.9 && after.loss < before.loss, "{adapter}: {before:?} → {after:?}");
        // Frozen weights unchanged; every adapter's zero-initialised factor has moved.
        let base_after: Vec<Vec<f32>> = m.adapters().iter().map(|(path, _, _)| weight_of(&m, path)).collect();
        assert_eq!(base_before, base_after);
        for (path, _, a) in m.adapters() {
            let (name, zero_init) = a.parameters()[1];
            let moved = zero_init.as_tensor().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(moved > 0.0, "{path}.{name} did not train");
        }
    }
}

fn weight_of(m: &PretrainedModel, path: &str) -> Vec<f32> {
    let kronlora_core::pretrained::Backbone::Bert(bert) = &m.backbone else { unreachable!() };
    bert.projections().iter().find(|p| p.name == path).unwrap().weight().flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn a_non_finite_loss_stops_training_and_names_the_step() {
    let dir = temp_dir("nan");
    write_model(&dir, &tiny_bert_tensors(12), CONFIG);
    let mut m = model(&dir);
    m.add_adapter("default", r#"{"type":"lora","rank":4,"alpha":8,"targetModules":"all-linear"}"#).unwrap();
    let train = encode(&m, &dataset(32, 1));
    let options = TrainOptions { learning_rate: 1e30, warmup_ratio: 0.0, max_grad_norm: None, batch_size: 4, ..TrainOptions::default() };
    let err = train_classification(&m, &train, &options, &mut |_| true).unwrap_err();
    assert_eq!(err.code(), "ERR_NON_FINITE");
    assert!(err.to_string().contains("step ") && err.to_string().contains("lower the learning rate"), "{err}");
}
