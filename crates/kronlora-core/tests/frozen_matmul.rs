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
