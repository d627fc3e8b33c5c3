//! `exportAdapter`: a Kron-LoRA adapter exported as the plain LoRA it is (PEFT layout) loads
//! back with the same outputs; a GGUF LoRA file, applied as llama.cpp applies it (W + alpha /
//! rank · B·A on its permuted Q/K rows) to the GGUF base, gives the adapted model's logits.

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use kronlora_core::api;
use kronlora_core::io::{FsStorage, ModelSource};
use kronlora_core::pretrained::PretrainedModel;

use crate::reference::Lcg;
use crate::tiny::llama::{temp_dir, tensors, write_gguf};
use crate::tiny::tiny_classifier;

fn classifier(dir: &Path) -> PretrainedModel {
    tiny_classifier(dir, 3, 3)
}

/// Every adapter parameter (and head) set to random values, as after training.
fn randomise(model: &PretrainedModel, seed: u64) {
    let mut rng = Lcg::new(seed);
    for var in model.trainable_variables() {
        let v: Vec<f32> = rng.vec(var.elem_count()).into_iter().map(|x| x * 0.3).collect();
        var.set(&Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap()).unwrap();
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn texts() -> Vec<String> {
    ["a b c", "c c a b", "b"].map(String::from).to_vec()
}

#[test]
fn kron_lora_exported_as_peft_lora_is_the_same_adapter() {
    let dir = temp_dir("export-peft");
    let mut model = classifier(&dir.join("model"));
    // Query modules get d_A1 = 4: rank 4·r there, 2·r elsewhere (a rank_pattern entry).
    let options = r#"{"type":"kron-lora","rank":2,"alpha":6,"kronIn":2,"kronOut":4,"targetModules":"all-linear",
        "kronInPattern":{"query":4},"useRslora":true,"seed":2}"#;
    api::add_adapter(&mut model, "k", options).unwrap();
    randomise(&model, 7);
    let (want, _) = model.logits(&texts()).unwrap();
    let out = dir.join("exported");
    let out = out.to_str().unwrap();
    api::export_adapter(&model, &FsStorage, out, r#"{"format":"peft-lora"}"#).unwrap();

    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(out).join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!((config["r"].as_u64(), config["lora_alpha"].as_f64()), (Some(4), Some(4.0)), "{config}");
    assert_eq!(config["use_rslora"], false, "the exported scale is alpha / r = 1, without rsLoRA's √r");
    let ranks = config["rank_pattern"].as_object().unwrap();
    assert_eq!(ranks.len(), 2, "the two query modules: {config}");
    assert!(ranks.iter().all(|(k, v)| k.ends_with("attention.self.query") && v == 8), "{config}");
    assert!(config["alpha_pattern"].as_object().unwrap().values().all(|v| v == 8.0), "{config}");
    assert_eq!(config["modules_to_save"], serde_json::json!(["pooler", "classifier"]));

    let mut back = classifier(&dir.join("model-back"));
    assert_eq!(api::load_adapter(&mut back, &FsStorage, out, "{}").unwrap(), 12);
    let (got, _) = back.logits(&texts()).unwrap();
    let d = max_diff(&got, &want);
    assert!(d < 1e-5, "the exported LoRA's logits differ from the Kron-LoRA model's by {d}");
    // A LoRA adapter exports as itself.
    let mut lora = classifier(&dir.join("model-lora"));
    api::add_adapter(&mut lora, "l", r#"{"type":"lora","rank":3,"alpha":5,"targetModules":["value"]}"#).unwrap();
    randomise(&lora, 8);
    let out = dir.join("exported-lora");
    api::export_adapter(&lora, &FsStorage, out.to_str().unwrap(), r#"{"format":"peft-lora","name":"l"}"#).unwrap();
    assert_eq!(std::fs::read(out.join("adapter_model.safetensors")).unwrap(), lora.adapter_files(None).unwrap()[0].1);
}

/// What llama.cpp computes for a GGUF base plus a GGUF LoRA at scale 1: each adapted weight
/// `W + alpha / rank · lora_b · lora_a`, on the tensors as the files store them.
fn apply_like_llama_cpp(base: &Path, lora: &Path, out: &Path) {
    let read = |p: &Path| {
        let mut f = std::fs::File::open(p).unwrap();
        let c = gguf_file::Content::read(&mut f).unwrap();
        (c, f)
    };
    let (base_c, mut base_f) = read(base);
    let (lora_c, mut lora_f) = read(lora);
    assert_eq!(lora_c.metadata["general.type"].to_string().unwrap(), "adapter");
    assert_eq!(lora_c.metadata["adapter.type"].to_string().unwrap(), "lora");
    let arch = |c: &gguf_file::Content| c.metadata["general.architecture"].to_string().unwrap().clone();
    assert_eq!(arch(&lora_c), arch(&base_c));
    let alpha = lora_c.metadata["adapter.lora.alpha"].to_f32().unwrap() as f64;
    let mut tensors = Vec::new();
    let mut used = 0;
    for name in base_c.tensor_infos.keys() {
        let mut w = base_c.tensor(&mut base_f, name, &Device::Cpu).unwrap().dequantize(&Device::Cpu).unwrap();
        if lora_c.tensor_infos.contains_key(&format!("{name}.lora_a")) {
            let mut t = |s: &str| lora_c.tensor(&mut lora_f, &format!("{name}.{s}"), &Device::Cpu).unwrap();
            let (a, b) = (t("lora_a").dequantize(&Device::Cpu).unwrap(), t("lora_b").dequantize(&Device::Cpu).unwrap());
            let rank = a.dim(0).unwrap() as f64;
            w = (w + b.matmul(&a).unwrap().affine(alpha / rank, 0.0).unwrap()).unwrap();
            used += 2;
        }
        tensors.push((
            name.clone(),
            candle_core::quantized::QTensor::quantize(&w, candle_core::quantized::GgmlDType::F32).unwrap(),
        ));
    }
    assert_eq!(used, lora_c.tensor_infos.len(), "every LoRA tensor names a tensor of the base");
    let meta: Vec<(&str, &gguf_file::Value)> = base_c.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &candle_core::quantized::QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    gguf_file::write(&mut std::fs::File::create(out).unwrap(), &meta, &refs).unwrap();
}

fn last_logits(model: &PretrainedModel, ids: &[u32]) -> Vec<f32> {
    let ids = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    model.backbone.forward(&ids, None, None).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn gguf_lora_applied_as_llama_cpp_does_equals_the_adapted_model() {
    let ids = [5u32, 77, 102, 33, 260, 9];
    let dir = temp_dir("export-gguf");
    let base = dir.join("base.gguf");
    write_gguf(&base, &tensors(11, false));
    for (kind, options) in [
        (
            "kron-lora",
            r#"{"type":"kron-lora","rank":2,"alpha":6,"kronIn":2,"kronOut":4,"targetModules":"all-linear","kronInPattern":{"k_proj":4}}"#,
        ),
        (
            "lora",
            r#"{"type":"lora","rank":3,"alpha":5,"targetModules":"all-linear","rankPattern":{"v_proj":2},"useRslora":true}"#,
        ),
    ] {
        let mut model = api::load_model(ModelSource::Path(base.clone()), "{}").unwrap();
        api::add_adapter(&mut model, kind, options).unwrap();
        randomise(&model, 12);
        let want = last_logits(&model, &ids);
        let lora = dir.join(format!("{kind}.gguf"));
        api::export_adapter(&model, &FsStorage, lora.to_str().unwrap(), r#"{"format":"gguf-lora"}"#).unwrap();
        let merged = dir.join(format!("merged-{kind}.gguf"));
        apply_like_llama_cpp(&base, &lora, &merged);
        let merged = api::load_model(ModelSource::Path(merged), "{}").unwrap();
        let d = max_diff(&last_logits(&merged, &ids), &want);
        assert!(d < 1e-4, "{kind}: the GGUF LoRA, applied as llama.cpp applies it, differs by {d}");
        // Exported again over its own file: replaced. Over a file kronlora did not write: refused.
        api::export_adapter(&model, &FsStorage, lora.to_str().unwrap(), r#"{"format":"gguf-lora"}"#).unwrap();
        let err = api::export_adapter(&model, &FsStorage, base.to_str().unwrap(), r#"{"format":"gguf-lora"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a GGUF LoRA file kronlora wrote"), "{err}");
    }
    assert!(std::fs::read(&base).unwrap().len() > 1000, "the base is untouched");
}

#[test]
fn export_options_and_models_are_checked() {
    let dir = temp_dir("export-checks");
    let mut model = classifier(&dir.join("model"));
    let out = dir.join("out");
    let out = out.to_str().unwrap();
    let err = |m: &PretrainedModel, o: &str| api::export_adapter(m, &FsStorage, out, o).unwrap_err().to_string();
    assert!(err(&model, r#"{"format":"peft-lora"}"#).contains("no adapter"));
    api::add_adapter(&mut model, "k", r#"{"type":"kron-lora","rank":2,"alpha":4,"targetModules":"all-linear"}"#)
        .unwrap();
    assert!(err(&model, "{}").contains("`format` is required"));
    assert!(err(&model, r#"{"format":"onnx"}"#).contains(r#"must be "peft-lora" or "gguf-lora""#));
    assert!(err(&model, r#"{"format":"peft-lora","nam":"k"}"#).contains("unknown field"));
    assert!(err(&model, r#"{"format":"peft-lora","name":"x"}"#).contains("no adapter named `x`"));
    let e = err(&model, r#"{"format":"gguf-lora"}"#);
    assert!(e.contains("Llama-family") && e.contains("peft-lora"), "{e}");
    assert!(!Path::new(out).exists(), "nothing written by a refused export");
}

#[test]
fn a_merged_gguf_is_the_adapted_model_and_copies_the_rest_unchanged() {
    let ids = [5u32, 77, 102, 33, 260, 9];
    let dir = temp_dir("export-merged");
    let base = dir.join("base.gguf");
    write_gguf(&base, &tensors(13, false));
    let mut model = api::load_model(ModelSource::Path(base.clone()), "{}").unwrap();
    api::add_adapter(&mut model, "a", r#"{"type":"kron-lora","rank":2,"alpha":6,"targetModules":"all-linear"}"#)
        .unwrap();
    api::add_adapter(&mut model, "b", r#"{"type":"lora","rank":3,"alpha":5,"targetModules":["q_proj","k_proj"]}"#)
        .unwrap();
    randomise(&model, 14);
    api::set_active_adapters(&mut model, r#"{"adapters":["a","b"],"weights":[0.5,1.5]}"#).unwrap();
    let want = last_logits(&model, &ids);
    let out = dir.join("merged.gguf");
    api::save_merged(&model, &FsStorage, out.to_str().unwrap()).unwrap();
    let merged = api::load_model(ModelSource::Path(out.clone()), "{}").unwrap();
    let d = max_diff(&last_logits(&merged, &ids), &want);
    assert!(d < 1e-4, "the merged GGUF differs from the adapted model by {d}");
    // Unadapted tensors are the base's, byte for byte; the file replaces only its own kind.
    let (mut b, mut m) = (GgufFileRead::open(&base), GgufFileRead::open(&out));
    for name in ["token_embd.weight", "output_norm.weight", "blk.1.attn_norm.weight"] {
        assert_eq!(b.bytes(name), m.bytes(name), "{name}");
    }
    api::save_merged(&model, &FsStorage, out.to_str().unwrap()).unwrap();
    let err = api::save_merged(&model, &FsStorage, base.to_str().unwrap()).unwrap_err().to_string();
    assert!(err.contains("not a merged GGUF file kronlora wrote"), "{err}");
    assert!(api::save_merged(&model, &FsStorage, dir.join("m.bin").to_str().unwrap()).is_err());
    api::set_active_adapters(&mut model, r#"{"adapters":[]}"#).unwrap();
    assert!(api::save_merged(&model, &FsStorage, out.to_str().unwrap())
        .unwrap_err()
        .to_string()
        .contains("no adapter is active"));
    let classifier = classifier(&dir.join("bert"));
    let err = api::save_merged(&classifier, &FsStorage, out.to_str().unwrap()).unwrap_err();
    assert_eq!(err.code(), "ERR_INVALID_OPTION");
}

/// A safetensors file's tensors as stored: name → (dtype, shape, bytes).
fn stored_tensors(path: &Path) -> std::collections::HashMap<String, (String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(n, v)| (n, (format!("{:?}", v.dtype()), v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_merged_hugging_face_classifier_directory_is_the_adapted_model() {
    let dir = temp_dir("export-merged-hf-bert");
    let base = dir.join("model");
    let mut model = classifier(&base);
    api::add_adapter(&mut model, "a", r#"{"type":"kron-lora","rank":2,"alpha":6,"targetModules":"all-linear"}"#)
        .unwrap();
    api::add_adapter(&mut model, "b", r#"{"type":"lora","rank":3,"alpha":5,"targetModules":["query","value"]}"#)
        .unwrap();
    randomise(&model, 21);
    api::set_active_adapters(&mut model, r#"{"adapters":["a","b"],"weights":[0.5,1.5]}"#).unwrap();
    model.labels.names = ["neg", "neu", "pos"].map(String::from).to_vec();
    let (want, _) = model.logits(&texts()).unwrap();
    let out = dir.join("merged");
    api::save_merged(&model, &FsStorage, out.to_str().unwrap()).unwrap();

    let merged =
        api::load_model(ModelSource::Path(out.clone()), r#"{"task":"sequence-classification","numLabels":3}"#).unwrap();
    assert!(merged.adapter_infos().is_empty());
    assert_eq!(merged.labels.names, ["neg", "neu", "pos"], "its class names come back from config.json");
    let (got, _) = merged.logits(&texts()).unwrap();
    let d = max_diff(&got, &want);
    assert!(d < 1e-5, "the merged directory's logits differ from the adapted model's by {d}");
    // transformers' task class, labels and kronlora's marker; the tokenizer copied as it was.
    let config = json_file(&out.join("config.json"));
    assert_eq!(config["architectures"], serde_json::json!(["BertForSequenceClassification"]));
    assert_eq!(
        (&config["id2label"]["2"], &config["label2id"]["neg"]),
        (&serde_json::json!("pos"), &serde_json::json!(0))
    );
    assert_eq!(config["kronlora"]["merged_adapters"][1], serde_json::json!({ "name": "b", "weight": 1.5 }));
    assert_eq!(config["hidden_size"], json_file(&base.join("config.json"))["hidden_size"]);
    assert_eq!(std::fs::read(out.join("tokenizer.json")).unwrap(), std::fs::read(base.join("tokenizer.json")).unwrap());
    // Names of BertForSequenceClassification; unadapted tensors byte for byte, merged ones in f32.
    let (before, after) =
        (stored_tensors(&base.join("model.safetensors")), stored_tensors(&out.join("model.safetensors")));
    assert!(after.keys().all(|n| n.starts_with("bert.") || n.starts_with("classifier.")), "{:?}", after.keys());
    assert!(after.contains_key("bert.pooler.dense.weight") && after.contains_key("classifier.bias"));
    let word = "embeddings.word_embeddings.weight";
    assert_eq!(after[&format!("bert.{word}")], before[word]);
    let query = "encoder.layer.1.attention.self.query.weight";
    assert_eq!(
        (after[&format!("bert.{query}")].0.as_str(), &after[&format!("bert.{query}")].1),
        ("F32", &before[query].1)
    );
    assert_ne!(after[&format!("bert.{query}")].2, before[query].2);

    // Its own directory is replaced; the base's is refused and left as it was.
    api::save_merged(&model, &FsStorage, out.to_str().unwrap()).unwrap();
    let weights = std::fs::read(base.join("model.safetensors")).unwrap();
    let err = api::save_merged(&model, &FsStorage, base.to_str().unwrap()).unwrap_err();
    assert_eq!(err.code(), "ERR_WOULD_OVERWRITE", "{err}");
    assert_eq!(std::fs::read(base.join("model.safetensors")).unwrap(), weights);
    let err = api::save_merged(&model, &FsStorage, dir.join("m.gguf").to_str().unwrap()).unwrap_err();
    assert!(err.to_string().contains("pass a directory path"), "{err}");
}

#[test]
fn a_merged_hugging_face_llama_directory_is_the_adapted_model() {
    let ids = [5u32, 77, 102, 33, 260, 9];
    let dir = temp_dir("export-merged-hf-llama");
    let base = dir.join("base");
    std::fs::create_dir_all(&base).unwrap();
    crate::tiny::llama::write_hf_dir(&base, &tensors(15, false), false);
    std::fs::write(base.join("tokenizer.json"), crate::tiny::WORD_TOKENIZER).unwrap();
    let mut model = api::load_model(ModelSource::Path(base.clone()), "{}").unwrap();
    api::add_adapter(&mut model, "a", r#"{"type":"kron-lora","rank":2,"alpha":6,"targetModules":"all-linear"}"#)
        .unwrap();
    api::add_adapter(&mut model, "b", r#"{"type":"lora","rank":2,"alpha":4,"targetModules":["lm_head","k_proj"]}"#)
        .unwrap();
    randomise(&model, 16);
    api::set_active_adapters(&mut model, r#"{"adapters":["a","b"]}"#).unwrap();
    let want = last_logits(&model, &ids);
    let out = dir.join("merged");
    api::save_merged(&model, &FsStorage, out.to_str().unwrap()).unwrap();
    let merged = api::load_model(ModelSource::Path(out.clone()), "{}").unwrap();
    let d = max_diff(&last_logits(&merged, &ids), &want);
    assert!(d < 1e-4, "the merged directory's logits differ from the adapted model's by {d}");
    // Same names as the base (a causal LM has no task prefix), config as it was plus the marker.
    let (before, after) =
        (stored_tensors(&base.join("model.safetensors")), stored_tensors(&out.join("model.safetensors")));
    let mut names: Vec<&String> = after.keys().collect();
    let mut base_names: Vec<&String> = before.keys().collect();
    names.sort();
    base_names.sort();
    assert_eq!(names, base_names);
    assert_eq!(after["model.norm.weight"], before["model.norm.weight"]);
    assert_ne!(after["lm_head.weight"].2, before["lm_head.weight"].2);
    let mut config = json_file(&out.join("config.json"));
    config.as_object_mut().unwrap().remove("kronlora");
    assert_eq!(config, json_file(&base.join("config.json")));
    // A GGUF base is merged into a GGUF file only.
    let gguf = dir.join("base.gguf");
    write_gguf(&gguf, &tensors(15, false));
    let mut model = api::load_model(ModelSource::Path(gguf), "{}").unwrap();
    api::add_adapter(&mut model, "a", r#"{"type":"lora","rank":2,"alpha":4,"targetModules":["q_proj"]}"#).unwrap();
    let err = api::save_merged(&model, &FsStorage, dir.join("gguf-merged").to_str().unwrap()).unwrap_err();
    assert!(err.to_string().contains("pass a path ending in .gguf"), "{err}");
    assert!(!dir.join("gguf-merged").exists());
}

/// A GGUF file's tensors as stored.
struct GgufFileRead(gguf_file::Content, std::fs::File);

impl GgufFileRead {
    fn open(p: &Path) -> Self {
        let mut f = std::fs::File::open(p).unwrap();
        GgufFileRead(gguf_file::Content::read(&mut f).unwrap(), f)
    }
    fn bytes(&mut self, name: &str) -> Vec<u8> {
        self.0.tensor(&mut self.1, name, &Device::Cpu).unwrap().data().unwrap().to_vec()
    }
}

#[test]
fn lycoris_and_gguf_lora_files_load_back_as_the_same_adapters() {
    let ids = [5u32, 77, 102, 33, 260, 9];
    let dir = temp_dir("export-roundtrip");
    let base = dir.join("base.gguf");
    write_gguf(&base, &tensors(15, false));
    let load = || api::load_model(ModelSource::Path(base.clone()), "{}").unwrap();
    // LyCORIS rebuilds LoKr shapes from one factor: d_A1 = d_A2 = 4 is written as LoKr, the
    // default 2 × 4 as the exact LoRA it is; LoRA as LoRA.
    for (kind, lokr, options) in [
        (
            "kron-lora-4x4",
            true,
            r#"{"type":"kron-lora","rank":2,"alpha":6,"kronIn":4,"kronOut":4,"targetModules":"all-linear","useRslora":true}"#,
        ),
        (
            "kron-lora-2x4",
            false,
            r#"{"type":"kron-lora","rank":2,"alpha":6,"kronIn":2,"kronOut":4,"targetModules":"all-linear"}"#,
        ),
        ("lora", false, r#"{"type":"lora","rank":3,"alpha":5,"targetModules":["q_proj","k_proj","down_proj"]}"#),
    ] {
        let mut model = load();
        api::add_adapter(&mut model, "x", options).unwrap();
        randomise(&model, 16);
        let want = last_logits(&model, &ids);
        let assert_same = |file: &Path, what: &str| {
            let mut back = load();
            let modules = api::load_adapter(&mut back, &FsStorage, file.to_str().unwrap(), r#"{"name":"y"}"#).unwrap();
            assert_eq!(modules, model.adapters().len(), "{kind} {what}");
            let d = max_diff(&last_logits(&back, &ids), &want);
            assert!(d < 1e-5, "{kind} {what}: loaded back, the logits differ by {d}");
        };
        let lycoris = dir.join(format!("{kind}.safetensors"));
        api::export_adapter(&model, &FsStorage, lycoris.to_str().unwrap(), r#"{"format":"lycoris"}"#).unwrap();
        let keys = candle_core::safetensors::load(&lycoris, &Device::Cpu).unwrap();
        let q = "lycoris_model_layers_0_self_attn_q_proj";
        let parts: &[&str] =
            if lokr { &["lokr_w1", "lokr_w2_a", "lokr_w2_b"] } else { &["lora_down.weight", "lora_up.weight"] };
        for p in parts.iter().chain(&["alpha"]) {
            assert!(
                keys.contains_key(&format!("{q}.{p}")),
                "{kind}: `{q}.{p}` in {:?}",
                keys.keys().collect::<Vec<_>>()
            );
        }
        assert_eq!(keys[&format!("{q}.alpha")].dims(), &[] as &[usize], "alpha is a scalar");
        assert_same(&lycoris, "LyCORIS");
        let gguf = dir.join(format!("{kind}-lora.gguf"));
        api::export_adapter(&model, &FsStorage, gguf.to_str().unwrap(), r#"{"format":"gguf-lora"}"#).unwrap();
        assert_same(&gguf, "GGUF LoRA");
    }
    // Files that are not such adapters, or not for this model, are refused by name.
    let mut model = load();
    let err = |m: &mut PretrainedModel, p: &Path| {
        api::load_adapter(m, &FsStorage, p.to_str().unwrap(), "{}").unwrap_err().to_string()
    };
    assert!(err(&mut model, &base).contains("not a GGUF LoRA adapter"));
    let odd = dir.join("odd.safetensors");
    candle_core::safetensors::save(
        &[(
            "lycoris_model_layers_0_self_attn_q_proj.lokr_w2".to_string(),
            Tensor::zeros((4, 4), candle_core::DType::F32, &Device::Cpu).unwrap(),
        )]
        .into_iter()
        .collect(),
        &odd,
    )
    .unwrap();
    assert!(err(&mut model, &odd).contains("kronlora reads LoKr"), "{}", err(&mut model, &odd));
    let other = dir.join("other.safetensors");
    candle_core::safetensors::save(
        &[(
            "lycoris_encoder_layer_0_query.alpha".to_string(),
            Tensor::ones((), candle_core::DType::F32, &Device::Cpu).unwrap(),
        )]
        .into_iter()
        .collect(),
        &other,
    )
    .unwrap();
    assert!(err(&mut model, &other).contains("not a projection of this model"));
    assert!(model.adapter_infos().is_empty(), "refused files add nothing");
}
