//! PEFT's adapter files: `adapter_config.json` + `adapter_model.safetensors`, tensor keys
//! `base_model.model.<module path>.<param>`. The format only: what a live model holds, and which
//! of its projections a module is, is `pretrained`'s business.
//!
//! LoRA uses PEFT's exact names (`lora_A.weight [r, in]`, `lora_B.weight [out, r]`); Kron-LoRA
//! uses LoKr's (`lokr_w1 = A`, `lokr_w2_a = B1`, `lokr_w2_b = B2`) with `peft_type: "LOKR"`, and
//! its own fields under `kronlora` (PEFT ignores unknown keys). A trained classification head
//! is saved as PEFT's `modules_to_save`. Loading reads shapes from the tensors, so any factor
//! choice round-trips.

mod config;
mod tensors;

use serde_json::Value;

use super::owned_dir::{Marker, OwnedLayout};
use super::storage::{read_safetensors_bytes, safetensors_bytes};
use crate::error::{Error, Result};
use crate::TensorData;

pub use config::{adapter_config_summary_json, peft_decompose_factor, KronloraBlock, PeftAdapterConfig, TargetList};
pub use tensors::{tensor_key, AdapterTensors, ModuleTensors, ModuleWeights, Param, KEY_PREFIX};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// kronlora's `adapter_config.json` carries a `kronlora` block; PEFT's own does not.
pub const ADAPTER_MARKER: Marker = Marker {
    file: CONFIG_FILE,
    holds: "`kronlora` block",
    is_ours: |bytes| serde_json::from_slice::<Value>(bytes).is_ok_and(|v| v["kronlora"].is_object()),
};

/// What `save_adapter` may write and replace.
pub const ADAPTER_LAYOUT: OwnedLayout =
    OwnedLayout { what: "adapter", files: &[WEIGHTS_FILE, CONFIG_FILE], markers: &[ADAPTER_MARKER] };

/// The two files of an adapter, weights first and the config (the marker) last, see
/// `io::owned_dir`: `config`, each module's tensors, and `extra` tensors already under their
/// keys (a head's `modules_to_save`).
pub fn adapter_files(
    config: &PeftAdapterConfig,
    modules: Vec<ModuleTensors>,
    extra: Vec<(String, TensorData)>,
) -> Result<Vec<(String, Vec<u8>)>> {
    let kron_shapes: Vec<_> = modules.iter().filter_map(ModuleTensors::kron_shape).collect();
    let config = config.to_json(&kron_shapes)?;
    let mut tensors: Vec<(String, TensorData)> = modules.into_iter().flat_map(ModuleTensors::into_keyed).collect();
    tensors.extend(extra);
    Ok(vec![(WEIGHTS_FILE.into(), safetensors_bytes(&tensors, &[("format", "pt")])?), (CONFIG_FILE.into(), config)])
}

/// An adapter's weights file (`path` for errors): every tensor as f32, all finite, grouped by
/// module for an adapter of `config`'s kind.
pub fn read_adapter_weights(bytes: &[u8], path: &str, config: &PeftAdapterConfig) -> Result<AdapterTensors> {
    // A file that is not a float safetensors file is a bad adapter (a model file), whatever
    // code the shared reader gives it.
    let tensors = read_safetensors_bytes(bytes, path).map_err(|e| match e {
        Error::InvalidData(m) => Error::InvalidModel(m),
        other => other,
    })?;
    if let Some((key, t)) = tensors.iter().find(|(_, t)| t.data.iter().any(|v| !v.is_finite())) {
        let at = t.data.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(Error::InvalidModel(format!(
            "{path}: tensor `{key}` holds {} at index {at}; the file is corrupt",
            t.data[at]
        )));
    }
    Ok(AdapterTensors::group(tensors, config.kind))
}
