//! Reading model files: Hugging Face directories (config.json + safetensors) and GGUF files.

mod gguf;
mod gguf_layout;
mod gguf_lora;
mod lycoris;
#[cfg(not(target_arch = "wasm32"))]
mod mapped;
mod owned_dir;
pub mod peft;
mod safetensors_dir;
mod source;
mod storage;

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::Result;

pub use gguf::{gguf_tensor_name, permute, unpermute, GgufFile, GgufWeights};
pub use gguf_layout::ggml_type_name;
pub use gguf_lora::{gguf_lora_bytes, is_kronlora_gguf, GgufLoraPair, GGUF_LORA_MARKER};
pub use lycoris::{is_kronlora_safetensors, lycoris_module_key, LYCORIS_MARKER, LYCORIS_PREFIX};
pub use owned_dir::{
    check_writable, is_owned_dir, remove_owned_dir, write_owned_dir, write_owned_file, Marker, OwnedLayout, Target,
};
pub use safetensors_dir::{read_json_config, Weights};
pub use source::ModelSource;
#[cfg(not(target_arch = "wasm32"))]
pub use storage::FsStorage;
pub use storage::{join, read_safetensors_bytes, read_text, safetensors_bytes, EntryKind, Storage};

/// Named f32 tensors of a model, whatever the file format; names are Hugging Face's.
pub trait TensorSource {
    /// Load `name` as f32 with exactly `shape`, or an error naming the file and the tensor.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor>;
    /// A frozen projection or embedding table as the model should hold it: `get`'s f32 tensor,
    /// unless the source keeps its quantised blocks (GGUF loaded with `quantized`).
    fn get_frozen(&self, name: &str, shape: &[usize]) -> Result<crate::models::FrozenWeight> {
        Ok(self.get(name, shape)?.into())
    }
    fn contains(&self, name: &str) -> bool;
    /// Stored names (as the file spells them) that no `get` has read: a checkpoint holding more
    /// than its config describes (more layers, say) is refused rather than half-read.
    fn unread(&self) -> Vec<String>;
    /// The file to name in errors.
    fn path(&self) -> &Path;
    fn device(&self) -> &Device;
}
