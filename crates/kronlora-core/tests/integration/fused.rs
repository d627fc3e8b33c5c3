//! The fused CPU ops (softmax, LayerNorm, RMSNorm, RoPE, SwiGLU, GELU, attention, the frozen linear
//! layer, Kron-LoRA's mix with A) against their compositions of
//! candle's elementary ops: same outputs, same gradients for every input.

use candle_core::{Device, Tensor, Var};
use kronlora_core::models::{
    attention_composed, layer_norm, layer_norm_composed, rms_norm, rms_norm_composed, rope, rope_composed,
    softmax_last_dim, softmax_last_dim_composed, swiglu, swiglu_composed,
};
use kronlora_core::ops::{
    frozen_linear, fused_attention, fused_gelu_erf, kron_mix, kron_mix_composed, AttentionSpec, UpdateProduct,
};

use crate::reference::Lcg;

fn random(rng: &mut Lcg, shape: &[usize], scale: f32, offset: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(rng.vec(n).into_iter().map(|v| v * scale + offset).collect::<Vec<f32>>(), shape, &Device::Cpu)
        .unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// The largest difference between the gradients of `vars` under `fused · probe` and under
/// `composed · probe`, per variable.
fn gradient_differences<'a>(
    fused: &Tensor,
    composed: &Tensor,
    probe: &Tensor,
    vars: &[(&'a str, &Var)],
) -> Vec<(&'a str, f32)> {
    let g1 = (fused * probe).unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = (composed * probe).unwrap().sum_all().unwrap().backward().unwrap();
    vars.iter()
        .map(|(name, v)| (*name, max_diff(g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap())))
        .collect()
}

#[test]
fn fused_softmax_matches_the_composition_with_gradients() {
    let mut rng = Lcg::new(3);
    // The second shape has more rows than one parallel task takes (32 768 values a task).
    for shape in [&[2, 3, 5, 7][..], &[3, 2000, 7]] {
        let x = Var::from_tensor(&random(&mut rng, shape, 6.0, 0.0)).unwrap();
        let probe = random(&mut rng, shape, 1.0, 0.0);
        let fused = softmax_last_dim(x.as_tensor()).unwrap();
        let composed = softmax_last_dim_composed(x.as_tensor()).unwrap();
        assert!(max_diff(&fused, &composed) < 1e-6, "{shape:?}");
        for (name, d) in gradient_differences(&fused, &composed, &probe, &[("x", &x)]) {
            assert!(d < 1e-6, "{shape:?} d{name}: {d}");
        }
    }
    // Rows with -1e30 (masked) entries stay finite and give those entries zero.
    let masked = Tensor::new(&[[0.5f32, -1e30, 1.0]], &Device::Cpu).unwrap();
    let p = softmax_last_dim(&masked).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(p[0][1], 0.0);
    assert!((p[0][0] + p[0][2] - 1.0).abs() < 1e-6);
}

#[test]
fn fused_layer_norm_matches_the_composition_with_gradients() {
    let mut rng = Lcg::new(4);
    // The second shape has more rows than one parallel task takes (85 rows of 384).
    for shape in [&[3, 4, 16][..], &[2, 150, 384]] {
        let n = shape[2];
        let x = Var::from_tensor(&random(&mut rng, shape, 3.0, 0.7)).unwrap();
        let w = Var::from_tensor(&random(&mut rng, &[n], 0.5, 1.0)).unwrap();
        let b = Var::from_tensor(&random(&mut rng, &[n], 0.5, 0.0)).unwrap();
        let probe = random(&mut rng, shape, 1.0, 0.0);
        let fused = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-12).unwrap();
        let composed = layer_norm_composed(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-12).unwrap();
        assert!(max_diff(&fused, &composed) < 1e-5, "{shape:?}: {}", max_diff(&fused, &composed));
        for (name, d) in gradient_differences(&fused, &composed, &probe, &[("x", &x), ("weight", &w), ("bias", &b)]) {
            assert!(d < 1e-3, "{shape:?} d{name}: {d}");
        }
    }
    let x = Var::from_tensor(&random(&mut rng, &[3, 4, 16], 3.0, 0.7)).unwrap();
    let (w, b) = (random(&mut rng, &[16], 0.5, 1.0), random(&mut rng, &[16], 0.5, 0.0));
    let probe = random(&mut rng, &[3, 4, 16], 1.0, 0.0);
    // A frozen weight and bias (plain tensors) get no gradient work.
    let g = (layer_norm(x.as_tensor(), &w, &b, 1e-5).unwrap() * &probe).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(g.get(x.as_tensor()).is_some());
}

#[test]
fn fused_gelu_matches_candle_and_finite_differences() {
    let mut rng = Lcg::new(5);
    // Wide enough to cross the parallel chunk size, with values in GELU's curved region.
    let x = Var::from_tensor(&random(&mut rng, &[3, 70_001], 8.0, 0.0)).unwrap();
    let probe = random(&mut rng, &[3, 70_001], 1.0, 0.0);
    let fused = fused_gelu_erf(x.as_tensor()).unwrap();
    let reference = x.as_tensor().gelu_erf().unwrap();
    assert!(max_diff(&fused, &reference) < 1e-5, "{}", max_diff(&fused, &reference));
    for (name, d) in gradient_differences(&fused, &reference, &probe, &[("x", &x)]) {
        assert!(d < 1e-5, "d{name}: {d}");
    }
    // The analytic derivative against central differences in f64 of the exact GELU.
    let points = [-3.0f32, -1.0, -0.3, 0.0, 0.4, 1.7];
    let xs = Var::from_tensor(&Tensor::new(&points, &Device::Cpu).unwrap()).unwrap();
    let g = fused_gelu_erf(xs.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    let got = g.get(xs.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    let gelu64 = |x: f64| {
        let t = Tensor::new(&[x], &Device::Cpu).unwrap();
        t.gelu_erf().unwrap().to_vec1::<f64>().unwrap()[0]
    };
    for (p, g) in points.iter().zip(got) {
        let h = 1e-4;
        let fd = (gelu64(*p as f64 + h) - gelu64(*p as f64 - h)) / (2.0 * h);
        assert!((fd as f32 - g).abs() < 1e-4, "x = {p}: finite difference {fd}, analytic {g}");
    }
}

/// Fused attention against the composed one for one configuration: outputs and the
/// gradients of Q, K and V under a random probe.
fn check_attention(
    seed: u64,
    (batch, tq, tk): (usize, usize, usize),
    heads: usize,
    kv_heads: usize,
    d: usize,
    causal: bool,
    masked: bool,
) {
    let mut rng = Lcg::new(seed);
    let q = Var::from_tensor(&random(&mut rng, &[batch, tq, heads * d], 1.5, 0.0)).unwrap();
    let k = Var::from_tensor(&random(&mut rng, &[batch, tk, kv_heads * d], 1.5, 0.0)).unwrap();
    let v = Var::from_tensor(&random(&mut rng, &[batch, tk, kv_heads * d], 1.0, 0.0)).unwrap();
    let probe = random(&mut rng, &[batch, tq, heads * d], 1.0, 0.0);
    // Padding at the end of every row but the first, as a tokenizer's batch has it.
    let mask: Vec<f32> =
        (0..batch).flat_map(|b| (0..tk).map(move |j| if j + b >= tk && b > 0 { -1e30 } else { 0.0 })).collect();
    let mask = Tensor::from_vec(mask, (batch, tk), &Device::Cpu).unwrap();
    let spec = AttentionSpec { heads, kv_heads, causal, key_mask: masked.then_some(&mask) };
    let fused = fused_attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), &spec).unwrap();
    let composed = attention_composed(q.as_tensor(), k.as_tensor(), v.as_tensor(), &spec).unwrap();
    assert_eq!(fused.dims(), &[batch, tq, heads * d]);
    let what = format!("causal {causal}, masked {masked}, {heads}/{kv_heads} heads, tq {tq}, tk {tk}");
    assert!(max_diff(&fused, &composed) < 1e-5, "{what}: outputs differ by {}", max_diff(&fused, &composed));
    for (name, d) in gradient_differences(&fused, &composed, &probe, &[("q", &q), ("k", &k), ("v", &v)]) {
        assert!(d < 1e-4, "{what}: d{name} differs by {d}");
    }
}

#[test]
fn fused_attention_matches_the_composition_with_gradients() {
    // BERT: bidirectional, padding mask, every head its own keys.
    check_attention(6, (3, 9, 9), 4, 4, 8, false, true);
    check_attention(7, (2, 5, 5), 2, 2, 16, false, false);
    // Llama: causal, grouped-query heads, and queries after cached keys (tk > tq).
    check_attention(8, (2, 7, 7), 6, 2, 4, true, false);
    check_attention(9, (2, 3, 8), 4, 1, 8, true, true);
}

#[test]
fn fused_attention_rejects_shapes_that_do_not_fit() {
    let z = |s: &[usize]| Tensor::zeros(s, candle_core::DType::F32, &Device::Cpu).unwrap();
    let spec = AttentionSpec { heads: 3, kv_heads: 3, causal: false, key_mask: None };
    assert!(fused_attention(&z(&[1, 4, 8]), &z(&[1, 4, 8]), &z(&[1, 4, 8]), &spec).is_err(), "8 is not 3 heads");
    let spec = AttentionSpec { heads: 2, kv_heads: 2, causal: true, key_mask: None };
    assert!(fused_attention(&z(&[1, 4, 8]), &z(&[1, 3, 8]), &z(&[1, 3, 8]), &spec).is_err(), "fewer keys than queries");
    let bad_mask = z(&[1, 3]);
    let spec = AttentionSpec { heads: 2, kv_heads: 2, causal: false, key_mask: Some(&bad_mask) };
    assert!(fused_attention(&z(&[1, 4, 8]), &z(&[1, 4, 8]), &z(&[1, 4, 8]), &spec).is_err(), "mask of 3 for 4 keys");
}

/// `frozen_linear` against `x·Wᵀ + b + left·rightᵀ` from candle's matmul, for an update that is
/// LoRA-shaped (`cols = out`) or Kron-shaped (`cols` divides `out`, rows tile it): outputs, the
/// gradients of `x` and of both factors, and none for the frozen `W` and `b`.
fn check_frozen_linear(seed: u64, (m, k, n): (usize, usize, usize), cols: usize, r: usize, with_bias: bool) {
    let mut rng = Lcg::new(seed);
    let x = Var::from_tensor(&random(&mut rng, &[m, k], 1.0, 0.0)).unwrap();
    let w = Var::from_tensor(&random(&mut rng, &[n, k], 0.5, 0.0)).unwrap();
    let b = Var::from_tensor(&random(&mut rng, &[n], 1.0, 0.5)).unwrap();
    let left = Var::from_tensor(&random(&mut rng, &[m * n / cols, r], 1.0, 0.0)).unwrap();
    let right = Var::from_tensor(&random(&mut rng, &[cols, r], 1.0, 0.0)).unwrap();
    let probe = random(&mut rng, &[m, n], 1.0, 0.0);
    let update = UpdateProduct { left: left.as_tensor().clone(), right: right.as_tensor().clone() };
    let bias = with_bias.then_some(b.as_tensor());
    let fused = frozen_linear(x.as_tensor(), &w.as_tensor().clone().into(), bias, Some(&update)).unwrap();
    let mut composed = x.matmul(&w.t().unwrap()).unwrap();
    if with_bias {
        composed = composed.broadcast_add(&b).unwrap();
    }
    let delta = left.matmul(&right.t().unwrap()).unwrap().reshape((m, n)).unwrap();
    let composed = (composed + delta).unwrap();
    let what = format!("[{m}, {k}] → {n}, update cols {cols} rank {r}, bias {with_bias}");
    assert!(max_diff(&fused, &composed) < 1e-4, "{what}: outputs differ by {}", max_diff(&fused, &composed));
    let vars = [("x", &x), ("left", &left), ("right", &right)];
    for (name, d) in gradient_differences(&fused, &composed, &probe, &vars) {
        assert!(d < 1e-3, "{what}: d{name} differs by {d}");
    }
    let grads = (&fused * &probe).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(w.as_tensor()).is_none() && grads.get(b.as_tensor()).is_none(), "{what}: W or b got a gradient");
}

