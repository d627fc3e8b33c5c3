//! The frozen projection: correct forward, input gradient only, nothing for the weight.

use candle_core::{Device, Tensor, Var};
use kronlora_core::ops::frozen_matmul;

#[test]
fn forward_and_backward_skip_the_weight() {
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::arange(0f32, 24., &dev).unwrap().reshape((2, 3, 4)).unwrap()).unwrap();
    // Even a weight that *is* a variable receives no gradient through frozen_matmul.
    let w = Var::from_tensor(&Tensor::arange(-5f32, 15., &dev).unwrap().reshape((5, 4)).unwrap()).unwrap();
    let y = frozen_matmul(x.as_tensor(), w.as_tensor()).unwrap();
    let want = x.as_tensor().broadcast_matmul(&w.as_tensor().t().unwrap()).unwrap();
    assert_eq!(y.dims(), &[2, 3, 5]);
    assert_eq!(y.to_vec3::<f32>().unwrap(), want.to_vec3::<f32>().unwrap());
    let g = Tensor::arange(0f32, 30., &dev).unwrap().reshape((2, 3, 5)).unwrap();
    let grads = (y * &g).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(w.as_tensor()).is_none(), "frozen weight must get no gradient");
    // A weight that is itself computed from variables works too (no gradient flows into it).
    let w2 = (w.as_tensor() * 2.0).unwrap();
    let y2 = frozen_matmul(x.as_tensor(), &w2).unwrap();
    let grads2 = y2.sum_all().unwrap().backward().unwrap();
    assert!(grads2.get(w.as_tensor()).is_none() && grads2.get(x.as_tensor()).is_some());
    let dx = grads.get(x.as_tensor()).unwrap();
    let want_dx = g.broadcast_matmul(w.as_tensor()).unwrap();
    assert_eq!(dx.to_vec3::<f32>().unwrap(), want_dx.to_vec3::<f32>().unwrap());
}

#[test]
fn matmul_t_matches_candle_matmul_and_its_gradients() {
    use kronlora_core::ops::matmul_t;
    let dev = Device::Cpu;
    let data =
        |n: usize, s: f32| Tensor::from_vec((0..n).map(|i| (i as f32 * s).sin()).collect::<Vec<_>>(), n, &dev).unwrap();
    // lhs [2, 6] read as [4, 3]; rhs [5, 3]; result [4, 5] written as [2, 10].
    let lhs = Var::from_tensor(&data(12, 0.7).reshape((2, 6)).unwrap()).unwrap();
    let rhs = Var::from_tensor(&data(15, 1.3).reshape((5, 3)).unwrap()).unwrap();
    let y = matmul_t(lhs.as_tensor(), rhs.as_tensor(), 4, (2, 10)).unwrap();
    let want = lhs
        .as_tensor()
        .reshape((4, 3))
        .unwrap()
        .matmul(&rhs.as_tensor().t().unwrap())
        .unwrap()
        .reshape((2, 10))
        .unwrap();
    assert_eq!(y.to_vec2::<f32>().unwrap(), want.to_vec2::<f32>().unwrap());
    let g = data(20, 0.3).reshape((2, 10)).unwrap();
    let grads = (y * &g).unwrap().sum_all().unwrap().backward().unwrap();
    let want_grads = (want * &g).unwrap().sum_all().unwrap().backward().unwrap();
    for v in [&lhs, &rhs] {
        let (got, exp) = (grads.get(v.as_tensor()).unwrap(), want_grads.get(v.as_tensor()).unwrap());
        let diff = (got - exp).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "gradient differs by {diff}");
    }
}
