//! BERT encoders with adapters, on tiny models generated here (random weights, real formats).

use kronlora_core::api;
use kronlora_core::models::{attach_adapter, mean_pool, Backbone};
use std::collections::HashMap;
use std::path::Path;

use crate::reference::Lcg;
use crate::tiny::{temp_dir, tensor, tiny_bert_tensors, write_model, CONFIG};
use candle_core::{DType, Device, Tensor};
use kronlora_core::models::bert::BertModel;
use kronlora_core::models::{AdapterPlan, TargetModules};
use kronlora_core::{AdapterConfig, AdapterKind};

fn inputs() -> (Tensor, Tensor) {
    let ids = Tensor::new(&[[1u32, 7, 9, 23, 4, 2], [1, 30, 12, 2, 0, 0]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1f32, 1., 1., 1., 1., 1.], [1., 1., 1., 1., 0., 0.]], &Device::Cpu).unwrap();
    (ids, mask)
}

fn plan(kind: AdapterKind, targets: TargetModules) -> AdapterPlan {
    let config =
        AdapterConfig { kind, rank: 4, alpha: 8.0, kron_in: Some(2), kron_out: Some(4), use_rslora: false, seed: 3 };
    let config =
        if kind == AdapterKind::Lora { AdapterConfig { kron_in: None, kron_out: None, ..config } } else { config };
    AdapterPlan { targets, config, overrides: vec![], dropout: 0.0 }
}

fn embed(model: &BertModel) -> Vec<Vec<f32>> {
    let (ids, mask) = inputs();
    mean_pool(&model.forward(&ids, Some(&mask), None).unwrap(), &mask).unwrap().to_vec2::<f32>().unwrap()
}

/// Give every adapter parameter random values (the zero-initialised factors included).
fn randomise_adapters(model: &BertModel, seed: u64) {
    let mut rng = Lcg::new(seed);
    for p in model.projections() {
        for (_, adapter) in p.adapters() {
            for (_, var) in adapter.parameters() {
                var.set(&tensor(&mut rng, var.dims(), 0.2)).unwrap();
            }
        }
    }
}

#[test]
fn fresh_adapters_leave_outputs_unchanged() {
    let dir = temp_dir("fresh");
    write_model(&dir, &tiny_bert_tensors(1), CONFIG);
    let base = BertModel::load(&dir, &Device::Cpu).unwrap();
    let want = embed(&base);
    assert_eq!(want.len(), 2);
    assert_eq!(want[0].len(), 16);
    for kind in [AdapterKind::KronLora, AdapterKind::Lora] {
        let mut model = BertModel::load(&dir, &Device::Cpu).unwrap();
        assert_eq!(attach_adapter(&mut model, "default", &plan(kind, TargetModules::AllLinear)).unwrap(), 12);
        assert_eq!(embed(&model), want, "{kind:?}: ΔW = 0 must give the base outputs exactly");
    }
}

#[test]
fn trained_adapters_equal_the_merged_weights() {
    let dir = temp_dir("merged");
    let tensors = tiny_bert_tensors(2);
    write_model(&dir, &tensors, CONFIG);
    for kind in [AdapterKind::KronLora, AdapterKind::Lora] {
        let mut model = BertModel::load(&dir, &Device::Cpu).unwrap();
        attach_adapter(
            &mut model,
            "a",
            &plan(kind, TargetModules::Names(vec!["query".into(), "value".into(), "output.dense".into()])),
        )
        .unwrap();
        randomise_adapters(&model, 11);
        // Write a second model whose weights are W + ΔW and load it without adapters.
        let mut merged = tensors.clone();
        for p in model.projections() {
            for (_, adapter) in p.adapters() {
                let key = format!("{}.weight", p.name);
                let w = (&merged[&key] + adapter.delta_weight().unwrap()).unwrap();
                merged.insert(key, w);
            }
        }
        let merged_dir = temp_dir(&format!("merged-{kind:?}"));
        write_model(&merged_dir, &merged, CONFIG);
        let want = embed(&BertModel::load(&merged_dir, &Device::Cpu).unwrap());
        let got = embed(&model);
        let diff = got.iter().flatten().zip(want.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-4, "{kind:?}: adapter outputs differ from merged weights by {diff}");
        assert_ne!(got, embed(&BertModel::load(&dir, &Device::Cpu).unwrap()), "the adapters must change the outputs");
    }
}

