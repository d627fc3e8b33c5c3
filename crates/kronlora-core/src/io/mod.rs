//! Reading model files: Hugging Face directories (config.json + safetensors).

mod safetensors_dir;

pub use safetensors_dir::{read_json_config, Weights};
