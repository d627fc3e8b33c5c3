//! The same adapted model on two sides must agree: outputs, the gradient of every adapter
//! parameter, and the parameters after one AdamW step. The reference side is the CPU with its
//! fused kernels. The subject is either the CPU running the composed candle forms that other
//! devices run (every build: this holds those forms, the ones CUDA executes, to the kernels on
//! whole models), or a CUDA GPU (`cuda` builds; `scripts/device-check.sh` runs those tests on a
//! GPU machine, and they fail rather than pass where there is no GPU).
//!
//! Models are MiniLM-shaped (BERT, hidden 384, 12 heads, FFN 1536) and SmolLM2-135M-shaped
//! (Llama, hidden 576, 9 heads, 3 KV heads, FFN 1536) with random weights and fewer layers and a
//! smaller vocabulary than the real ones: the shapes of every op are the real ones.

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use kronlora_core::models::bert::BertModel;
use kronlora_core::models::llama::LlamaModel;
use kronlora_core::models::{attach_adapter, AdapterPlan, Backbone, TargetModules};
use kronlora_core::ops::with_composed_ops;
use kronlora_core::train::{AdamW, AdamWConfig};
use kronlora_core::{AdapterConfig, AdapterKind};

use crate::reference::Lcg;
use crate::tiny::llama::{tensors_for, write_hf_dir_for, LlamaDims};
use crate::tiny::{bert_tensors, temp_dir, write_model, BertDims};

/// Where a side runs.
#[derive(Clone)]
pub struct Side {
    pub device: Device,
    /// Composed candle forms instead of the fused CPU kernels (what non-CPU devices run).
    pub composed: bool,
}

impl Side {
    pub fn cpu() -> Side {
        Side { device: Device::Cpu, composed: false }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Shape {
    MiniLm,
    SmolLm2,
}

/// What one side computed.
struct Outcome {
    output: Vec<f32>,
    /// Per adapter parameter (module.adapter.param): its gradient, then its value after AdamW.
    gradients: Vec<(String, Vec<f32>)>,
    stepped: Vec<(String, Vec<f32>)>,
}

const BATCH: usize = 2;
const TOKENS: usize = 24;

fn write(shape: Shape, layers: usize, vocab: usize, dir: &Path) {
    match shape {
        Shape::MiniLm => {
            let d = BertDims { vocab, hidden: 384, layers, ffn: 1536, positions: 64, fan_in_scaled: true };
            let config = format!(
                r#"{{"model_type":"bert","vocab_size":{vocab},"hidden_size":384,"num_hidden_layers":{layers},
                "num_attention_heads":12,"intermediate_size":1536,"hidden_act":"gelu","max_position_embeddings":64,
                "type_vocab_size":2,"layer_norm_eps":1e-12}}"#
            );
            write_model(dir, &bert_tensors(11, &d), &config);
        }
        Shape::SmolLm2 => {
            let d = LlamaDims { vocab, hidden: 576, heads: 9, kv_heads: 3, ffn: 1536, layers, fan_in_scaled: true };
            std::fs::create_dir_all(dir).unwrap();
            write_hf_dir_for(dir, &d, &tensors_for(12, &d, false), false);
        }
    }
}

fn load(shape: Shape, dir: &Path, device: &Device) -> Box<dyn Backbone> {
    match shape {
        Shape::MiniLm => Box::new(BertModel::load(dir, device).unwrap()),
        Shape::SmolLm2 => Box::new(LlamaModel::load(dir, device).unwrap()),
    }
}

fn plan(kind: AdapterKind) -> AdapterPlan {
    let (rank, kron_in, kron_out) = match kind {
        AdapterKind::KronLora => (8, Some(2), Some(4)),
        AdapterKind::Lora => (16, None, None),
    };
    let config = AdapterConfig { kind, rank, alpha: 2.0 * rank as f64, kron_in, kron_out, use_rslora: false, seed: 5 };
    AdapterPlan { targets: TargetModules::AllLinear, config, overrides: vec![], dropout: 0.0 }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_device(&Device::Cpu).unwrap().to_vec1::<f32>().unwrap()
}

