//! Kron-LoRA: `ΔW = A ⊗ (B1·B2)` with a tiny dense `A` and a LoRA-factored inner matrix.

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::{kaiming_uniform, Adapter, AdapterKind, LoraFactors};
use super::{AdapterConfig, DEFAULT_KRON_IN, DEFAULT_KRON_OUT};
use crate::error::Result;
use crate::factorization::resolve_kron_factor;
use crate::grad_mode::param;
use crate::ops::{kron, kron_mix, matmul_t, UpdateProduct};

/// The factor shapes: `d_in = d_a1 · d_b1`, `d_out = d_a2 · d_b2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KronShape {
    pub d_a1: usize,
    pub d_a2: usize,
    pub d_b1: usize,
    pub d_b2: usize,
    pub rank: usize,
}

impl KronShape {
    /// Resolve the factors of a `[out, in]` layer named `layer` from the config.
    pub fn resolve(layer: &str, in_features: usize, out_features: usize, config: &AdapterConfig) -> Result<Self> {
        let d_a1 = resolve_kron_factor(layer, "kronIn", "inFeatures", in_features, config.kron_in, DEFAULT_KRON_IN)?;
        let d_a2 =
            resolve_kron_factor(layer, "kronOut", "outFeatures", out_features, config.kron_out, DEFAULT_KRON_OUT)?;
        Ok(KronShape { d_a1, d_a2, d_b1: in_features / d_a1, d_b2: out_features / d_a2, rank: config.rank })
    }

    /// `d_A1·d_A2 + r·(d_B1 + d_B2)`, the spec's per-layer count.
    pub fn num_parameters(&self) -> usize {
        self.d_a1 * self.d_a2 + self.rank * (self.d_b1 + self.d_b2)
    }
}

/// Up to this `d_A1·r`, the first product multiplies by the block-diagonal `I ⊗ B2` (see
/// `update_product`): still a thin, memory-bound product, so the zeros cost little.
const MAX_BLOCK_DIAGONAL_WIDTH: usize = 64;

#[derive(Clone)]
pub struct KronLora {
    shape: KronShape,
    scale: f64,
    /// `[d_a2, d_a1]`
    a: Var,
    /// `[d_b2, r]`, zero-initialised so that ΔW = 0 at the start.
    b1: Var,
    /// `[r, d_b1]`
    b2: Var,
}

impl KronLora {
    pub fn new(
        layer: &str,
        in_features: usize,
        out_features: usize,
        config: &AdapterConfig,
        device: &Device,
    ) -> Result<Self> {
        let shape = KronShape::resolve(layer, in_features, out_features, config)?;
        let mut rng = StdRng::seed_from_u64(config.seed);
        let a = kaiming_uniform(&mut rng, shape.d_a2, shape.d_a1, device)?;
        let b2 = kaiming_uniform(&mut rng, shape.rank, shape.d_b1, device)?;
        let b1 = Var::zeros((shape.d_b2, shape.rank), DType::F32, device)?;
        Ok(KronLora { shape, scale: config.scale(), a, b1, b2 })
    }

    /// From saved factors `a [d_a2, d_a1]`, `b1 [d_b2, r]`, `b2 [r, d_b1]` (shapes checked by the caller).
    pub fn from_factors(a: &Tensor, b1: &Tensor, b2: &Tensor, scale: f64) -> Result<Self> {
        let (d_a2, d_a1) = a.dims2()?;
        let (d_b2, rank) = b1.dims2()?;
        let d_b1 = b2.dim(1)?;
        let shape = KronShape { d_a1, d_a2, d_b1, d_b2, rank };
        Ok(KronLora { shape, scale, a: Var::from_tensor(a)?, b1: Var::from_tensor(b1)?, b2: Var::from_tensor(b2)? })
    }

    pub fn shape(&self) -> KronShape {
        self.shape
    }
}

