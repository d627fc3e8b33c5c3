//! GGUF weights kept in their quantised blocks (`loadModel(gguf, { quantized: true })`, the CPU
//! default). The reference is the same file dequantised to f32 (`quantized: false`): with many
//! rows the quantised product multiplies dequantised slabs in f32, so logits, loss and every
//! adapter gradient must match it to summation-order error; with few rows (generation's steps)
//! candle's quantised kernel rounds the activations to 8 bits and is only close.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor, Var};
use kronlora_core::api;
use kronlora_core::io::ModelSource;
use kronlora_core::models::FrozenWeight;
use kronlora_core::ops::{frozen_linear, quantized_matmul, QuantizedWeight, UpdateProduct, QUANTIZED_TYPES};
use kronlora_core::pretrained::PretrainedModel;

use crate::checkpointing::{loss_and_grads, randomise};
use crate::reference::Lcg;
use crate::tiny::llama::{temp_dir, tensors_for, write_gguf_typed, LlamaDims, VOCAB};

/// Rows are multiples of 256, the K-quants' block.
const DIMS: LlamaDims =
    LlamaDims { vocab: VOCAB, hidden: 256, heads: 4, kv_heads: 2, ffn: 512, layers: 2, fan_in_scaled: true };

fn random(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = Lcg::new(seed).vec(n).into_iter().map(|x| x * scale).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// max |a - b| / max |b|.
fn relative_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "an all-zero reference tests nothing");
    a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn the_quantised_product_and_its_input_gradient_equal_the_dequantised_weights() {
    // 4200 × 256 = 1.07 M values: two dequantised slabs (4096 rows, then 104).
    let w = random(&[4200, 256], 1, 0.1);
    for dtype in QUANTIZED_TYPES {
        let blocks = QTensor::quantize(&w, dtype).unwrap();
        let dense = blocks.dequantize(&Device::Cpu).unwrap();
        let weight = QuantizedWeight::new(blocks).unwrap();
        // 40 rows: the slab path (exact up to summation order); 3: candle's quantised kernel.
        for (rows, tolerance) in [(40, 1e-5), (3, 2e-2)] {
            let x = Var::from_tensor(&random(&[2, rows / 2 + rows % 2, 256], 2, 1.0)).unwrap();
            let y = quantized_matmul(x.as_tensor(), &weight).unwrap();
            let expected = x.as_tensor().broadcast_matmul(&dense.t().unwrap()).unwrap();
            let d = relative_diff(&y, &expected);
            assert!(d <= tolerance, "{dtype:?}, {rows} rows: forward differs by {d}");
            let r = random(y.dims(), 3, 1.0);
            let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let dx = grads.get(x.as_tensor()).unwrap();
            let expected = r.broadcast_matmul(&dense).unwrap();
            let d = relative_diff(dx, &expected);
            assert!(d <= 1e-5, "{dtype:?}, {rows} rows: input gradient differs by {d}");
        }
    }
}

#[test]
fn a_quantised_frozen_linear_with_bias_and_update_matches_the_composition_with_gradients() {
    // One node: base product, bias and an adapter's update (LoRA-shaped: left [m, r], right [out, r]).
    let w = random(&[96, 64], 4, 0.2);
    let blocks = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
    let dense = blocks.dequantize(&Device::Cpu).unwrap();
    let weight = FrozenWeight::Quantized(QuantizedWeight::new(blocks).unwrap());
    let bias = random(&[96], 5, 1.0);
    for (rows, tolerance) in [(30, 1e-5), (4, 2e-2)] {
        let x = Var::from_tensor(&random(&[rows, 64], 6, 1.0)).unwrap();
        let left = Var::from_tensor(&random(&[rows, 3], 7, 1.0)).unwrap();
        let right = Var::from_tensor(&random(&[96, 3], 8, 1.0)).unwrap();
        let update = UpdateProduct { left: left.as_tensor().clone(), right: right.as_tensor().clone() };
        let y = frozen_linear(x.as_tensor(), &weight, Some(&bias), Some(&update)).unwrap();
        let composed = (x.as_tensor().matmul(&dense.t().unwrap()).unwrap().broadcast_add(&bias).unwrap()
            + left.as_tensor().matmul(&right.as_tensor().t().unwrap()).unwrap())
        .unwrap();
        let d = relative_diff(&y, &composed);
        assert!(d <= tolerance, "{rows} rows: forward differs by {d}");
        let r = random(y.dims(), 9, 1.0);
        let got = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let want = (&composed * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &left, &right] {
            let d = relative_diff(got.get(v.as_tensor()).unwrap(), want.get(v.as_tensor()).unwrap());
            assert!(d <= 1e-5, "{rows} rows: a gradient differs by {d}");
        }
    }
}