#[test]
fn gradients_reach_every_adapter_in_every_layer() {
    let dir = temp_dir("grads");
    write_model(&dir, &tiny_bert_tensors(3), CONFIG);
    for kind in [AdapterKind::KronLora, AdapterKind::Lora] {
        let mut model = BertModel::load(&dir, &Device::Cpu).unwrap();
        attach_adapter(&mut model, "a", &plan(kind, TargetModules::AllLinear)).unwrap();
        // Fresh adapters: the zero factor gets a gradient, the other one does not yet (ΔW = 0
        // blocks it), so give the zero factor values first, as after one optimiser step.
        randomise_adapters(&model, 5);
        let (ids, mask) = inputs();
        let pooled = mean_pool(&model.forward(&ids, Some(&mask), None).unwrap(), &mask).unwrap();
        let weights = tensor(&mut Lcg::new(9), &[2, 16], 1.0);
        let grads = (pooled * weights).unwrap().sum_all().unwrap().backward().unwrap();
        let mut checked = 0;
        for p in model.projections() {
            for (_, adapter) in p.adapters() {
                for (name, var) in adapter.parameters() {
                    let g =
                        grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{kind:?} {}.{name}: no gradient", p.name));
                    let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                    assert!(norm > 0.0, "{kind:?} {}.{name}: zero gradient", p.name);
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 12 * if kind == AdapterKind::KronLora { 3 } else { 2 });
    }
}

#[test]
fn bad_files_name_the_file_and_the_tensor() {
    let tensors = tiny_bert_tensors(4);
    let msg = |dir: &Path| BertModel::load(dir, &Device::Cpu).err().expect("load must fail").to_string();

    let dir = temp_dir("missing");
    let mut t = tensors.clone();
    t.remove("encoder.layer.1.attention.self.key.weight");
    write_model(&dir, &t, CONFIG);
    let m = msg(&dir);
    assert!(
        m.contains("model.safetensors")
            && m.contains("encoder.layer.1.attention.self.key.weight")
            && m.contains("missing"),
        "{m}"
    );

    let dir = temp_dir("shape");
    let mut t = tensors.clone();
    t.insert(
        "encoder.layer.0.intermediate.dense.weight".into(),
        Tensor::zeros((31, 16), DType::F32, &Device::Cpu).unwrap(),
    );
    write_model(&dir, &t, CONFIG);
    assert!(msg(&dir).contains("has shape [31, 16], but config.json implies [32, 16]"), "{}", msg(&dir));

    let dir = temp_dir("config");
    write_model(&dir, &tensors, &CONFIG.replace("\"hidden_size\":16", "\"hidden_size\":32"));
    assert!(
        msg(&dir).contains("attention.self.query.weight` has shape [16, 16], but config.json implies [32, 32]"),
        "{}",
        msg(&dir)
    );

    let dir = temp_dir("truncated");
    write_model(&dir, &tensors, CONFIG);
    let file = dir.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    assert!(msg(&dir).contains("not a valid safetensors file"), "{}", msg(&dir));

    let dir = temp_dir("arch");
    write_model(&dir, &tensors, &CONFIG.replace("\"bert\"", "\"gpt2\""));
    assert!(msg(&dir).contains("config.json: `model_type` = \"gpt2\""), "{}", msg(&dir));

    let dir = temp_dir("empty");
    std::fs::create_dir_all(&dir).unwrap();
    assert!(msg(&dir).contains("config.json: cannot read"), "{}", msg(&dir));
}

#[test]
fn bad_target_specs_are_errors() {
    let dir = temp_dir("targets");
    write_model(&dir, &tiny_bert_tensors(5), CONFIG);
    let mut model = BertModel::load(&dir, &Device::Cpu).unwrap();
    let err =
        attach_adapter(&mut model, "a", &plan(AdapterKind::KronLora, TargetModules::Names(vec!["q_proj".into()])))
            .unwrap_err();
    assert!(err.to_string().contains("dense, key, query, value"), "{err}");
    // kronOut = 3 does not divide 16: an error naming the layer, and the model is unchanged.
    let mut bad = plan(AdapterKind::KronLora, TargetModules::AllLinear);
    bad.config.kron_out = Some(3);
    let err = attach_adapter(&mut model, "a", &bad).unwrap_err();
    assert!(err.to_string().contains("encoder.layer.0.attention.self.query"), "{err}");
    assert!(model.projections().iter().all(|p| p.adapters().count() == 0));
    attach_adapter(&mut model, "a", &plan(AdapterKind::KronLora, TargetModules::AllLinear)).unwrap();
    assert!(
        attach_adapter(&mut model, "a", &plan(AdapterKind::Lora, TargetModules::AllLinear)).is_err(),
        "duplicate adapter name"
    );
}

#[test]
fn sharded_checkpoints_load_like_single_files() {
    let tensors = tiny_bert_tensors(6);
    let single = temp_dir("single");
    write_model(&single, &tensors, CONFIG);
    let sharded = temp_dir("sharded");
    std::fs::create_dir_all(&sharded).unwrap();
    std::fs::write(sharded.join("config.json"), CONFIG).unwrap();
    let (mut a, mut b) = (HashMap::new(), HashMap::new());
    let mut weight_map = serde_json::Map::new();
    for (i, (name, t)) in tensors.iter().enumerate() {
        let (shard, file) = if i % 2 == 0 {
            (&mut a, "model-00001-of-00002.safetensors")
        } else {
            (&mut b, "model-00002-of-00002.safetensors")
        };
        shard.insert(name.clone(), t.clone());
        weight_map.insert(name.clone(), serde_json::Value::String(file.into()));
    }
    candle_core::safetensors::save(&a, sharded.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&b, sharded.join("model-00002-of-00002.safetensors")).unwrap();
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(sharded.join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert_eq!(
        embed(&BertModel::load(&sharded, &Device::Cpu).unwrap()),
        embed(&BertModel::load(&single, &Device::Cpu).unwrap())
    );
    // A shard listed in the index but absent is named.
    std::fs::remove_file(sharded.join("model-00002-of-00002.safetensors")).unwrap();
    let err = BertModel::load(&sharded, &Device::Cpu).err().unwrap().to_string();
    assert!(
        err.contains("model.safetensors.index.json") && err.contains("model-00002-of-00002.safetensors is missing"),
        "{err}"
    );
}

#[test]
fn distilbert_checkpoints_compute_the_same_encoder() {
    // A BERT model whose token-type embeddings are zero equals the DistilBERT model with the
    // same weights under DistilBERT's names (stored with the `distilbert.` prefix of task models).
    let mut tensors = tiny_bert_tensors(7);
    tensors.insert(
        "embeddings.token_type_embeddings.weight".into(),
        Tensor::zeros((2, 16), DType::F32, &Device::Cpu).unwrap(),
    );
    let bert_dir = temp_dir("bert-for-distil");
    write_model(&bert_dir, &tensors, CONFIG);
    let renames = [
        ("attention.self.query", "attention.q_lin"),
        ("attention.self.key", "attention.k_lin"),
        ("attention.self.value", "attention.v_lin"),
        ("attention.output.dense", "attention.out_lin"),
        ("attention.output.LayerNorm", "sa_layer_norm"),
        ("intermediate.dense", "ffn.lin1"),
        ("output.dense", "ffn.lin2"),
        ("output.LayerNorm", "output_layer_norm"),
    ];
    let mut distil: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in &tensors {
        if name.contains("token_type") {
            continue;
        }
        let mut n = name.replace("encoder.layer.", "transformer.layer.");
        if let Some((from, to)) = renames.iter().find(|(from, _)| n.contains(&format!(".{from}."))) {
            n = n.replace(&format!(".{from}."), &format!(".{to}."));
        }
        distil.insert(format!("distilbert.{n}"), t.clone());
    }
    distil.insert("pre_classifier.weight".into(), tensor(&mut Lcg::new(8), &[16, 16], 0.3));
    distil.insert("pre_classifier.bias".into(), Tensor::zeros(16, DType::F32, &Device::Cpu).unwrap());
    distil.insert("classifier.weight".into(), tensor(&mut Lcg::new(9), &[2, 16], 0.3));
    distil.insert("classifier.bias".into(), Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap());
    let distil_dir = temp_dir("distil");
    let config = r#"{"model_type":"distilbert","vocab_size":50,"dim":16,"n_layers":2,"n_heads":4,"hidden_dim":32,
      "max_position_embeddings":24,"activation":"gelu"}"#;
    write_model(&distil_dir, &distil, config);
    let d = BertModel::load(&distil_dir, &Device::Cpu).unwrap();
    assert!(d.projections().iter().any(|p| p.name == "transformer.layer.1.ffn.lin2"));
    let (a, b) = (embed(&BertModel::load(&bert_dir, &Device::Cpu).unwrap()), embed(&d));
    let diff = a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-6, "BERT and DistilBERT differ by {diff}");
    // PEFT-style short names work for DistilBERT too.
    let mut d = d;
    let plan = AdapterPlan {
        targets: TargetModules::Names(vec!["q_lin".into(), "lin1".into()]),
        ..plan(AdapterKind::Lora, TargetModules::AllLinear)
    };
    assert_eq!(attach_adapter(&mut d, "a", &plan).unwrap(), 4);
    // The task model: pre_classifier (ReLU) + classifier, read from the checkpoint.
    let tokenizer = r#"{"version":"1.0","model":{"type":"WordLevel","vocab":{"[UNK]":0,"a":1,"b":2},"unk_token":"[UNK]"},
      "pre_tokenizer":{"type":"Whitespace"}}"#;
    std::fs::write(distil_dir.join("tokenizer.json"), tokenizer).unwrap();
    let m = api::load_model(
        kronlora_core::io::ModelSource::Path(distil_dir.clone()),
        r#"{"task":"sequence-classification","numLabels":2}"#,
    )
    .unwrap();
    assert_eq!(m.parameter_report().head, 16 * 16 + 16 + 2 * 16 + 2);
    let names: Vec<&str> = m.head.as_ref().unwrap().parameters().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["pre_classifier.weight", "pre_classifier.bias", "classifier.weight", "classifier.bias"]);
    let out = m.classify(&["a b".to_string()]).unwrap();
    assert!((out[0].scores.iter().sum::<f32>() - 1.0).abs() < 1e-6);
}