#[test]
fn frozen_linear_matches_the_composition_with_gradients() {
    check_frozen_linear(11, (10, 12, 8), 8, 3, true); // LoRA: left [rows, r] · right [out, r]ᵀ
    check_frozen_linear(12, (10, 12, 8), 4, 3, false); // Kron-LoRA: rows m·d_a2, cols d_b2
                                                       // Large enough that gemm splits the products across threads.
    check_frozen_linear(13, (300, 64, 96), 24, 8, true);
}

#[test]
fn frozen_linear_without_an_update_or_a_tracked_input() {
    let mut rng = Lcg::new(14);
    let x = random(&mut rng, &[2, 3, 6], 1.0, 0.0);
    let w = random(&mut rng, &[5, 6], 1.0, 0.0);
    let b = random(&mut rng, &[5], 1.0, 0.0);
    let y = frozen_linear(&x, &w.clone().into(), Some(&b), None).unwrap();
    let reference = x.broadcast_matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
    assert_eq!(y.dims(), &[2, 3, 5]);
    assert!(max_diff(&y, &reference) < 1e-5);
    // An untracked input (a first layer's, from frozen embeddings): the factors still learn.
    let right = Var::from_tensor(&random(&mut rng, &[5, 2], 1.0, 0.0)).unwrap();
    let left = Var::from_tensor(&random(&mut rng, &[6, 2], 1.0, 0.0)).unwrap();
    let update = UpdateProduct { left: left.as_tensor().clone(), right: right.as_tensor().clone() };
    let grads =
        frozen_linear(&x, &w.clone().into(), None, Some(&update)).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(left.as_tensor()).is_some() && grads.get(right.as_tensor()).is_some());
    // Shapes that do not fit are refused, not read out of bounds.
    assert!(frozen_linear(&x, &w.t().unwrap().into(), None, None).is_err(), "input width");
    assert!(
        frozen_linear(&x, &w.clone().into(), Some(&random(&mut rng, &[4], 1.0, 0.0)), None).is_err(),
        "bias length"
    );
    let short = UpdateProduct { left: random(&mut rng, &[5, 2], 1.0, 0.0), right: right.as_tensor().clone() };
    assert!(frozen_linear(&x, &w.clone().into(), None, Some(&short)).is_err(), "update rows");
    let rank0 = UpdateProduct { left: random(&mut rng, &[6, 0], 1.0, 0.0), right: random(&mut rng, &[5, 0], 1.0, 0.0) };
    assert!(frozen_linear(&x, &w.clone().into(), None, Some(&rank0)).is_err(), "rank 0 (would divide by zero)");
    assert!(
        frozen_linear(&random(&mut rng, &[2, 0], 1.0, 0.0), &random(&mut rng, &[5, 0], 1.0, 0.0).into(), None, None)
            .is_err(),
        "empty weight"
    );
}

