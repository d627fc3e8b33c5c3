//! The fused CPU softmax and LayerNorm against their compositions of candle's elementary ops:
//! same outputs, same gradients for input, weight and bias.

use candle_core::{Device, Tensor, Var};
use kronlora_core::models::{layer_norm, layer_norm_composed, softmax_last_dim, softmax_last_dim_composed};

use crate::reference::Lcg;

fn random(rng: &mut Lcg, shape: &[usize], scale: f32, offset: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(rng.vec(n).into_iter().map(|v| v * scale + offset).collect::<Vec<f32>>(), shape, &Device::Cpu)
        .unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn fused_softmax_matches_the_composition_with_gradients() {
    let mut rng = Lcg::new(3);
    let x = Var::from_tensor(&random(&mut rng, &[2, 3, 5, 7], 6.0, 0.0)).unwrap();
    let probe = random(&mut rng, &[2, 3, 5, 7], 1.0, 0.0);
    let fused = softmax_last_dim(x.as_tensor()).unwrap();
    let composed = softmax_last_dim_composed(x.as_tensor()).unwrap();
    assert!(max_diff(&fused, &composed) < 1e-6);
    let g1 = (fused * &probe).unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = (composed * &probe).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(max_diff(g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap()) < 1e-6);
    // Rows with -1e30 (masked) entries stay finite and give those entries zero.
    let masked = Tensor::new(&[[0.5f32, -1e30, 1.0]], &Device::Cpu).unwrap();
    let p = softmax_last_dim(&masked).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(p[0][1], 0.0);
    assert!((p[0][0] + p[0][2] - 1.0).abs() < 1e-6);
}

#[test]
fn fused_layer_norm_matches_the_composition_with_gradients() {
    let mut rng = Lcg::new(4);
    let x = Var::from_tensor(&random(&mut rng, &[3, 4, 16], 3.0, 0.7)).unwrap();
    let w = Var::from_tensor(&random(&mut rng, &[16], 0.5, 1.0)).unwrap();
    let b = Var::from_tensor(&random(&mut rng, &[16], 0.5, 0.0)).unwrap();
    let probe = random(&mut rng, &[3, 4, 16], 1.0, 0.0);
    let fused = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-12).unwrap();
    let composed = layer_norm_composed(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-12).unwrap();
    assert!(max_diff(&fused, &composed) < 1e-5, "{}", max_diff(&fused, &composed));
    let g1 = (fused * &probe).unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = (composed * &probe).unwrap().sum_all().unwrap().backward().unwrap();
    for (name, v) in [("x", &x), ("weight", &w), ("bias", &b)] {
        let d = max_diff(g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap());
        assert!(d < 1e-4, "{name}: {d}");
    }
    // A frozen weight and bias (plain tensors) get no gradient work.
    let (wf, bf) = (w.as_tensor().detach(), b.as_tensor().detach());
    let g =
        (layer_norm(x.as_tensor(), &wf, &bf, 1e-5).unwrap() * &probe).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(g.get(x.as_tensor()).is_some());
}
