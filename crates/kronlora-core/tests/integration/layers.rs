//! The adapted layers against naive maths and finite differences.

use crate::reference::{assert_close, kron, linear, matmul, Lcg};
use candle_core::Device;
use kronlora_core::{api, AdaptedLinear, AdapterKind, LayerOptions, TensorData};

fn options(kind: AdapterKind, json: &str) -> LayerOptions {
    api::layer_options(kind, json).unwrap().0
}

/// A Kron-LoRA layer with random base weight, bias and (non-zero) factors.
struct Case {
    layer: AdaptedLinear,
    weight: Vec<f32>,
    bias: Vec<f32>,
    inp: usize,
    out: usize,
    rank: usize,
    dims: (usize, usize), // (d_a1, d_a2)
    scale: f64,
}

fn kron_case(inp: usize, out: usize, rank: usize, d_a1: usize, d_a2: usize, seed: u64) -> Case {
    let mut rng = Lcg::new(seed);
    let weight = rng.vec(inp * out);
    let bias = rng.vec(out);
    let json = format!(
        r#"{{"inFeatures":{inp},"outFeatures":{out},"rank":{rank},"alpha":{},"kronIn":{d_a1},"kronOut":{d_a2},"seed":{seed}}}"#,
        2 * rank
    );
    let layer =
        AdaptedLinear::standalone(&options(AdapterKind::KronLora, &json), Some(&weight), Some(&bias), &Device::Cpu)
            .unwrap();
    // B1 starts at zero; give every factor random values so the update is non-trivial.
    let (d_b1, d_b2) = (inp / d_a1, out / d_a2);
    layer
        .set_parameters(&[
            ("A".into(), TensorData { shape: vec![d_a2, d_a1], data: rng.vec(d_a1 * d_a2) }),
            ("B1".into(), TensorData { shape: vec![d_b2, rank], data: rng.vec(d_b2 * rank) }),
            ("B2".into(), TensorData { shape: vec![rank, d_b1], data: rng.vec(rank * d_b1) }),
        ])
        .unwrap();
    Case { layer, weight, bias, inp, out, rank, dims: (d_a1, d_a2), scale: 2.0 }
}

fn param(layer: &AdaptedLinear, name: &str) -> Vec<f32> {
    layer.parameters().unwrap().into_iter().find(|(n, _)| n == name).unwrap().1.data
}

/// `s · A ⊗ (B1 B2)` from the layer's parameters, by naive loops.
fn naive_delta(c: &Case) -> Vec<f64> {
    let (d_a1, d_a2) = c.dims;
    let (d_b1, d_b2) = (c.inp / d_a1, c.out / d_a2);
    let a: Vec<f64> = param(&c.layer, "A").iter().map(|&v| v as f64).collect();
    let inner = matmul(&param(&c.layer, "B1"), &param(&c.layer, "B2"), d_b2, c.rank, d_b1);
    kron(&a, &inner, (d_a2, d_a1), (d_b2, d_b1)).into_iter().map(|v| v * c.scale).collect()
}

/// (in, out, rank, d_a1, d_a2): square, non-square, d_A1 = 1, d_A2 = 1, rank larger than a factor.
const SHAPES: [(usize, usize, usize, usize, usize); 5] =
    [(12, 12, 2, 2, 3), (12, 20, 3, 3, 4), (10, 6, 2, 1, 2), (8, 9, 2, 2, 1), (8, 12, 5, 2, 4)];

#[test]
fn forward_matches_naive_kron_formula() {
    for (seed, &(inp, out, rank, d_a1, d_a2)) in SHAPES.iter().enumerate() {
        let c = kron_case(inp, out, rank, d_a1, d_a2, seed as u64);
        let rows = 5;
        let x = Lcg::new(100 + seed as u64).vec(rows * inp);
        let got = c.layer.forward_rows(&x, rows).unwrap();
        let want = linear(&x, Some(&c.weight), &naive_delta(&c), Some(&c.bias), rows, inp, out);
        assert_close(&format!("forward {inp}x{out} r{rank} ({d_a1},{d_a2})"), &got, &want, 1e-5);
    }
}