/// The model with its projections and token embeddings stored as `dtype`.
fn quantised_gguf(name: &str, dtype: GgmlDType, tied: bool) -> PathBuf {
    let path = temp_dir(&format!("quantized-{name}")).join("tiny.gguf");
    write_gguf_typed(&path, &DIMS, &tensors_for(21, &DIMS, tied), |_| dtype);
    path
}

fn load(path: &Path, options: &str) -> PretrainedModel {
    api::load_model(ModelSource::Path(path.to_path_buf()), options).unwrap()
}

fn weight_types(model: &PretrainedModel) -> Vec<String> {
    model.describe().modules.iter().map(|m| m.weight_type.clone()).collect()
}

#[test]
fn a_quantised_model_has_the_dequantised_models_loss_and_gradients_at_a_fraction_of_the_memory() {
    let names = [
        (GgmlDType::Q4_0, "Q4_0"),
        (GgmlDType::Q4_1, "Q4_1"),
        (GgmlDType::Q8_0, "Q8_0"),
        (GgmlDType::Q4K, "Q4_K"),
        (GgmlDType::Q5K, "Q5_K"),
        (GgmlDType::Q6K, "Q6_K"),
    ];
    for (i, (dtype, name)) in names.into_iter().enumerate() {
        // Tied embeddings (the quantised table is also the output head) and an untied head.
        let path = quantised_gguf(name, dtype, i % 2 == 0);
        let mut quantised = load(&path, "{}");
        let mut dense = load(&path, r#"{"quantized":false}"#);
        assert!(weight_types(&quantised).iter().all(|t| t == name), "{name}: {:?}", weight_types(&quantised));
        assert!(weight_types(&dense).iter().all(|t| t == "F32"));
        let bytes = |m: &PretrainedModel| -> usize {
            m.backbone.projections().iter().map(|p| p.frozen_weight().unwrap().size_in_bytes()).sum()
        };
        assert!(bytes(&quantised) * 3 < bytes(&dense), "{name}: {} vs {} bytes", bytes(&quantised), bytes(&dense));

        for model in [&mut quantised, &mut dense] {
            api::add_adapter(model, "k", r#"{"type":"kron-lora","rank":2,"alpha":4,"targetModules":"all-linear"}"#)
                .unwrap();
            randomise(model, 8);
        }
        // 2 × 12 = 24 rows: the training path.
        let ids = Tensor::new(
            &[[5u32, 77, 102, 33, 260, 9, 1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]],
            &Device::Cpu,
        )
        .unwrap();
        let reference = loss_and_grads(&dense, false, || dense.backbone.forward(&ids, None, None).unwrap());
        for checkpointing in [false, true] {
            let got =
                loss_and_grads(&quantised, checkpointing, || quantised.backbone.forward(&ids, None, None).unwrap());
            assert!(
                (got.0 - reference.0).abs() <= 1e-4 * reference.0.abs().max(1.0),
                "{name}: loss {} vs {}",
                got.0,
                reference.0
            );
            for (v, (a, b)) in got.1.iter().zip(&reference.1).enumerate() {
                let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
                let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(scale > 0.0 && d <= 1e-4 * scale, "{name}, variable {v}: gradients differ by {d} of {scale}");
            }
        }
        // One token (a generation step): candle's quantised kernel, close but not equal.
        let one = Tensor::new(&[[77u32]], &Device::Cpu).unwrap();
        let d = relative_diff(
            &quantised.backbone.forward(&one, None, None).unwrap(),
            &dense.backbone.forward(&one, None, None).unwrap(),
        );
        assert!(d < 5e-2, "{name}: one-token logits differ by {d}");
        let text: serde_json::Value =
            serde_json::from_str(&api::generate_json(&quantised, "the cat", r#"{"maxTokens":4}"#).unwrap()).unwrap();
        let generated = text["generatedTokens"].as_u64().unwrap();
        assert!(generated == 4 || text["stoppedAtEos"] == true, "{name}: {text}");
    }
}

#[test]
fn merging_into_a_quantised_model_is_exact_and_unmerging_restores_the_blocks() {
    let path = quantised_gguf("merge", GgmlDType::Q4_0, true);
    let mut model = load(&path, "{}");
    api::add_adapter(&mut model, "k", r#"{"type":"kron-lora","rank":2,"alpha":4,"targetModules":"all-linear"}"#)
        .unwrap();
    randomise(&model, 4);
    let texts = vec!["the cat sat on the mat and looked at the hat".to_string()];
    let (before, _) = model.logits(&texts).unwrap();
    api::merge_adapters(&mut model).unwrap();
    assert!(weight_types(&model).iter().all(|t| t == "F32"), "a merged projection is held in f32");
    let (merged, _) = model.logits(&texts).unwrap();
    let scale = before.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = before.iter().zip(&merged).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(d <= 1e-4 * scale, "merged logits differ by {d} of {scale}");
    api::unmerge_adapters(&mut model).unwrap();
    assert!(weight_types(&model).iter().all(|t| t == "Q4_0"));
    assert_eq!(model.logits(&texts).unwrap().0, before, "unmerge restores the quantised blocks exactly");
    // Nothing on the blocks changed: the projections are the file's bytes.
    let file = Content::read(&mut std::fs::File::open(&path).unwrap()).unwrap();
    let v = model.backbone.projections().into_iter().find(|p| p.name == "model.layers.1.self_attn.v_proj").unwrap();
    let Some(FrozenWeight::Quantized(q)) = v.frozen_weight() else { panic!("v_proj is not quantised") };
    let stored = file.tensor(&mut std::fs::File::open(&path).unwrap(), "blk.1.attn_v.weight", &Device::Cpu).unwrap();
    assert_eq!(q.blocks().data().unwrap(), stored.data().unwrap());
}

#[test]
fn unsupported_block_types_options_and_corrupt_scales_are_refused_with_what_to_change() {
    // A block type kronlora cannot read (IQ4_XS, llama.cpp type 23) in place of Q8_0: refused
    // by name, whichever way the model is loaded.
    let path = quantised_gguf("iq4", GgmlDType::Q8_0, true);
    let mut bytes = std::fs::read(&path).unwrap();
    let name = b"blk.0.attn_q.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let n_dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let type_at = at + 4 + 8 * n_dims;
    assert_eq!(bytes[type_at], 8, "the tensor was stored as Q8_0");
    bytes[type_at] = 23;
    std::fs::write(&path, bytes).unwrap();
    for options in ["{}", r#"{"quantized":false}"#] {
        let e = api::load_model(ModelSource::Path(path.clone()), options).err().unwrap();
        let text = e.to_string();
        assert_eq!(e.code(), "ERR_UNSUPPORTED", "{text}");
        assert!(
            text.contains("blk.0.attn_q.weight") && text.contains("IQ4_XS") && text.contains("requantise"),
            "{text}"
        );
    }

    let e = api::load_model(ModelSource::Path(path.clone()), r#"{"quantized":"yes"}"#).err().unwrap();
    assert_eq!(e.code(), "ERR_INVALID_OPTION");
    assert!(e.to_string().contains("`quantized` must be true or false"), "{e}");

    // A Hugging Face directory is not quantised.
    let dir = temp_dir("quantized-hf");
    crate::tiny::llama::write_hf_dir(&dir, &crate::tiny::llama::tensors(3, true), true);
    let e = api::load_model(ModelSource::Path(dir), r#"{"quantized":true}"#).err().unwrap();
    assert_eq!(e.code(), "ERR_INVALID_OPTION");
    assert!(e.to_string().contains("applies to .gguf models"), "{e}");

    // A NaN block scale (the f16 `d` opening each Q8_0 block) in one projection.
    let path = quantised_gguf("nan", GgmlDType::Q8_0, true);
    let content = Content::read(&mut std::fs::File::open(&path).unwrap()).unwrap();
    let at = content.tensor_data_offset as usize + content.tensor_infos["blk.1.ffn_up.weight"].offset as usize;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at + 34..at + 36].copy_from_slice(&[0x00, 0x7e]);
    std::fs::write(&path, bytes).unwrap();
    let e = api::load_model(ModelSource::Path(path), "{}").err().unwrap();
    assert_eq!(e.code(), "ERR_INVALID_MODEL");
    assert!(e.to_string().contains("blk.1.ffn_up.weight") && e.to_string().contains("NaN"), "{e}");
}
