//! Where a model's files come from: a path on disk (native), or their bytes (the browser,
//! where WASM has no file system). Loaders ask this for files by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub enum ModelSource {
    /// A model directory or a `.gguf` file.
    Path(PathBuf),
    /// File name → bytes, e.g. `config.json`, `model.safetensors`, `tokenizer.json`, or one `*.gguf`.
    Files(BTreeMap<String, Vec<u8>>),
}

impl ModelSource {
    /// How errors name the model.
    pub fn display(&self) -> String {
        match self {
            ModelSource::Path(p) => p.display().to_string(),
            ModelSource::Files(files) => format!("[{}]", files.keys().cloned().collect::<Vec<_>>().join(", ")),
        }
    }

    /// The GGUF file of this source, if it is one.
    pub fn gguf_name(&self) -> Option<String> {
        match self {
            ModelSource::Path(p) => (p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))).then(|| p.display().to_string()),
            ModelSource::Files(files) => files.keys().find(|k| k.to_ascii_lowercase().ends_with(".gguf")).cloned(),
        }
    }

    /// The path of a file in a model directory (for errors and memory mapping).
    pub fn file_path(&self, name: &str) -> PathBuf {
        match self {
            ModelSource::Path(p) if p.is_dir() => p.join(name),
            ModelSource::Path(p) => p.clone(),
            ModelSource::Files(_) => PathBuf::from(name),
        }
    }

    pub fn exists(&self, name: &str) -> bool {
        match self {
            ModelSource::Path(p) => p.join(name).is_file(),
            ModelSource::Files(files) => files.contains_key(name),
        }
    }

    pub fn check(&self) -> Result<()> {
        match self {
            ModelSource::Path(p) if !p.exists() => Err(Error::InvalidModel(format!(
                "{}: no such file or directory; pass a Hugging Face model directory or a .gguf file",
                p.display()
            ))),
            ModelSource::Files(f) if f.is_empty() => Err(Error::InvalidModel("no model files were given".into())),
            _ => Ok(()),
        }
    }

    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        match self {
            ModelSource::Path(_) => {
                let path = self.file_path(name);
                std::fs::read(&path).map_err(|e| Error::InvalidModel(format!("{}: cannot read: {e}", path.display())))
            }
            ModelSource::Files(files) => files
                .get(name)
                .cloned()
                .ok_or_else(|| Error::InvalidModel(format!("{name}: missing from the files given (have {})", self.display()))),
        }
    }

    /// Take a file's bytes out of an in-memory source (avoids a copy of large weights).
    pub fn take(&mut self, name: &str) -> Result<Vec<u8>> {
        match self {
            ModelSource::Files(files) => files.remove(name).ok_or_else(|| Error::InvalidModel(format!("{name}: missing from the files given"))),
            ModelSource::Path(_) => self.read(name),
        }
    }

    pub fn is_path(&self) -> Option<&Path> {
        match self {
            ModelSource::Path(p) => Some(p),
            ModelSource::Files(_) => None,
        }
    }
}
