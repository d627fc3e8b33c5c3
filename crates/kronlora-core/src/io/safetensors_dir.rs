//! Weights of a Hugging Face model directory: `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`, memory-mapped so that loading does not hold two copies.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::safetensors::BufferedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde::de::DeserializeOwned;

use super::{ModelSource, TensorSource};
use crate::error::{Error, Result};

pub(crate) fn model_file_error(path: &Path, what: String) -> Error {
    Error::InvalidModel(format!("{}: {what}", path.display()))
}

/// The stored dtypes that convert to f32 exactly as their bits mean (integer and 8-bit float
/// tensors are not model weights this loader can read).
pub(crate) fn check_float_dtype(path: &Path, name: &str, dtype: safetensors::Dtype) -> Result<()> {
    use safetensors::Dtype::{BF16, F16, F32, F64};
    if matches!(dtype, F32 | F16 | BF16 | F64) {
        return Ok(());
    }
    Err(model_file_error(
        path,
        format!("tensor `{name}` has dtype {dtype:?}; expected a float tensor (F32, F16, BF16 or F64)"),
    ))
}

/// Refuse a weight holding NaN or infinity: every output computed from it would be garbage.
/// A sum is the cheap test (no copy); only a non-finite sum is looked at value by value.
pub(crate) fn check_finite(path: &Path, name: &str, t: &Tensor) -> Result<()> {
    let sum = t.sum_all().and_then(|s| s.to_dtype(DType::F64)?.to_scalar::<f64>());
    if sum.as_ref().is_ok_and(|s| s.is_finite()) {
        return Ok(());
    }
    let values = t
        .flatten_all()
        .and_then(|v| v.to_dtype(DType::F32)?.to_vec1::<f32>())
        .map_err(|e| model_file_error(path, format!("tensor `{name}` cannot be read: {e}")))?;
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(model_file_error(
            path,
            format!("tensor `{name}` holds {} at index {i}; the file is corrupt", values[i]),
        )),
        None => Ok(()),
    }
}

/// A shard name from an index file must name a file in the model directory, nothing else.
fn check_shard_name(index: &Path, shard: &str) -> Result<()> {
    let plain = !shard.is_empty() && !shard.contains(['/', '\\']) && shard != "." && shard != "..";
    if plain {
        return Ok(());
    }
    Err(model_file_error(index, format!("shard `{shard}` is not a file name in the model directory")))
}

/// Parse `config.json` (or another JSON file) into `T`, naming the file and field on error.
pub fn read_json_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| model_file_error(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| model_file_error(path, format!("invalid: {e}")))
}

/// Memory-mapped files (native) or in-memory buffers (WASM, which has no file system).
enum Store {
    #[cfg(not(target_arch = "wasm32"))]
    Mapped {
        files: Vec<super::mapped::MappedSafetensors>,
        route: std::collections::HashMap<String, usize>,
    },
    Buffers {
        buffers: Vec<(PathBuf, BufferedSafetensors)>,
        route: std::collections::HashMap<String, usize>,
    },
}

impl Store {
    fn load(&self, name: &str, device: &Device) -> Result<Tensor> {
        let missing = || Error::InvalidModel(format!("no tensor {name}"));
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            Store::Mapped { files, route } => files[*route.get(name).ok_or_else(missing)?].load(name, device),
            Store::Buffers { buffers, route } => {
                let (path, file) = &buffers[*route.get(name).ok_or_else(missing)?];
                let view = file
                    .get(name)
                    .map_err(|e| model_file_error(path, format!("tensor `{name}` cannot be read: {e}")))?;
                // Checked when read, as in the mapped store.
                check_float_dtype(path, name, view.dtype())?;
                file.load(name, device)
                    .map_err(|e| model_file_error(path, format!("tensor `{name}` cannot be read: {e}")))
            }
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
    /// Stored names that `get` has returned, to find tensors a config leaves unused.
    read: Mutex<BTreeSet<String>>,
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
            return Err(Error::InvalidModel(format!(
                "{}: no {SINGLE} or {INDEX} among the model files",
                source.display()
            )));
        }
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: std::collections::HashMap<String, String>,
        }
        let index_path = source.file_path(INDEX);
        let idx: Index = serde_json::from_slice(&source.read(INDEX)?)
            .map_err(|e| model_file_error(&index_path, format!("invalid: {e}")))?;
        let shards: BTreeSet<String> = idx.weight_map.into_values().collect();
        for shard in &shards {
            check_shard_name(&index_path, shard)?;
        }
        if let Some(missing) = shards.iter().find(|s| !source.exists(s)) {
            return Err(model_file_error(
                &index_path,
                format!("shard {} is missing", source.file_path(missing).display()),
            ));
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
                if route.insert(name.clone(), files.len()).is_some() {
                    return Err(model_file_error(
                        shard,
                        format!("tensor `{name}` is also in another shard; each tensor must be stored once"),
                    ));
                }
                names.insert(name.clone());
            }
            files.push(file);
        }
        Ok(Weights {
            files: Store::Mapped { files, route },
            path,
            names,
            prefix: String::new(),
            device: device.clone(),
            read: Default::default(),
        })
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
            let shard_path = source.file_path(&shard);
            let bytes = source.take(&shard)?;
            let st = BufferedSafetensors::new(bytes)
                .map_err(|e| model_file_error(&shard_path, format!("not a valid safetensors file: {e}")))?;
            for (name, _) in st.tensors() {
                if route.insert(name.clone(), buffers.len()).is_some() {
                    return Err(model_file_error(
                        &shard_path,
                        format!("tensor `{name}` is also in another shard; each tensor must be stored once"),
                    ));
                }
                names.insert(name);
            }
            buffers.push((shard_path, st));
        }
        Ok(Weights {
            files: Store::Buffers { buffers, route },
            path,
            names,
            prefix: String::new(),
            device: device.clone(),
            read: Default::default(),
        })
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
        let t = self.files.load(&full, &self.device)?;
        if t.dims() != shape {
            return Err(model_file_error(
                &self.path,
                format!("tensor `{full}` has shape {:?}, but config.json implies {shape:?}", t.dims()),
            ));
        }
        let t = t
            .to_dtype(DType::F32)
            .map_err(|e| model_file_error(&self.path, format!("tensor `{full}` cannot be converted to f32: {e}")))?;
        check_finite(&self.path, &full, &t)?;
        self.read
            .lock()
            .map_err(|_| Error::InvalidState("weights lock poisoned by an earlier panic".into()))?
            .insert(full);
        Ok(t)
    }

    fn unread(&self) -> Vec<String> {
        let read = self.read.lock().map(|r| r.clone()).unwrap_or_default();
        self.names.iter().filter(|n| !read.contains(*n)).cloned().collect()
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn device(&self) -> &Device {
        &self.device
    }
}