#[test]
fn delta_weight_matches_naive_kron() {
    for (seed, &(inp, out, rank, d_a1, d_a2)) in SHAPES.iter().enumerate() {
        let c = kron_case(inp, out, rank, d_a1, d_a2, seed as u64);
        let got = c.layer.delta_weight().unwrap();
        assert_eq!(got.shape, vec![out, inp]);
        assert_close("deltaWeight", &got.data, &naive_delta(&c), 1e-6);
    }
}

/// The loss `sum(y ⊙ g)` is linear in every single parameter, so central differences are
/// exact up to rounding for any step; a large step keeps f32 rounding small.
#[test]
fn gradients_match_central_differences() {
    for (seed, &(inp, out, rank, d_a1, d_a2)) in SHAPES.iter().enumerate() {
        let c = kron_case(inp, out, rank, d_a1, d_a2, 10 + seed as u64);
        let rows = 3;
        let mut rng = Lcg::new(200 + seed as u64);
        let x = rng.vec(rows * inp);
        let g = rng.vec(rows * out);
        let loss = |layer: &AdaptedLinear, x: &[f32]| -> f64 {
            layer.forward_rows(x, rows).unwrap().iter().zip(&g).map(|(y, g)| *y as f64 * *g as f64).sum()
        };
        let grads = c.layer.gradients(&x, rows, &g).unwrap();
        let h = 0.5f32;
        for (name, value) in c.layer.parameters().unwrap() {
            let analytic = &grads.parameters.iter().find(|(n, _)| *n == name).unwrap().1;
            assert_eq!(analytic.shape, value.shape);
            let mut numeric = Vec::new();
            for i in 0..value.data.len() {
                let mut plus = value.clone();
                plus.data[i] += h;
                c.layer.set_parameters(&[(name.clone(), plus)]).unwrap();
                let lp = loss(&c.layer, &x);
                let mut minus = value.clone();
                minus.data[i] -= h;
                c.layer.set_parameters(&[(name.clone(), minus)]).unwrap();
                let lm = loss(&c.layer, &x);
                numeric.push((lp - lm) / (2.0 * h as f64));
            }
            c.layer.set_parameters(&[(name.clone(), value)]).unwrap();
            assert_close(&format!("d/d{name} ({inp}x{out})"), &analytic.data, &numeric, 2e-4);
        }
        let mut numeric = Vec::new();
        for i in 0..x.len() {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            numeric.push((loss(&c.layer, &xp) - loss(&c.layer, &xm)) / (2.0 * h as f64));
        }
        assert_close("d/dx", &grads.input.data, &numeric, 2e-4);
    }
}

#[test]
fn merge_then_unmerge_restores_the_weight_exactly() {
    let mut c = kron_case(12, 20, 3, 3, 4, 7);
    let rows = 4;
    let x = Lcg::new(3).vec(rows * 12);
    let before = c.layer.forward_rows(&x, rows).unwrap();
    c.layer.merge().unwrap();
    let merged_w = c.layer.weight_data().unwrap().unwrap().data;
    let want: Vec<f64> = c.weight.iter().zip(naive_delta(&c)).map(|(w, d)| *w as f64 + d).collect();
    assert_close("merged weight", &merged_w, &want, 1e-6);
    let want_y: Vec<f64> = before.iter().map(|v| *v as f64).collect();
    assert_close("merged forward", &c.layer.forward_rows(&x, rows).unwrap(), &want_y, 1e-5);
    assert!(c.layer.merge().is_err());
    assert!(c.layer.set_parameters(&[]).is_err());
    c.layer.unmerge().unwrap();
    assert_eq!(c.layer.weight_data().unwrap().unwrap().data, c.weight, "unmerge must be exact");
    assert!(c.layer.unmerge().is_err());
    let _ = c.bias;
}

