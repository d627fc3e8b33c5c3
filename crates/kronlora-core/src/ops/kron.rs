//! The Kronecker product of two matrices (used for `ΔW`, merging and LoRA export; never in the
//! training path).

use candle_core::{Result, Tensor};

/// `kron(a, b)` for `a [p, q]`, `b [m, n]`: `[p·m, q·n]` with
/// `out[i·m + k, j·n + l] = a[i, j] · b[k, l]` (numpy / torch convention).
pub fn kron(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (p, q) = a.dims2()?;
    let (m, n) = b.dims2()?;
    let a = a.reshape((p, 1, q, 1))?;
    let b = b.reshape((1, m, 1, n))?;
    a.broadcast_mul(&b)?.reshape((p * m, q * n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_definition() {
        let a = Tensor::new(&[[1f32, 2.], [3., 4.], [5., 6.]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[0f32, 1., 2.], [3., 4., 5.]], &Device::Cpu).unwrap();
        let k = kron(&a, &b).unwrap().to_vec2::<f32>().unwrap();
        let (av, bv) = (a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
        assert_eq!((k.len(), k[0].len()), (6, 6));
        for i in 0..3 {
            for j in 0..2 {
                for r in 0..2 {
                    for c in 0..3 {
                        assert_eq!(k[i * 2 + r][j * 3 + c], av[i][j] * bv[r][c]);
                    }
                }
            }
        }
    }
}
