//! GGUF LoRA adapter files as llama.cpp's `convert_lora_to_gguf.py` writes them and
//! `llama_adapter_lora_init` reads them: `general.type = adapter`, `adapter.type = lora`,
//! `adapter.lora.alpha`, and per adapted weight `<gguf name>.lora_a` (`[rank, in]`) and
//! `.lora_b` (`[out, rank]`), f32. llama.cpp scales each pair by `alpha / rank` (rank: that
//! pair's), or by 1 when alpha is 0.

use std::io::Cursor;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Tensor;

use crate::error::{Error, Result};

/// The metadata key that marks a file kronlora wrote (so a later export may replace it).
pub const GGUF_LORA_MARKER: &str = "kronlora.format";

/// One adapted weight: its GGUF name (`blk.0.attn_q.weight`) and factors, f32 on any device.
pub struct GgufLoraPair {
    pub weight: String,
    pub lora_a: Tensor,
    pub lora_b: Tensor,
}

/// The bytes of a GGUF LoRA file for a base of `architecture`.
pub fn gguf_lora_bytes(
    architecture: &str,
    alpha: f32,
    pairs: &[GgufLoraPair],
    extra: &[(&str, Value)],
) -> Result<Vec<u8>> {
    let mut metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String(architecture.into())),
        ("general.type", Value::String("adapter".into())),
        ("adapter.type", Value::String("lora".into())),
        ("adapter.lora.alpha", Value::F32(alpha)),
        (GGUF_LORA_MARKER, Value::U32(1)),
    ];
    metadata.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    let mut tensors = Vec::with_capacity(2 * pairs.len());
    for p in pairs {
        for (suffix, t) in [("lora_a", &p.lora_a), ("lora_b", &p.lora_b)] {
            let t = t.to_device(&candle_core::Device::Cpu)?.to_dtype(candle_core::DType::F32)?.contiguous()?;
            tensors.push((format!("{}.{suffix}", p.weight), QTensor::quantize(&t, GgmlDType::F32)?));
        }
    }
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &tensors)
        .map_err(|e| Error::InvalidState(format!("cannot write the GGUF LoRA file: {e}")))?;
    Ok(out.into_inner())
}

/// Whether `bytes` are a GGUF file kronlora wrote (its metadata holds `GGUF_LORA_MARKER`).
pub fn is_kronlora_gguf(bytes: Vec<u8>) -> bool {
    // GgufFile checks the layout before candle's parser allocates what the file states; it
    // takes the bytes read for the check, no copy.
    super::GgufFile::from_bytes("", bytes).is_ok_and(|f| f.has(GGUF_LORA_MARKER))
}