#[test]
fn to_lora_reproduces_delta_weight() {
    for (seed, &(inp, out, rank, d_a1, d_a2)) in SHAPES.iter().enumerate() {
        let c = kron_case(inp, out, rank, d_a1, d_a2, 20 + seed as u64);
        let (a, b, lora_rank, alpha) = c.layer.to_lora().unwrap();
        assert_eq!(lora_rank, d_a1 * rank);
        assert_eq!(a.shape, vec![lora_rank, inp]);
        assert_eq!(b.shape, vec![out, lora_rank]);
        let s = alpha / lora_rank as f64;
        let delta: Vec<f64> = matmul(&b.data, &a.data, out, lora_rank, inp).into_iter().map(|v| v * s).collect();
        assert_close("toLora", &c.layer.delta_weight().unwrap().data, &delta, 1e-6);
    }
}

#[test]
fn lora_forward_and_gradients() {
    let (inp, out, rank) = (10, 7, 3);
    let mut rng = Lcg::new(5);
    let weight = rng.vec(inp * out);
    let json = format!(r#"{{"inFeatures":{inp},"outFeatures":{out},"rank":{rank},"alpha":6,"useRslora":true}}"#);
    let layer =
        AdaptedLinear::standalone(&options(AdapterKind::Lora, &json), Some(&weight), None, &Device::Cpu).unwrap();
    assert_eq!(layer.num_trainable_parameters(), rank * (inp + out));
    let b = rng.vec(out * rank);
    layer.set_parameters(&[("lora_B".into(), TensorData { shape: vec![out, rank], data: b.clone() })]).unwrap();
    let a = param(&layer, "lora_A");
    let s = 6.0 / (rank as f64).sqrt();
    let delta: Vec<f64> = matmul(&b, &a, out, rank, inp).into_iter().map(|v| v * s).collect();
    let rows = 4;
    let x = rng.vec(rows * inp);
    let want = linear(&x, Some(&weight), &delta, None, rows, inp, out);
    assert_close("lora forward", &layer.forward_rows(&x, rows).unwrap(), &want, 1e-5);
    // dL/dB = s · gᵀ (x Aᵀ) for L = sum(y ⊙ g).
    let g = rng.vec(rows * out);
    let grads = layer.gradients(&x, rows, &g).unwrap();
    let xa = matmul(&x, &transpose(&a, rank, inp), rows, inp, rank);
    let xa32: Vec<f32> = xa.iter().map(|v| *v as f32).collect();
    let want_b: Vec<f64> =
        matmul(&transpose(&g, rows, out), &xa32, out, rows, rank).into_iter().map(|v| v * s).collect();
    assert_close("dL/dlora_B", &grads.parameters[1].1.data, &want_b, 1e-5);
}

fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

#[test]
fn initialisation_is_seeded_and_zero_in_b1() {
    let json = |seed: u64| format!(r#"{{"inFeatures":768,"outFeatures":768,"rank":8,"alpha":16,"seed":{seed}}}"#);
    let dev = Device::Cpu;
    let l1 = AdaptedLinear::standalone(&options(AdapterKind::KronLora, &json(1)), None, None, &dev).unwrap();
    let l1b = AdaptedLinear::standalone(&options(AdapterKind::KronLora, &json(1)), None, None, &dev).unwrap();
    let l2 = AdaptedLinear::standalone(&options(AdapterKind::KronLora, &json(2)), None, None, &dev).unwrap();
    assert_eq!(l1.parameters().unwrap(), l1b.parameters().unwrap());
    assert_ne!(param(&l1, "B2"), param(&l2, "B2"));
    assert!(param(&l1, "B1").iter().all(|v| *v == 0.0));
    // Kaiming-uniform bounds 1/√fan_in: A [4, 2] → 1/√2, B2 [8, 384] → 1/√384.
    assert!(param(&l1, "A").iter().all(|v| v.abs() <= 1.0 / 2f32.sqrt()));
    assert!(param(&l1, "B2").iter().all(|v| v.abs() <= 1.0 / 384f32.sqrt()));
    // Defaults d_A1 = 2, d_A2 = 4: 2·4 + 8·(384 + 192) parameters, and ΔW = 0 at the start.
    assert_eq!(l1.num_trainable_parameters(), 8 + 8 * (384 + 192));
    assert!(l1.delta_weight().unwrap().data.iter().all(|v| *v == 0.0));
}

#[test]
fn bad_inputs_give_coded_errors() {
    let c = kron_case(12, 12, 2, 2, 3, 1);
    let code = |r: kronlora_core::Result<Vec<f32>>| r.unwrap_err().code();
    assert_eq!(code(c.layer.forward_rows(&[0.0; 11], 1)), "ERR_SHAPE_MISMATCH");
    assert_eq!(code(c.layer.forward_rows(&[0.0; 12], 0)), "ERR_INVALID_OPTION");
    let mut x = vec![0.0f32; 12];
    x[5] = f32::NAN;
    let err = c.layer.forward_rows(&x, 1).unwrap_err();
    assert_eq!(err.code(), "ERR_NON_FINITE");
    assert!(err.to_string().contains("index 5"), "{err}");
    let dev = Device::Cpu;
    let bad = AdaptedLinear::standalone(
        &options(AdapterKind::KronLora, r#"{"inFeatures":12,"outFeatures":12,"rank":2,"alpha":1,"kronIn":5}"#),
        None,
        None,
        &dev,
    );
    assert_eq!(bad.err().unwrap().code(), "ERR_FACTORIZATION");
    let bad = AdaptedLinear::standalone(
        &options(AdapterKind::Lora, r#"{"inFeatures":4,"outFeatures":3,"rank":2,"alpha":1}"#),
        Some(&[0.0; 11]),
        None,
        &dev,
    );
    assert_eq!(bad.err().unwrap().code(), "ERR_SHAPE_MISMATCH");
    let wrong_shape = TensorData { shape: vec![2, 3], data: vec![0.0; 6] };
    assert_eq!(c.layer.set_parameters(&[("A".into(), wrong_shape)]).unwrap_err().code(), "ERR_SHAPE_MISMATCH");
    let unknown = TensorData { shape: vec![3, 2], data: vec![0.0; 6] };
    assert_eq!(c.layer.set_parameters(&[("C".into(), unknown)]).unwrap_err().code(), "ERR_INVALID_OPTION");
}

#[test]
fn adapters_fold_leading_dims_into_rows() {
    use candle_core::Tensor;
    use kronlora_core::{Adapter, KronLora, Lora};
    let dev = Device::Cpu;
    let config = options(
        AdapterKind::KronLora,
        r#"{"inFeatures":12,"outFeatures":8,"rank":3,"alpha":3,"kronIn":3,"kronOut":2,"seed":4}"#,
    )
    .adapter;
    let kron = KronLora::new("k", 12, 8, &config, &dev).unwrap();
    let lora = Lora::new(12, 8, &config, &dev).unwrap();
    for adapter in [&kron as &dyn Adapter, &lora] {
        // B1 or lora_B, the zero-initialised factor
        let (_, zero_init) = adapter.parameters()[1];
        zero_init.set(&Tensor::ones(zero_init.dims(), candle_core::DType::F32, &dev).unwrap()).unwrap();
        let x = Tensor::from_vec(Lcg::new(8).vec(2 * 3 * 12), (2, 3, 12), &dev).unwrap();
        let y3 = adapter.forward(&x).unwrap();
        assert_eq!(y3.dims(), &[2, 3, 8]);
        let y2 = adapter.forward(&x.reshape((6, 12)).unwrap()).unwrap();
        assert_eq!(
            y3.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            y2.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}
