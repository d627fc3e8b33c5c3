//! `saveMerged`: the model with its active adapters folded into the weights, as files other
//! tools load without adapter support (a Hugging Face directory: `merged_hf`). For a GGUF base, a GGUF file: every tensor and metadata
//! entry of the base copied unchanged (quantised ones stay quantised), the adapted projections'
//! weights replaced by their merged values in f32 (Q and K rows permuted as llama.cpp stores
//! them), which keeps every merged value exact at the cost of those tensors' size.

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Tensor;

use super::PretrainedModel;
use crate::error::{Error, Result};
use crate::io::{gguf_tensor_name, is_kronlora_gguf, permute, write_owned_file, GgufFile, Storage, GGUF_LORA_MARKER};

impl PretrainedModel {
    /// `(projection, merged weight)` for each projection an active adapter changes.
    pub(super) fn merged_weights(&self) -> Result<Vec<(String, Tensor)>> {
        let active = self.active_adapters();
        if active.is_empty() {
            return Err(Error::InvalidState("no adapter is active; there is nothing to merge into a file".into()));
        }
        let mut out = Vec::new();
        for p in self.backbone.projections() {
            if p.is_merged() {
                if let Some(w) = p.weight()? {
                    out.push((p.name.clone(), w));
                }
                continue;
            }
            let mut deltas = Vec::new();
            for (name, adapter) in p.adapters() {
                let Some(weight) = active.iter().find(|a| a.name == name).map(|a| a.weight) else { continue };
                deltas.push(adapter.delta_weight()?.affine(weight, 0.0)?);
            }
            // Only a changed projection is read in f32 (a quantised one is dequantised here).
            let Some(mut merged) = (if deltas.is_empty() { None } else { p.weight()? }) else { continue };
            for delta in deltas {
                merged = (merged + delta)?;
            }
            out.push((p.name.clone(), merged));
        }
        Ok(out)
    }

    /// Write the model with its active adapters merged to `path`: a `.gguf` file for a model
    /// loaded from one (read again from its path through `storage`), else a Hugging Face
    /// directory (`merged_hf`).
    pub fn save_merged(&self, storage: &dyn Storage, path: &str) -> Result<()> {
        if path.is_empty() {
            return Err(Error::InvalidOption("the path is empty; pass where to write the merged model".into()));
        }
        let from_gguf = self.source_name.to_ascii_lowercase().ends_with(".gguf");
        let to_gguf = path.to_ascii_lowercase().ends_with(".gguf");
        match (from_gguf, to_gguf) {
            (true, true) => {
                let bytes = self.merged_gguf(storage)?;
                write_owned_file(storage, path, "merged GGUF file", is_kronlora_gguf, &bytes)
            }
            (true, false) => Err(Error::InvalidOption(format!(
                "`{path}`: a model loaded from a .gguf file is merged into a GGUF file; pass a path ending in .gguf"
            ))),
            (false, true) => Err(Error::InvalidOption(format!(
                "`{path}`: a merged GGUF file needs a model loaded from a .gguf file; `{}` is a Hugging Face model, merged into a directory: pass a directory path",
                self.source_name
            ))),
            (false, false) => self.save_merged_hf(storage, path),
        }
    }

    fn merged_gguf(&self, storage: &dyn Storage) -> Result<Vec<u8>> {
        let merged = self.merged_weights()?;
        let source = GgufFile::from_bytes(&self.source_name, storage.read(&self.source_name)?)?;
        let layout = self.backbone.llama_cpp_layout();
        let mut replaced = std::collections::HashMap::new();
        for (projection, w) in merged {
            let name = gguf_tensor_name(&format!("{projection}.weight")).ok_or_else(|| {
                Error::Unsupported(format!("llama.cpp has no tensor for `{projection}`, which an adapter changes"))
            })?;
            let w = match layout.as_ref().and_then(|l| l.permuted_heads) {
                Some((heads, _)) if name.ends_with(".attn_q.weight") => permute(&w, heads)?,
                Some((_, kv_heads)) if name.ends_with(".attn_k.weight") => permute(&w, kv_heads)?,
                _ => w,
            };
            let w = w.to_device(&candle_core::Device::Cpu)?.contiguous()?;
            replaced.insert(name, QTensor::quantize(&w, GgmlDType::F32)?);
        }
        let mut tensors = Vec::with_capacity(source.tensor_names().len());
        for name in source.tensor_names() {
            let t = match replaced.remove(name) {
                Some(t) => t,
                None => source.raw_tensor(name)?,
            };
            tensors.push((name.clone(), t));
        }
        if let Some(missing) = replaced.keys().next() {
            return Err(Error::InvalidModel(format!("{}: has no tensor `{missing}`", self.source_name)));
        }
        let names: Vec<Value> = self.active_adapters().into_iter().map(|a| Value::String(a.name)).collect();
        // The writer aligns to its own default: the source's alignment entry would misstate it.
        let mut metadata: Vec<(&str, &Value)> = source
            .metadata()
            .iter()
            .filter(|(k, _)| k.as_str() != "general.alignment")
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let (marker, merged_names) = (Value::U32(1), Value::Array(names));
        metadata.retain(|(k, _)| !k.starts_with("kronlora."));
        metadata.push((GGUF_LORA_MARKER, &marker));
        metadata.push(("kronlora.merged_adapters", &merged_names));
        let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut out = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut out, &metadata, &refs)
            .map_err(|e| Error::InvalidState(format!("cannot write the merged GGUF file: {e}")))?;
        Ok(out.into_inner())
    }
}
