//! Weights of a Hugging Face model directory: `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`, memory-mapped so that loading does not hold two copies.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::safetensors::BufferedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde::de::DeserializeOwned;

use super::{ModelSource, TensorSource};
use crate::error::{Error, Result};

pub(crate) fn model_file_error(path: &Path, what: String) -> Error {
    Error::InvalidModel(format!("{}: {what}", path.display()))
}

/// Parse `config.json` (or another JSON file) into `T`, naming the file and field on error.
pub fn read_json_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| model_file_error(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| model_file_error(path, format!("invalid: {e}")))
}

/// Memory-mapped files (native) or in-memory buffers (WASM, which has no file system).
enum Store {
    #[cfg(not(target_arch = "wasm32"))]
    Mapped { files: Vec<super::mapped::MappedSafetensors>, route: std::collections::HashMap<String, usize> },
    Buffers { buffers: Vec<BufferedSafetensors>, route: std::collections::HashMap<String, usize> },
}

impl Store {
    fn load(&self, name: &str, device: &Device) -> Result<Tensor> {
        let missing = || Error::InvalidModel(format!("no tensor {name}"));
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            Store::Mapped { files, route } => files[*route.get(name).ok_or_else(missing)?].load(name, device),
            Store::Buffers { buffers, route } => Ok(buffers[*route.get(name).ok_or_else(missing)?].load(name, device)?),
        }
    }
}

/// The tensors of a model directory, looked up by name with an optional prefix (`bert.`).
pub struct Weights {
    files: Store,
    /// What to name in errors: the single file, or the index of a sharded model.
    path: PathBuf,
    names: BTreeSet<String>,
    prefix: String,
    device: Device,
}

impl Weights {
    /// Open `dir/model.safetensors` or the shards of `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path, device: &Device) -> Result<Self> {
        Self::from_source(&mut ModelSource::Path(dir.to_path_buf()), device)
    }

    /// The file that describes the weights (the single file, or the index) and the shard files.
    fn shards(source: &ModelSource) -> Result<(String, Vec<String>)> {
        const SINGLE: &str = "model.safetensors";
        const INDEX: &str = "model.safetensors.index.json";
        if source.exists(SINGLE) {
            return Ok((SINGLE.into(), vec![SINGLE.into()]));
        }
        if !source.exists(INDEX) {
            return Err(Error::InvalidModel(format!("{}: no {SINGLE} or {INDEX} among the model files", source.display())));
        }
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: std::collections::HashMap<String, String>,
        }
        let index_path = source.file_path(INDEX);
        let idx: Index = serde_json::from_slice(&source.read(INDEX)?).map_err(|e| model_file_error(&index_path, format!("invalid: {e}")))?;
        let shards: BTreeSet<String> = idx.weight_map.into_values().collect();
        if let Some(missing) = shards.iter().find(|s| !source.exists(s)) {
            return Err(model_file_error(&index_path, format!("shard {} is missing", source.file_path(missing).display())));
        }
        Ok((INDEX.into(), shards.into_iter().collect()))
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn map(path: PathBuf, shards: &[PathBuf], device: &Device) -> Result<Self> {
        let mut files = Vec::new();
        let mut route = std::collections::HashMap::new();
        let mut names = BTreeSet::new();
        for shard in shards {
            let file = super::mapped::MappedSafetensors::open(shard)?;
            for name in file.names() {
                route.insert(name.clone(), files.len());
                names.insert(name.clone());
            }
            files.push(file);
        }
        Ok(Weights { files: Store::Mapped { files, route }, path, names, prefix: String::new(), device: device.clone() })
    }

    #[cfg(target_arch = "wasm32")]
    fn map(path: PathBuf, _shards: &[PathBuf], _device: &Device) -> Result<Self> {
        Err(model_file_error(&path, "WASM has no file system; pass the files' bytes".into()))
    }

    /// The weights of a model source: memory-mapped from disk, or parsed from given bytes.
    pub fn from_source(source: &mut ModelSource, device: &Device) -> Result<Self> {
        let (described_by, shards) = Self::shards(source)?;
        let path = source.file_path(&described_by);
        if source.is_path().is_some() {
            let files: Vec<PathBuf> = shards.iter().map(|s| source.file_path(s)).collect();
            return Self::map(path, &files, device);
        }
        let mut buffers = Vec::new();
        let mut route = std::collections::HashMap::new();
        let mut names = BTreeSet::new();
        for shard in shards {
            let bytes = source.take(&shard)?;
            let st = BufferedSafetensors::new(bytes).map_err(|e| Error::InvalidModel(format!("{shard}: not a valid safetensors file: {e}")))?;
            for (name, _) in st.tensors() {
                route.insert(name.clone(), buffers.len());
                names.insert(name);
            }
            buffers.push(st);
        }
        Ok(Weights { files: Store::Buffers { buffers, route }, path, names, prefix: String::new(), device: device.clone() })
    }

    /// Use `prefix` (e.g. `bert.`) when it is what the file's names start with.
    pub fn detect_prefix(&mut self, probe: &str, candidates: &[&str]) {
        if let Some(p) = candidates.iter().find(|p| self.names.contains(&format!("{p}{probe}"))) {
            self.prefix = p.to_string();
        }
    }
}

impl Weights {
    /// The stored name of `name`: with the prefix, or as is (heads such as `classifier` sit
    /// outside the `bert.` prefix in transformers' task models).
    fn stored_name(&self, name: &str) -> Option<String> {
        let prefixed = format!("{}{name}", self.prefix);
        if self.names.contains(&prefixed) {
            Some(prefixed)
        } else if self.names.contains(name) {
            Some(name.to_string())
        } else {
            None
        }
    }
}

impl TensorSource for Weights {
    fn contains(&self, name: &str) -> bool {
        self.stored_name(name).is_some()
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let Some(full) = self.stored_name(name) else {
            return Err(model_file_error(&self.path, format!("tensor `{}{name}` is missing", self.prefix)));
        };
        let t = self
            .files
            .load(&full, &self.device)
            .map_err(|e| model_file_error(&self.path, format!("tensor `{full}` cannot be read: {e}")))?;
        if t.dims() != shape {
            return Err(model_file_error(
                &self.path,
                format!("tensor `{full}` has shape {:?}, but the config implies {shape:?}", t.dims()),
            ));
        }
        Ok(t.to_dtype(DType::F32)?)
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn device(&self) -> &Device {
        &self.device
    }
}
