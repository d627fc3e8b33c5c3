//! The optimiser, clipping and schedules against PyTorch / transformers (test/fixtures/training.json,
//! made by scripts/reference/make_fixtures.py).

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use kronlora_core::train::{clip_grad_norm, AdamW, AdamWConfig, LrSchedule, ScheduleKind};
use serde_json::Value;

fn fixture() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/training.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        n => vec![n.as_f64().unwrap() as f32],
    }
}

fn tensor(v: &Value, shape: &[usize]) -> Tensor {
    Tensor::from_vec(flat(v), shape, &Device::Cpu).unwrap()
}

const SHAPES: [&[usize]; 2] = [&[3, 4], &[5]];

fn grads_for(params: &[Var], grads: &Value) -> GradStore {
    // A GradStore is made by backward; build one whose gradients are the fixture's.
    let loss = params
        .iter()
        .zip(grads.as_array().unwrap())
        .zip(SHAPES)
        .map(|((p, g), s)| (p.as_tensor() * tensor(g, s)).unwrap().sum_all().unwrap())
        .reduce(|a, b| (a + b).unwrap())
        .unwrap();
    loss.backward().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn new_adamw(f: &Value) -> (Vec<Var>, AdamW) {
    let params: Vec<Var> = f["adamw"]["initial"]
        .as_array()
        .unwrap()
        .iter()
        .zip(SHAPES)
        .map(|(p, s)| Var::from_tensor(&tensor(p, s)).unwrap())
        .collect();
    let opt = AdamW::new(params.clone(), AdamWConfig { weight_decay: 0.1, ..AdamWConfig::default() }).unwrap();
    (params, opt)
}

#[test]
fn adamw_matches_torch() {
    let f = fixture();
    let (params, mut opt) = new_adamw(&f);
    for (i, step) in f["adamw"]["steps"].as_array().unwrap().iter().enumerate() {
        let grads = grads_for(&params, &step["grads"]);
        opt.step(&grads, step["lr"].as_f64().unwrap()).unwrap();
        for (p, want) in params.iter().zip(step["params"].as_array().unwrap()) {
            let d = max_diff(&p.as_tensor().flatten_all().unwrap().to_vec1().unwrap(), &flat(want));
            assert!(d < 1e-6, "step {i}: parameters differ from torch.optim.AdamW by {d}");
        }
    }
}

#[test]
fn adamw_state_round_trips_and_resumes_exactly() {
    let f = fixture();
    let steps = f["adamw"]["steps"].as_array().unwrap();
    let (params, mut opt) = new_adamw(&f);
    for step in &steps[..2] {
        opt.step(&grads_for(&params, &step["grads"]), step["lr"].as_f64().unwrap()).unwrap();
    }
    let state = opt.state().unwrap();
    assert_eq!(state.step, 2);
    // A new optimiser on copies of the parameters, restored from the state, continues identically.
    let copies: Vec<Var> = params.iter().map(|p| Var::from_tensor(&p.as_tensor().copy().unwrap()).unwrap()).collect();
    let mut resumed = AdamW::new(copies.clone(), AdamWConfig { weight_decay: 0.1, ..AdamWConfig::default() }).unwrap();
    resumed.load_state(&state).unwrap();
    for step in &steps[2..] {
        opt.step(&grads_for(&params, &step["grads"]), step["lr"].as_f64().unwrap()).unwrap();
        resumed.step(&grads_for(&copies, &step["grads"]), step["lr"].as_f64().unwrap()).unwrap();
    }
    for (a, b) in params.iter().zip(&copies) {
        assert_eq!(
            a.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
    let mut wrong = state.clone();
    wrong.first_moments.pop();
    assert!(resumed.load_state(&wrong).is_err());
}

#[test]
fn clipping_matches_torch() {
    let f = fixture();
    let params: Vec<Var> =
        SHAPES.iter().map(|s| Var::zeros(*s, candle_core::DType::F32, &Device::Cpu).unwrap()).collect();
    let mut grads = grads_for(&params, &f["clip"]["grads"]);
    let norm = clip_grad_norm(&params, &mut grads, 1.0).unwrap();
    assert!((norm - f["clip"]["norm"].as_f64().unwrap()).abs() < 1e-5, "norm {norm}");
    for ((p, want), _) in params.iter().zip(f["clip"]["clipped"].as_array().unwrap()).zip(SHAPES) {
        let got: Vec<f32> = grads.get(p.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(max_diff(&got, &flat(want)) < 1e-6);
    }
}

#[test]
fn schedules_match_transformers() {
    let f = fixture();
    for (name, kind) in
        [("constant", ScheduleKind::Constant), ("linear", ScheduleKind::Linear), ("cosine", ScheduleKind::Cosine)]
    {
        let s = LrSchedule { kind, base_lr: 1.0, warmup_steps: 3, total_steps: 10 };
        for (step, want) in f["schedules"][name].as_array().unwrap().iter().enumerate() {
            let got = s.lr(step as u64);
            assert!((got - want.as_f64().unwrap()).abs() < 1e-12, "{name} step {step}: {got} vs {want}");
        }
    }
}
