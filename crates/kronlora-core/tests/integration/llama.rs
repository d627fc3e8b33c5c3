//! Llama-family decoders on tiny models generated here: a Hugging Face directory and a GGUF
//! file (written with candle's GGUF writer, Q/K permuted as llama.cpp stores them) of the same
//! random weights must give the same logits; adapters behave as in the BERT tests.

use kronlora_core::api;
use kronlora_core::models::{attach_adapter, Backbone};
use std::sync::Arc;

use crate::reference::Lcg;
use candle_core::{Device, Tensor};
use kronlora_core::io::{GgufFile, ModelSource};
use kronlora_core::models::llama::LlamaModel;
use kronlora_core::models::KvCache;
use kronlora_core::models::{AdapterPlan, TargetModules};
use kronlora_core::pretrained::GenerateOptions;
use kronlora_core::{AdapterConfig, AdapterKind};

use crate::tiny::llama::*;

fn logits(model: &LlamaModel, ids: &[u32]) -> Vec<f32> {
    let t = ids.len();
    model
        .forward(&Tensor::new(ids, &Device::Cpu).unwrap().reshape((1, t)).unwrap(), None, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

const IDS: [u32; 6] = [5, 77, 102, 33, 260, 9];

#[test]
fn gguf_and_hf_directory_of_the_same_weights_agree() {
    for tied in [false, true] {
        let t = tensors(1, tied);
        let dir = temp_dir(&format!("agree-{tied}"));
        write_hf_dir(&dir, &t, tied);
        let gguf = dir.join("tiny.gguf");
        write_gguf(&gguf, &t);
        let hf = LlamaModel::load(&dir, &Device::Cpu).unwrap();
        let gg = LlamaModel::load_gguf(Arc::new(GgufFile::open(&gguf).unwrap()), &Device::Cpu, false).unwrap();
        assert_eq!(gg.config.tie_word_embeddings, tied);
        let (a, b) = (logits(&hf, &IDS), logits(&gg, &IDS));
        assert!(
            max_diff(&a, &b) < 1e-5,
            "tied={tied}: GGUF (un-permuted Q/K) and HF logits differ by {}",
            max_diff(&a, &b)
        );
    }
}

#[test]
fn kv_cache_generation_equals_full_recompute() {
    let t = tensors(2, false);
    let dir = temp_dir("cache");
    write_hf_dir(&dir, &t, false);
    let model = LlamaModel::load(&dir, &Device::Cpu).unwrap();
    let full = logits(&model, &IDS);
    let mut cache = KvCache::default();
    let first = model
        .forward(&Tensor::new(&IDS[..4], &Device::Cpu).unwrap().unsqueeze(0).unwrap(), None, Some(&mut cache))
        .unwrap();
    let rest = model
        .forward(&Tensor::new(&IDS[4..], &Device::Cpu).unwrap().unsqueeze(0).unwrap(), None, Some(&mut cache))
        .unwrap();
    let stitched: Vec<f32> =
        [first, rest].iter().flat_map(|l| l.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect();
    assert!(max_diff(&full, &stitched) < 1e-5);
    assert_eq!(cache.len(), IDS.len());
}

fn plan(kind: AdapterKind) -> AdapterPlan {
    let config = AdapterConfig {
        kind,
        rank: 4,
        alpha: 8.0,
        kron_in: (kind == AdapterKind::KronLora).then_some(2),
        kron_out: (kind == AdapterKind::KronLora).then_some(4),
        use_rslora: false,
        seed: 1,
    };
    AdapterPlan { targets: TargetModules::AllLinear, config, overrides: vec![], dropout: 0.0 }
}

#[test]
fn adapters_on_a_decoder_start_neutral_train_everywhere_and_merge() {
    let t = tensors(3, false);
    let dir = temp_dir("adapters");
    write_hf_dir(&dir, &t, false);
    let base = LlamaModel::load(&dir, &Device::Cpu).unwrap();
    let want = logits(&base, &IDS);
    for kind in [AdapterKind::KronLora, AdapterKind::Lora] {
        let mut model = LlamaModel::load(&dir, &Device::Cpu).unwrap();
        // all-linear: 7 projections per layer, the lm_head excluded.
        assert_eq!(attach_adapter(&mut model, "a", &plan(kind)).unwrap(), 7 * LAYERS);
        assert_eq!(logits(&model, &IDS), want, "{kind:?}: fresh adapters must not change the logits");
        let mut rng = Lcg::new(4);
        for p in model.projections() {
            for (_, adapter) in p.adapters() {
                for (_, var) in adapter.parameters() {
                    let n = var.elem_count();
                    var.set(
                        &Tensor::from_vec(
                            rng.vec(n).into_iter().map(|x| x * 0.2).collect::<Vec<_>>(),
                            var.dims(),
                            &Device::Cpu,
                        )
                        .unwrap(),
                    )
                    .unwrap();
                }
            }
        }
        // Gradients reach every adapter parameter in every layer.
        let ids = Tensor::new(&IDS, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let out = model.forward(&ids, None, None).unwrap();
        let w = Tensor::from_vec(Lcg::new(5).vec(out.elem_count()), out.dims(), &Device::Cpu).unwrap();
        let grads = (out * w).unwrap().sum_all().unwrap().backward().unwrap();
        for p in model.projections() {
            for (_, adapter) in p.adapters() {
                for (name, var) in adapter.parameters() {
                    let g =
                        grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{kind:?} {}.{name}: no gradient", p.name));
                    assert!(
                        g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0,
                        "{kind:?} {}.{name}: zero gradient",
                        p.name
                    );
                }
            }
        }
        // Equal to the base model with W + ΔW.
        let mut merged = t.clone();
        for p in model.projections() {
            for (_, adapter) in p.adapters() {
                let entry = merged.iter_mut().find(|(n, _)| *n == format!("{}.weight", p.name)).unwrap();
                entry.1 = (&entry.1 + adapter.delta_weight().unwrap()).unwrap();
            }
        }
        let merged_dir = temp_dir(&format!("merged-{kind:?}"));
        write_hf_dir(&merged_dir, &merged, false);
        let d = max_diff(&logits(&model, &IDS), &logits(&LlamaModel::load(&merged_dir, &Device::Cpu).unwrap(), &IDS));
        assert!(d < 1e-4, "{kind:?}: adapters vs merged weights differ by {d}");
    }
}

#[test]
fn gguf_tokenizer_and_generation() {
    let dir = temp_dir("generate");
    let gguf = dir.join("tiny.gguf");
    write_gguf(&gguf, &tensors(6, true));
    let model = api::load_model(ModelSource::Path(gguf.clone()), "{}").unwrap();
    // " the" merges to one token; bytes otherwise.
    let ids = model.tokenizer.encode("a the").unwrap();
    assert_eq!(ids, vec![b'a' as u32, 258]);
    assert_eq!(model.tokenizer.decode(&ids).unwrap(), "a the");
    let options = GenerateOptions { max_tokens: 5, temperature: 0.0, seed: 0 };
    let g1 = model.generate("a the", &options).unwrap();
    assert_eq!(g1, model.generate("a the", &options).unwrap(), "greedy generation is deterministic");
    let sampled = GenerateOptions { max_tokens: 5, temperature: 1.0, seed: 9 };
    assert_eq!(
        model.generate("a the", &sampled).unwrap(),
        model.generate("a the", &sampled).unwrap(),
        "same seed, same sample"
    );
    assert_eq!(g1.prompt_tokens, 2);
    // From bytes, as the WASM backend in a browser loads it.
    let bytes = std::fs::read(&gguf).unwrap();
    let from_bytes =
        api::load_model(ModelSource::Files([("tiny.gguf".to_string(), bytes)].into_iter().collect()), "{}").unwrap();
    assert_eq!(from_bytes.generate("a the", &options).unwrap(), g1);
}

#[test]
fn bad_gguf_files_are_named() {
    let dir = temp_dir("bad");
    let gguf = dir.join("tiny.gguf");
    write_gguf(&gguf, &tensors(7, false));
    let bytes = std::fs::read(&gguf).unwrap();
    std::fs::write(&gguf, &bytes[..bytes.len() - 1000]).unwrap();
    let err = api::load_model(ModelSource::Path(gguf.clone()), "{}").err().unwrap().to_string();
    assert!(err.contains("tiny.gguf") && err.contains("truncated"), "{err}");
    std::fs::write(&gguf, b"not a gguf file at all").unwrap();
    let err = api::load_model(ModelSource::Path(gguf), "{}").err().unwrap().to_string();
    assert!(err.contains("not a valid GGUF file"), "{err}");
    let err = api::load_model(ModelSource::Path(dir.join("missing.gguf")), "{}").err().unwrap().to_string();
    assert!(err.contains("no such file or directory"), "{err}");
}

#[test]
fn qwen2_checkpoints_use_their_qkv_biases() {
    let t = tensors(8, false);
    let llama_dir = temp_dir("qwen-base");
    write_hf_dir(&llama_dir, &t, false);
    let with_bias = |scale: f32, name: &str| {
        let dir = temp_dir(name);
        let mut qt = t.clone();
        let mut rng = Lcg::new(9);
        for l in 0..LAYERS {
            for (proj, out) in
                [("q_proj", HIDDEN), ("k_proj", KV_HEADS * HIDDEN / HEADS), ("v_proj", KV_HEADS * HIDDEN / HEADS)]
            {
                let b = Tensor::from_vec(
                    rng.vec(out).into_iter().map(|x| x * scale).collect::<Vec<_>>(),
                    out,
                    &Device::Cpu,
                )
                .unwrap();
                qt.push((format!("model.layers.{l}.self_attn.{proj}.bias"), b));
            }
        }
        write_hf_dir(&dir, &qt, false);
        std::fs::write(dir.join("config.json"), config_json(false).replace("\"llama\"", "\"qwen2\"")).unwrap();
        LlamaModel::load(&dir, &Device::Cpu).unwrap()
    };
    let llama = logits(&LlamaModel::load(&llama_dir, &Device::Cpu).unwrap(), &IDS);
    assert!(max_diff(&logits(&with_bias(0.0, "qwen-zero"), &IDS), &llama) < 1e-6, "zero biases must change nothing");
    assert!(max_diff(&logits(&with_bias(0.5, "qwen-bias"), &IDS), &llama) > 1e-3, "the biases must be applied");
    // A qwen2 config whose checkpoint lacks the biases names the missing tensor.
    let dir = temp_dir("qwen-missing");
    write_hf_dir(&dir, &t, false);
    std::fs::write(dir.join("config.json"), config_json(false).replace("\"llama\"", "\"qwen2\"")).unwrap();
    let err = LlamaModel::load(&dir, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("model.layers.0.self_attn.q_proj.bias` is missing"), "{err}");
}

#[test]
fn rotary_settings_are_read_from_either_transformers_layout_and_scaled_ones_refused() {
    use kronlora_core::models::llama::LlamaConfig;
    let with = |extra: &str| config_json(false).replace(r#""rope_theta":10000.0,"#, extra);
    // transformers ≥ 5 nests the base frequency in `rope_parameters`.
    let nested = with(r#""rope_parameters":{"rope_theta":100000.0,"rope_type":"default"},"#);
    assert_eq!(LlamaConfig::from_json(nested.as_bytes(), "c.json").unwrap().rope_theta, 100000.0);
    let legacy = with(r#""rope_theta":5e5,"rope_scaling":null,"#);
    assert_eq!(LlamaConfig::from_json(legacy.as_bytes(), "c.json").unwrap().rope_theta, 500000.0);
    for scaled in [
        r#""rope_parameters":{"rope_theta":5e5,"rope_type":"llama3","factor":8.0},"#,
        r#""rope_theta":5e5,"rope_scaling":{"type":"linear","factor":2.0},"#,
    ] {
        let err = LlamaConfig::from_json(with(scaled).as_bytes(), "c.json").unwrap_err();
        assert_eq!(err.code(), "ERR_UNSUPPORTED", "{err}");
        assert!(err.to_string().contains("only the default (unscaled)"), "{err}");
    }
    let err = LlamaConfig::from_json(with(r#""rope_parameters":{"rope_theta":-1},"#).as_bytes(), "c.json").unwrap_err();
    assert!(err.to_string().contains("rope_parameters.rope_theta"), "{err}");
}

#[test]
fn a_gguf_with_scaled_rotary_embeddings_is_refused_by_name() {
    use candle_core::quantized::gguf_file::{self, Value};
    let dir = temp_dir("rope-scaling-gguf");
    let plain = dir.join("plain.gguf");
    write_gguf(&plain, &tensors(3, false));
    let mut f = std::fs::File::open(&plain).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let qtensors: Vec<(String, candle_core::quantized::QTensor)> =
        content.tensor_infos.keys().map(|n| (n.clone(), content.tensor(&mut f, n, &Device::Cpu).unwrap())).collect();
    let scaled = Value::String("yarn".into());
    let mut meta: Vec<(&str, &Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    meta.retain(|(k, _)| *k != "general.alignment");
    meta.push(("llama.rope.scaling.type", &scaled));
    let refs: Vec<(&str, &candle_core::quantized::QTensor)> = qtensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let path = dir.join("yarn.gguf");
    gguf_file::write(&mut std::fs::File::create(&path).unwrap(), &meta, &refs).unwrap();
    assert!(api::load_model(ModelSource::Path(plain), "{}").is_ok());
    let err = api::load_model(ModelSource::Path(path), "{}").err().unwrap();
    assert_eq!(err.code(), "ERR_UNSUPPORTED", "{err}");
    assert!(err.to_string().contains("scaled rotary embeddings (yarn)"), "{err}");
}