#[test]
fn fused_llama_ops_match_their_compositions_with_gradients() {
    let mut rng = Lcg::new(15);
    // Two shapes: one task's worth of rows, and more rows than one parallel task takes.
    for (b, t, width, hd) in [(2, 5, 24, 8), (3, 70, 192, 64)] {
        let what = format!("[{b}, {t}, {width}], head_dim {hd}");
        let probe = random(&mut rng, &[b, t, width], 1.0, 0.0);
        let x = Var::from_tensor(&random(&mut rng, &[b, t, width], 2.0, 0.3)).unwrap();
        // RMSNorm, with a trainable weight so that its gradient is checked too.
        let w = Var::from_tensor(&random(&mut rng, &[width], 1.0, 1.0)).unwrap();
        let fused = rms_norm(x.as_tensor(), w.as_tensor(), 1e-6).unwrap();
        let composed = rms_norm_composed(x.as_tensor(), w.as_tensor(), 1e-6).unwrap();
        assert!(max_diff(&fused, &composed) < 1e-5, "rms_norm {what}");
        for (name, d) in gradient_differences(&fused, &composed, &probe, &[("x", &x), ("w", &w)]) {
            assert!(d < 1e-3, "rms_norm {what}: d{name} differs by {d}");
        }
        // RoPE with real tables (positions 3.., θ = 10000) and with unequal halves, which only
        // a correct transpose in backward gets right.
        let angles: Vec<f32> = (0..t)
            .flat_map(|p| (0..hd).map(move |i| (p + 3) as f32 / 10000f32.powf((i % (hd / 2)) as f32 * 2.0 / hd as f32)))
            .collect();
        let angles = Tensor::from_vec(angles, (t, hd), &Device::Cpu).unwrap();
        let skewed = random(&mut rng, &[t, hd], 3.0, 0.0);
        for (cos, sin) in
            [(angles.cos().unwrap(), angles.sin().unwrap()), (skewed.cos().unwrap(), skewed.sin().unwrap())]
        {
            let fused = rope(x.as_tensor(), &cos, &sin).unwrap();
            let composed = rope_composed(x.as_tensor(), &cos, &sin).unwrap();
            assert!(max_diff(&fused, &composed) < 1e-5, "rope {what}");
            for (name, d) in gradient_differences(&fused, &composed, &probe, &[("x", &x)]) {
                assert!(d < 1e-4, "rope {what}: d{name} differs by {d}");
            }
        }
        // SwiGLU.
        let up = Var::from_tensor(&random(&mut rng, &[b, t, width], 2.0, 0.0)).unwrap();
        let fused = swiglu(x.as_tensor(), up.as_tensor()).unwrap();
        let composed = swiglu_composed(x.as_tensor(), up.as_tensor()).unwrap();
        assert!(max_diff(&fused, &composed) < 1e-5, "swiglu {what}");
        for (name, d) in gradient_differences(&fused, &composed, &probe, &[("gate", &x), ("up", &up)]) {
            assert!(d < 1e-4, "swiglu {what}: d{name} differs by {d}");
        }
    }
    // Tables that do not fit the input are refused.
    let z = |s: &[usize]| Tensor::zeros(s, candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(rope(&z(&[1, 4, 12]), &z(&[4, 8]), &z(&[4, 8])).is_err(), "12 is not a multiple of 8");
    assert!(rope(&z(&[1, 4, 16]), &z(&[3, 8]), &z(&[3, 8])).is_err(), "3 positions for 4 tokens");
    assert!(rms_norm(&z(&[2, 6]), &z(&[5]), 1e-6).is_err(), "weight length");
    assert!(swiglu(&z(&[2, 6]), &z(&[2, 5])).is_err(), "gate and up differ");
}

#[test]
fn kron_mix_matches_naive_loops_and_the_composition_with_gradients() {
    let mut rng = Lcg::new(23);
    // (groups, d_a1, d_a2, r): the default factors, unequal ones, and more groups than one
    // parallel task takes (so that the dA reduction sums several tasks).
    for (n, d_a1, d_a2, r) in [(3, 2, 4, 5), (7, 3, 2, 4), (5000, 2, 4, 8)] {
        let what = format!("n {n}, d_a1 {d_a1}, d_a2 {d_a2}, r {r}");
        let scale = 1.75;
        let z = Var::from_tensor(&random(&mut rng, &[n * d_a1, r], 1.0, 0.1)).unwrap();
        let a = Var::from_tensor(&random(&mut rng, &[d_a2, d_a1], 1.0, 0.0)).unwrap();
        let fused = kron_mix(z.as_tensor(), a.as_tensor(), scale).unwrap();
        assert_eq!(fused.dims(), [n * d_a2, r], "{what}");
        // The definition, element by element.
        let (zv, av, yv) = (
            z.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            a.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            fused.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        for i in (0..n).step_by(n / 3 + 1) {
            for o in 0..d_a2 {
                for j in 0..r {
                    let want: f64 =
                        (0..d_a1).map(|k| scale * av[o * d_a1 + k] as f64 * zv[(i * d_a1 + k) * r + j] as f64).sum();
                    let got = yv[(i * d_a2 + o) * r + j] as f64;
                    assert!((got - want).abs() < 1e-5, "{what}: y[{i}, {o}, {j}] = {got}, want {want}");
                }
            }
        }
        let composed = kron_mix_composed(z.as_tensor(), a.as_tensor(), scale).unwrap();
        assert!(max_diff(&fused, &composed) < 1e-5, "{what}");
        let probe = random(&mut rng, &[n * d_a2, r], 1.0, 0.0);
        for (name, d) in gradient_differences(&fused, &composed, &probe, &[("z", &z), ("a", &a)]) {
            // dA sums n·r products: compare relative to that size.
            let tol = if name == "a" { 1e-5 * (n * r) as f32 } else { 1e-5 };
            assert!(d < tol, "{what}: d{name} differs by {d}");
        }
    }
    let z = |s: &[usize]| Tensor::zeros(s, candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(kron_mix(&z(&[5, 3]), &z(&[4, 2]), 1.0).is_err(), "5 rows do not group by d_A1 = 2");
    assert!(kron_mix(&z(&[4, 0]), &z(&[4, 2]), 1.0).is_err(), "rank 0");
}

#[test]
fn fused_target_log_probs_match_the_composition_with_gradients() {
    use kronlora_core::ops::fused_target_log_probs;
    use kronlora_core::train::target_log_probs_composed;
    let mut rng = Lcg::new(11);
    // The second shape has more rows than one parallel task takes; its rows are vocabulary-wide.
    for shape in [&[2, 3, 7][..], &[3, 40, 3000]] {
        let n = *shape.last().unwrap();
        let rows: usize = shape[..shape.len() - 1].iter().product();
        let logits = Var::from_tensor(&random(&mut rng, shape, 8.0, 0.0)).unwrap();
        let targets: Vec<u32> = rng.vec(rows).iter().map(|v| ((v.abs() * 7919.0) as usize % n) as u32).collect();
        let targets = Tensor::from_vec(targets, &shape[..shape.len() - 1], &Device::Cpu).unwrap();
        let probe = random(&mut rng, &shape[..shape.len() - 1], 1.0, 0.0);
        let fused = fused_target_log_probs(logits.as_tensor(), &targets).unwrap();
        let composed = target_log_probs_composed(logits.as_tensor(), &targets).unwrap();
        assert_eq!(fused.dims(), &shape[..shape.len() - 1]);
        assert!(max_diff(&fused, &composed) < 2e-5, "{shape:?}: {}", max_diff(&fused, &composed));
        for (name, d) in gradient_differences(&fused, &composed, &probe, &[("logits", &logits)]) {
            assert!(d < 1e-6, "{shape:?} d{name}: {d}");
        }
    }
    // A target outside the classes is an error, not a read past the row.
    let logits = Tensor::zeros((2, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = fused_target_log_probs(&logits, &Tensor::new(&[1u32, 4], &Device::Cpu).unwrap()).unwrap_err();
    assert!(err.to_string().contains("target 4 is outside the 4 classes"), "{err}");
}
