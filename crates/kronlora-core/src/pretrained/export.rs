//! A model's adapter in other tools' formats (`model.exportAdapter`): as the plain LoRA it
//! exactly is for PEFT (`peft-lora`), as a GGUF LoRA file for llama.cpp (`gguf-lora`), and as a
//! LyCORIS / kohya file (`lycoris`: LoKr, the same factors).
//! A Kron-LoRA update `s·(A ⊗ B1·B2)` is a LoRA of rank `d_A1·r` with `lora_A = I ⊗ B2` and
//! `lora_B = s·(A ⊗ B1)` (`Adapter::to_lora`): no SVD, nothing approximated.

use candle_core::quantized::gguf_file::Value;
use candle_core::Tensor;

use super::PretrainedModel;
use crate::adapters::{Adapter, AdapterKind, KronShape};
use crate::error::{Error, Result};
use crate::io::peft::peft_decompose_factor;
use crate::io::peft::ADAPTER_LAYOUT;
use crate::io::{
    gguf_lora_bytes, gguf_tensor_name, is_kronlora_gguf, is_kronlora_safetensors, lycoris_module_key, permute,
    safetensors_bytes, write_owned_dir, write_owned_file, GgufLoraPair, Storage, LYCORIS_MARKER,
};
use crate::TensorData;

/// What `exportAdapter` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// A PEFT LoRA directory (`adapter_config.json`, `adapter_model.safetensors`).
    PeftLora,
    /// One GGUF LoRA file for llama.cpp and node-llama-cpp (Llama-family models).
    GgufLora,
    /// One LyCORIS / kohya safetensors file: LoKr for Kron-LoRA, LoRA for LoRA.
    Lycoris,
}

impl ExportFormat {
    pub const NAMES: [&'static str; 3] = ["peft-lora", "gguf-lora", "lycoris"];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "peft-lora" => Some(ExportFormat::PeftLora),
            "gguf-lora" => Some(ExportFormat::GgufLora),
            "lycoris" => Some(ExportFormat::Lycoris),
            _ => None,
        }
    }
}

/// Whether LyCORIS's loader rebuilds this Kron-LoRA adapter's factor shapes: it derives them
/// from one factor with PEFT's factorization, choosing that factor from the larger side of
/// `lokr_w1`, so only d_A1 = d_A2 shapes that the factor reproduces qualify.
fn lycoris_reads_lokr(adapter: &dyn Adapter) -> bool {
    let Some((d_a1, d_a2)) = adapter.kron_factors() else { return false };
    let shape = KronShape {
        d_a1,
        d_a2,
        d_b1: adapter.in_features() / d_a1,
        d_b2: adapter.out_features() / d_a2,
        rank: adapter.rank(),
    };
    d_a1 == d_a2 && peft_decompose_factor(&[shape]).is_some()
}

/// An adapter as LoRA factors `(lora_A [rank, in], lora_B [out, rank], rank, scale)`: its update
/// is `scale · lora_B · lora_A`.
fn lora_form(adapter: &dyn Adapter) -> Result<(Tensor, Tensor, usize, f64)> {
    match adapter.kind() {
        AdapterKind::KronLora => {
            let l = adapter.to_lora()?;
            // alpha = rank: PEFT's and llama.cpp's alpha / rank is exactly 1.
            Ok((l.lora_a, l.lora_b, l.rank, l.alpha / l.rank as f64))
        }
        AdapterKind::Lora => {
            let param = |name: &str| {
                adapter
                    .parameter(name)
                    .map(|v| v.as_tensor().clone())
                    .ok_or_else(|| Error::InvalidState(format!("the LoRA adapter has no parameter `{name}`")))
            };
            Ok((param("lora_A")?, param("lora_B")?, adapter.rank(), adapter.scale()))
        }
    }
}