/// Adapters on every linear layer with the same random values on both sides (the zero-initialised
/// factors included, so every parameter gets a gradient), then forward, `sum(output ⊙ probe)`,
/// backward and one AdamW step.
fn run(shape: Shape, dir: &Path, vocab: usize, kind: AdapterKind, side: &Side) -> Outcome {
    with_composed_ops(side.composed, || {
        let mut model = load(shape, dir, &side.device);
        attach_adapter(model.as_mut(), "parity", &plan(kind)).unwrap();
        let mut rng = Lcg::new(21);
        let mut params: Vec<(String, Var)> = Vec::new();
        for p in model.projections() {
            for (adapter, a) in p.adapters() {
                for (name, var) in a.parameters() {
                    let n = var.elem_count();
                    let v = Tensor::from_vec(
                        rng.vec(n).into_iter().map(|x| x * 0.1).collect::<Vec<_>>(),
                        var.dims(),
                        &Device::Cpu,
                    )
                    .unwrap();
                    var.set(&v.to_device(&side.device).unwrap()).unwrap();
                    params.push((format!("{}.{adapter}.{name}", p.name), var.clone()));
                }
            }
        }
        let mut ids_rng = Lcg::new(3);
        let ids: Vec<u32> =
            (0..BATCH * TOKENS).map(|_| 4 + ((ids_rng.next() + 1.0) * 0.5 * (vocab - 5) as f32) as u32).collect();
        let ids = Tensor::from_vec(ids, (BATCH, TOKENS), &Device::Cpu).unwrap().to_device(&side.device).unwrap();
        // Encoders: the second row ends in padding.
        let mask: Vec<f32> =
            (0..BATCH * TOKENS).map(|i| if i >= TOKENS && i % TOKENS >= TOKENS - 5 { 0.0 } else { 1.0 }).collect();
        let mask = Tensor::from_vec(mask, (BATCH, TOKENS), &Device::Cpu).unwrap().to_device(&side.device).unwrap();
        let output = match shape {
            Shape::MiniLm => model.forward(&ids, Some(&mask), None),
            Shape::SmolLm2 => model.forward(&ids, None, None),
        }
        .unwrap();
        let probe = Tensor::from_vec(Lcg::new(8).vec(output.elem_count()), output.dims(), &Device::Cpu)
            .unwrap()
            .to_device(&side.device)
            .unwrap();
        let grads = (&output * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gradients = params
            .iter()
            .map(|(name, var)| {
                let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
                (name.clone(), values(g))
            })
            .collect();
        let mut adamw = AdamW::new(params.iter().map(|(_, v)| v.clone()).collect(), AdamWConfig::default()).unwrap();
        adamw.step(&grads, 1e-3).unwrap();
        let stepped = params.iter().map(|(name, var)| (name.clone(), values(var.as_tensor()))).collect();
        Outcome { output: values(&output), gradients, stepped }
    })
}

/// `max |a - b| / (max |a| + tiny)`: one relative figure per tensor.
fn relative(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
    let size = a.iter().map(|x| x.abs() as f64).fold(0.0, f64::max);
    diff / (size + 1e-12)
}

/// Run both sides on `shape` for both adapter kinds; assert every figure is under `tolerance`
/// and return them as printable lines.
pub fn check(shape: Shape, layers: usize, vocab: usize, subject: &Side, tolerance: f64) -> Vec<String> {
    let dir = temp_dir(&format!("parity-{shape:?}-{layers}-{}", subject.composed));
    write(shape, layers, vocab, &dir);
    let mut lines = Vec::new();
    for kind in [AdapterKind::KronLora, AdapterKind::Lora] {
        let want = run(shape, &dir, vocab, kind, &Side::cpu());
        let got = run(shape, &dir, vocab, kind, subject);
        let worst = |what: &str, pairs: &[(String, Vec<f32>)], theirs: &[(String, Vec<f32>)]| {
            assert_eq!(pairs.len(), theirs.len());
            let (name, figure) = pairs
                .iter()
                .zip(theirs)
                .map(|((n, a), (m, b))| {
                    assert_eq!(n, m);
                    (n.clone(), relative(a, b))
                })
                .fold((String::new(), 0.0), |w, x| if x.1 > w.1 { x } else { w });
            assert!(figure < tolerance, "{shape:?} {kind:?} {what}: {name} differs by {figure:.2e} (relative)");
            format!("{what} {figure:.1e} ({} tensors, worst {name})", pairs.len())
        };
        let output = relative(&want.output, &got.output);
        assert!(output < tolerance, "{shape:?} {kind:?} output differs by {output:.2e} (relative)");
        // Bit-identical outputs would mean the subject ran the reference's code: the switch failed.
        assert!(output > 0.0, "{shape:?} {kind:?}: the subject side ran the same kernels as the reference");
        let gradients = worst("gradients", &want.gradients, &got.gradients);
        let stepped = worst("after AdamW", &want.stepped, &got.stepped);
        lines.push(format!("{shape:?} {kind:?} {layers} layers: output {output:.1e}; {gradients}; {stepped}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    lines
}

#[test]
fn the_composed_forms_other_devices_run_match_the_fused_kernels_on_whole_models() {
    let composed = Side { device: Device::Cpu, composed: true };
    for shape in [Shape::MiniLm, Shape::SmolLm2] {
        for line in check(shape, 2, 512, &composed, 1e-4) {
            println!("{line}");
        }
    }
}

/// On a GPU: f32 to 1e-4 (relative). Run by scripts/device-check.sh with `--ignored`.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU: scripts/device-check.sh runs it"]
fn cuda_matches_the_cpu_on_minilm_and_smollm2_shapes() {
    let cuda = Side { device: Device::new_cuda(0).expect("a CUDA GPU"), composed: false };
    for (shape, layers) in [(Shape::MiniLm, 6), (Shape::SmolLm2, 4)] {
        for line in check(shape, layers, 4096, &cuda, 1e-4) {
            println!("cuda parity: {line}");
        }
    }
}