impl Adapter for KronLora {
    fn clone_box(&self) -> Box<dyn Adapter> {
        Box::new(self.clone())
    }

    fn kind(&self) -> AdapterKind {
        AdapterKind::KronLora
    }
    fn in_features(&self) -> usize {
        self.shape.d_a1 * self.shape.d_b1
    }
    fn out_features(&self) -> usize {
        self.shape.d_a2 * self.shape.d_b2
    }
    fn scale(&self) -> f64 {
        self.scale
    }
    fn kron_factors(&self) -> Option<(usize, usize)> {
        Some((self.shape.d_a1, self.shape.d_a2))
    }
    fn rank(&self) -> usize {
        self.shape.rank
    }

    /// The reshape-and-contract path: `ΔW` is never built. The first product reads `x` in place
    /// of a reshape (`matmul_t`); the contraction with `A` (scale folded in) is one op that
    /// neither transposes nor copies (`kron_mix`); the last, `Y2 · B1ᵀ`, is left to the layer,
    /// which accumulates it into its output.
    fn update_product(&self, x: &Tensor) -> Result<UpdateProduct> {
        let KronShape { d_a1, d_b1, rank: r, .. } = self.shape;
        let n = x.elem_count() / (d_a1 * d_b1);
        let (a, b1, b2) = (param(&self.a), param(&self.b1), param(&self.b2));
        // Z = X · B2ᵀ with X = x as [n·d_a1, d_b1]:            [n·d_a1, r]
        let z = if d_a1 * r <= MAX_BLOCK_DIAGONAL_WIDTH {
            // The same values as x [n, in] · (I ⊗ B2)ᵀ, [n, d_a1·r] row-major: a product only
            // r columns wide runs at a quarter of gemm's speed (narrow micro-kernels, and its
            // B2 gradient at a quarter too), one d_a1·r wide at LoRA's, though d_a1 − 1 of
            // every d_a1 multiplications are by zeros. It reads `x` once either way.
            let eye = Tensor::eye(d_a1, DType::F32, x.device())?;
            matmul_t(x, &kron(&eye, &b2)?, n, (n * d_a1, r))?
        } else {
            matmul_t(x, &b2, n * d_a1, (n * d_a1, r))?
        };
        // Y2[i, a2, :] = s · Σ_a1 A[a2, a1] · Z[i, a1, :]:       [n·d_a2, r], whose product with
        // B1ᵀ, [n·d_a2, d_b2], is row-major the same as [.., d_a2·d_b2] = [.., out]
        let y2 = kron_mix(&z, &a, self.scale)?;
        Ok(UpdateProduct { left: y2, right: b1 })
    }

    fn delta_weight(&self) -> Result<Tensor> {
        let inner = self.b1.matmul(self.b2.as_tensor())?;
        Ok(kron(self.a.as_tensor(), &inner)?.affine(self.scale, 0.0)?)
    }

    fn parameters(&self) -> Vec<(&'static str, &Var)> {
        vec![("A", &self.a), ("B1", &self.b1), ("B2", &self.b2)]
    }

    /// `A ⊗ (B1 B2) = (A ⊗ B1)(I ⊗ B2)`: LoRA of rank `d_A1·r` with `lora_B = s·(A ⊗ B1)`,
    /// `lora_A = I ⊗ B2`, and `alpha = rank` so that the LoRA scale is exactly 1.
    fn to_lora(&self) -> Result<LoraFactors> {
        let d_a1 = self.shape.d_a1;
        let eye = Tensor::eye(d_a1, DType::F32, self.a.device())?;
        let lora_a = kron(&eye, self.b2.as_tensor())?;
        let lora_b = kron(self.a.as_tensor(), self.b1.as_tensor())?.affine(self.scale, 0.0)?;
        let rank = d_a1 * self.shape.rank;
        Ok(LoraFactors { lora_a, lora_b, rank, alpha: rank as f64 })
    }
}
