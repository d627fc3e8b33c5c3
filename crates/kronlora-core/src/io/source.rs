//! Where a model's files come from: a path on disk (native), or their bytes (the browser,
//! where WASM has no file system). Loaders ask this for files by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub enum ModelSource {
    /// A model directory or a `.gguf` file.
    Path(PathBuf),
    /// File name → bytes, e.g. `config.json`, `model.safetensors`, `tokenizer.json`, or one
    /// `*.gguf`. A name may be the file's path (`models/minilm/config.json`, as the WASM
    /// backend passes them), so that errors name the file as the native backend does; files
    /// are looked up by their last path component.
    Files(BTreeMap<String, Vec<u8>>),
}

/// The last component of a `/`- or `\`-separated path.
fn base_name(key: &str) -> &str {
    key.rsplit(['/', '\\']).next().unwrap_or(key)
}

impl ModelSource {
    /// How errors name the model: the path, or the directory all given files share.
    pub fn display(&self) -> String {
        match self {
            ModelSource::Path(p) => p.display().to_string(),
            ModelSource::Files(files) => {
                let dirs: std::collections::BTreeSet<&str> =
                    files.keys().map(|k| &k[..k.len() - base_name(k).len()]).collect();
                match dirs.into_iter().collect::<Vec<_>>().as_slice() {
                    _ if files.len() == 1 => files.keys().next().cloned().unwrap_or_default(),
                    [dir] if !dir.is_empty() => dir.trim_end_matches(['/', '\\']).to_string(),
                    _ => format!("[{}]", files.keys().cloned().collect::<Vec<_>>().join(", ")),
                }
            }
        }
    }

    /// The key under which file `name` was given (its name or a path ending in it).
    fn key(&self, name: &str) -> Option<&String> {
        match self {
            ModelSource::Path(_) => None,
            ModelSource::Files(files) => {
                files.get_key_value(name).map(|(k, _)| k).or_else(|| files.keys().find(|k| base_name(k) == name))
            }
        }
    }

    /// The GGUF file of this source, if it is one.
    pub fn gguf_name(&self) -> Option<String> {
        match self {
            ModelSource::Path(p) => (p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")))
                .then(|| p.display().to_string()),
            ModelSource::Files(files) => files
                .keys()
                .find(|k| base_name(k).to_ascii_lowercase().ends_with(".gguf"))
                .map(|k| base_name(k).to_string()),
        }
    }

    /// The path of a file in a model directory (for errors and memory mapping).
    pub fn file_path(&self, name: &str) -> PathBuf {
        match self {
            ModelSource::Path(p) if p.is_dir() => p.join(name),
            ModelSource::Path(p) => p.clone(),
            ModelSource::Files(_) => PathBuf::from(self.key(name).map_or(name, String::as_str)),
        }
    }

    pub fn exists(&self, name: &str) -> bool {
        match self {
            ModelSource::Path(p) => p.join(name).is_file(),
            ModelSource::Files(_) => self.key(name).is_some(),
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
            ModelSource::Files(files) => self.key(name).and_then(|k| files.get(k)).cloned().ok_or_else(|| {
                Error::InvalidModel(format!("{name}: missing from the files given (have {})", self.display()))
            }),
        }
    }

    /// Take a file's bytes out of an in-memory source (avoids a copy of large weights).
    pub fn take(&mut self, name: &str) -> Result<Vec<u8>> {
        match self {
            ModelSource::Files(_) => {
                let key = self
                    .key(name)
                    .cloned()
                    .ok_or_else(|| Error::InvalidModel(format!("{name}: missing from the files given")))?;
                let ModelSource::Files(files) = self else { unreachable!("matched above") };
                Ok(files.remove(&key).unwrap_or_default())
            }
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