impl PretrainedModel {
    /// Adapter `name` as a LyCORIS file: Kron-LoRA as LoKr (`lokr_w1 = A`, `lokr_w2_a = B1`,
    /// `lokr_w2_b = B2`), LoRA as `lora_down` / `lora_up`; `alpha = scale · r` so LyCORIS's
    /// `alpha / r` is the adapter's scale (rsLoRA's included). LyCORIS rebuilds a LoKr module's
    /// shapes from one factor (as PEFT does), so it can read Kron-LoRA factors only where
    /// d_A1 = d_A2 and that factor gives them; other Kron-LoRA modules (the default 2 × 4) are
    /// written as the exact LoRA they are (rank d_A1·r), which LyCORIS reads.
    pub fn lycoris(&self, name: Option<&str>) -> Result<Vec<u8>> {
        let info = self.resolve_adapter_name(name)?;
        if self.head.is_some() {
            return Err(Error::Unsupported(
                "a LyCORIS file holds no classification head; export a sequence-classification adapter as \"peft-lora\""
                    .into(),
            ));
        }
        let mut tensors = Vec::new();
        for (path, adapter_name, adapter) in self.adapters() {
            if adapter_name != info.name {
                continue;
            }
            let key = lycoris_module_key(&path);
            let param = |n: &str| -> Result<TensorData> {
                TensorData::from_tensor(adapter.parameter(n).expect("the adapter's own parameter").as_tensor())
            };
            let alpha = if adapter.kind() == AdapterKind::KronLora && !lycoris_reads_lokr(adapter) {
                let (lora_a, lora_b, rank, scale) = lora_form(adapter)?;
                tensors.push((format!("{key}.lora_down.weight"), TensorData::from_tensor(&lora_a)?));
                tensors.push((format!("{key}.lora_up.weight"), TensorData::from_tensor(&lora_b)?));
                (scale * rank as f64) as f32
            } else {
                let names: &[(&str, &str)] = match adapter.kind() {
                    AdapterKind::KronLora => &[("A", "lokr_w1"), ("B1", "lokr_w2_a"), ("B2", "lokr_w2_b")],
                    AdapterKind::Lora => &[("lora_A", "lora_down.weight"), ("lora_B", "lora_up.weight")],
                };
                for (ours, theirs) in names {
                    tensors.push((format!("{key}.{theirs}"), param(ours)?));
                }
                (adapter.scale() * adapter.rank() as f64) as f32
            };
            tensors.push((format!("{key}.alpha"), TensorData { shape: vec![], data: vec![alpha] }));
        }
        let network = match info.config.kind {
            AdapterKind::KronLora => "lokr",
            AdapterKind::Lora => "lora",
        };
        safetensors_bytes(
            &tensors,
            &[
                ("ss_network_module", "lycoris.kohya"),
                ("ss_network_args", &format!("{{\"algo\": \"{network}\"}}")),
                (LYCORIS_MARKER, "1"),
                ("kronlora.adapter", &info.name),
            ],
        )
    }

    /// Write adapter `name` (default: the only one) as `format` to `path`: a directory for
    /// `peft-lora` (as `save_adapter` writes one), a file for `gguf-lora`. Nothing that kronlora
    /// did not write is replaced.
    pub fn export_adapter(
        &self,
        storage: &dyn Storage,
        path: &str,
        name: Option<&str>,
        format: ExportFormat,
    ) -> Result<()> {
        if path.is_empty() {
            return Err(Error::InvalidOption("the export path is empty; pass a path".into()));
        }
        match format {
            ExportFormat::PeftLora => write_owned_dir(storage, path, &ADAPTER_LAYOUT, &self.peft_files(name, true)?),
            ExportFormat::GgufLora => {
                write_owned_file(storage, path, "GGUF LoRA file", is_kronlora_gguf, &self.gguf_lora(name)?)
            }
            ExportFormat::Lycoris => {
                if !path.to_ascii_lowercase().ends_with(".safetensors") {
                    return Err(Error::InvalidOption(format!(
                        "`{path}`: a LyCORIS file's path must end in .safetensors"
                    )));
                }
                write_owned_file(storage, path, "LyCORIS file", |b| is_kronlora_safetensors(&b), &self.lycoris(name)?)
            }
        }
    }

    /// Adapter `name` as a GGUF LoRA file for llama.cpp. One `adapter.lora.alpha` serves every
    /// pair there, scaled by each pair's own rank; the first module's `scale · rank` is the
    /// alpha, and a module whose `scale · rank` differs has the ratio folded into its `lora_b`.
    pub fn gguf_lora(&self, name: Option<&str>) -> Result<Vec<u8>> {
        let info = self.resolve_adapter_name(name)?;
        let layout = self.backbone.llama_cpp_layout().ok_or_else(|| {
            Error::Unsupported(format!(
                "a GGUF LoRA file is for Llama-family models (llama.cpp serves them); this is a `{}` model: export format \"peft-lora\" instead",
                self.backbone.model_type()
            ))
        })?;
        if self.head.is_some() {
            return Err(Error::Unsupported(
                "a GGUF LoRA file holds no classification head; export a sequence-classification adapter as \"peft-lora\""
                    .into(),
            ));
        }
        let mut alpha = None;
        let mut pairs = Vec::new();
        for (path, adapter_name, adapter) in self.adapters() {
            if adapter_name != info.name {
                continue;
            }
            let weight = gguf_tensor_name(&format!("{path}.weight")).ok_or_else(|| {
                Error::Unsupported(format!("llama.cpp has no tensor for `{path}`, which has the adapter"))
            })?;
            let (lora_a, mut lora_b, rank, scale) = lora_form(adapter)?;
            let alpha = *alpha.get_or_insert((scale * rank as f64) as f32);
            let fold = scale * rank as f64 / alpha as f64;
            if fold != 1.0 {
                lora_b = lora_b.affine(fold, 0.0)?;
            }
            if let Some((heads, kv_heads)) = layout.permuted_heads {
                if weight.ends_with(".attn_q.weight") {
                    lora_b = permute(&lora_b, heads)?;
                } else if weight.ends_with(".attn_k.weight") {
                    lora_b = permute(&lora_b, kv_heads)?;
                }
            }
            pairs.push(GgufLoraPair { weight, lora_a, lora_b });
        }
        let extra = [
            ("general.name", Value::String(info.name.clone())),
            ("kronlora.adapter.type", Value::String(info.config.kind.name().to_string())),
            ("kronlora.base_model", Value::String(self.source_name.clone())),
        ];
        gguf_lora_bytes(layout.architecture, alpha.unwrap_or(0.0), &pairs, &extra)
    }
}
