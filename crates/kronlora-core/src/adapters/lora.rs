//! LoRA (Hu et al.), the baseline: `ΔW = s · B·A`.

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::AdapterConfig;
use super::{kaiming_uniform, Adapter, AdapterKind};
use crate::error::Result;
use crate::grad_mode::param;
use crate::ops::{matmul_t, UpdateProduct};

#[derive(Clone)]
pub struct Lora {
    in_features: usize,
    out_features: usize,
    scale: f64,
    /// `lora_A [r, in]`, Kaiming-uniform.
    a: Var,
    /// `lora_B [out, r]`, zeros.
    b: Var,
}

impl Lora {
    pub fn new(in_features: usize, out_features: usize, config: &AdapterConfig, device: &Device) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let a = kaiming_uniform(&mut rng, config.rank, in_features, device)?;
        let b = Var::zeros((out_features, config.rank), DType::F32, device)?;
        Ok(Lora { in_features, out_features, scale: config.scale(), a, b })
    }
}

impl Lora {
    /// From saved `lora_A [r, in]` and `lora_B [out, r]` (shapes checked by the caller).
    pub fn from_factors(a: &Tensor, b: &Tensor, scale: f64) -> Result<Self> {
        Ok(Lora {
            in_features: a.dim(1)?,
            out_features: b.dim(0)?,
            scale,
            a: Var::from_tensor(a)?,
            b: Var::from_tensor(b)?,
        })
    }
}

impl Adapter for Lora {
    fn clone_box(&self) -> Box<dyn Adapter> {
        Box::new(self.clone())
    }

    fn kind(&self) -> AdapterKind {
        AdapterKind::Lora
    }
    fn in_features(&self) -> usize {
        self.in_features
    }
    fn out_features(&self) -> usize {
        self.out_features
    }
    fn scale(&self) -> f64 {
        self.scale
    }
    fn rank(&self) -> usize {
        // lora_A is [r, in].
        self.a.dims()[0]
    }

    fn update_product(&self, x: &Tensor) -> Result<UpdateProduct> {
        let n = x.elem_count() / self.in_features;
        // Scale the [rows, r] intermediate rather than the [rows, out] output: far fewer elements.
        let (a, b) = (param(&self.a), param(&self.b));
        let h = matmul_t(x, &a, n, (n, a.dim(0)?))?.affine(self.scale, 0.0)?;
        Ok(UpdateProduct { left: h, right: b })
    }

    fn delta_weight(&self) -> Result<Tensor> {
        Ok(self.b.matmul(self.a.as_tensor())?.affine(self.scale, 0.0)?)
    }

    fn parameters(&self) -> Vec<(&'static str, &Var)> {
        vec![("lora_A", &self.a), ("lora_B", &self.b)]
    }
}
