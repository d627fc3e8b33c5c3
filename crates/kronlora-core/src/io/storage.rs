//! Where training reads data and writes checkpoints and adapters. Native code uses the file
//! system directly; the WASM build passes in one backed by Node's `fs` (wasm32 has none).
//!
//! The trait holds only small file-system primitives, the same on both backends; the policy of
//! what kronlora may write, replace or remove (`owned_dir`) is written once, on top of them.

use crate::error::{Error, Result};

/// What is at a path, without following a symbolic link there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Missing,
    File,
    Dir,
    Symlink,
    /// A socket, device, FIFO...
    Other,
}

impl EntryKind {
    /// As a JavaScript storage reports it (`lstat`).
    pub fn from_name(name: &str) -> Option<EntryKind> {
        Some(match name {
            "missing" => EntryKind::Missing,
            "file" => EntryKind::File,
            "dir" => EntryKind::Dir,
            "symlink" => EntryKind::Symlink,
            "other" => EntryKind::Other,
            _ => return None,
        })
    }
}

pub trait Storage {
    fn read(&self, path: &str) -> Result<Vec<u8>>;
    /// Whether `path` exists, following symbolic links (for reading).
    fn exists(&self, path: &str) -> bool;
    /// What `path` is, not following a symbolic link.
    fn kind(&self, path: &str) -> Result<EntryKind>;
    /// Names of the entries of `dir` (files and directories).
    fn list(&self, dir: &str) -> Result<Vec<String>>;
    /// Create `dir` and any missing parents (nothing when it exists).
    fn create_dir_all(&self, dir: &str) -> Result<()>;
    /// Create the directory `dir`; fails when anything is there.
    fn create_dir(&self, dir: &str) -> Result<()>;
    /// Create the file `path` with `bytes` and flush it to disk; fails when anything is there.
    fn write_new_file(&self, path: &str, bytes: &[u8]) -> Result<()>;
    /// Rename `from` to `to` (replacing a file at `to`).
    fn rename(&self, from: &str, to: &str) -> Result<()>;
    /// Remove the file (or symbolic link itself) at `path`.
    fn remove_file(&self, path: &str) -> Result<()>;
    /// Remove the directory `dir`; fails unless it is empty.
    fn remove_empty_dir(&self, dir: &str) -> Result<()>;
}

/// `dir/name` (the bindings hand paths over as strings).
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else if dir.ends_with('/') || dir.ends_with('\\') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

pub fn read_text(storage: &dyn Storage, path: &str) -> Result<String> {
    String::from_utf8(storage.read(path)?).map_err(|_| Error::InvalidData(format!("{path}: not UTF-8 text")))
}

/// The operating system's file system.
#[cfg(not(target_arch = "wasm32"))]
pub struct FsStorage;

#[cfg(not(target_arch = "wasm32"))]
fn io_error(path: &str, what: &str, e: std::io::Error) -> Error {
    Error::Io(format!("{path}: cannot {what}: {e}"))
}

#[cfg(not(target_arch = "wasm32"))]
impl Storage for FsStorage {
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| io_error(path, "read", e))
    }

    fn exists(&self, path: &str) -> bool {
        std::path::Path::new(path).exists()
    }

    fn kind(&self, path: &str) -> Result<EntryKind> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => Ok(EntryKind::Symlink),
            Ok(m) if m.is_dir() => Ok(EntryKind::Dir),
            Ok(m) if m.is_file() => Ok(EntryKind::File),
            Ok(_) => Ok(EntryKind::Other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(EntryKind::Missing),
            Err(e) => Err(io_error(path, "inspect", e)),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let entries = std::fs::read_dir(dir).map_err(|e| io_error(dir, "list", e))?;
        Ok(entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
    }

    fn create_dir_all(&self, dir: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, "create the directory", e))
    }

    fn create_dir(&self, dir: &str) -> Result<()> {
        std::fs::create_dir(dir).map_err(|e| io_error(dir, "create the directory", e))
    }

    fn write_new_file(&self, path: &str, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| io_error(path, "create", e))?;
        f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| io_error(path, "write", e))
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        std::fs::rename(from, to).map_err(|e| io_error(from, &format!("rename to {to}"), e))
    }

    fn remove_file(&self, path: &str) -> Result<()> {
        std::fs::remove_file(path).map_err(|e| io_error(path, "remove", e))
    }

    fn remove_empty_dir(&self, dir: &str) -> Result<()> {
        std::fs::remove_dir(dir).map_err(|e| io_error(dir, "remove", e))
    }
}

/// Bytes of a safetensors file holding f32 `tensors`, with string `metadata`.
pub fn safetensors_bytes(tensors: &[(String, crate::TensorData)], metadata: &[(&str, &str)]) -> Result<Vec<u8>> {
    use safetensors::tensor::TensorView;
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.shape.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views = raw
        .iter()
        .map(|(n, shape, bytes)| {
            Ok((
                n.clone(),
                TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .map_err(|e| Error::InvalidState(format!("cannot write tensor `{n}`: {e}")))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata: std::collections::HashMap<String, String> =
        metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::InvalidState(format!("cannot write safetensors: {e}")))
}

/// Every tensor of a safetensors file as f32 (F32, F16 and BF16 accepted); `path` names it in errors.
pub fn read_safetensors_bytes(
    bytes: &[u8],
    path: &str,
) -> Result<std::collections::BTreeMap<String, crate::TensorData>> {
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::InvalidData(format!("{path}: not a valid safetensors file: {e}")))?;
    let mut out = std::collections::BTreeMap::new();
    for (name, view) in file.tensors() {
        let data: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => {
                view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
            safetensors::Dtype::F16 => {
                view.data().chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect()
            }
            safetensors::Dtype::BF16 => view
                .data()
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            other => {
                return Err(Error::InvalidData(format!(
                    "{path}: tensor `{name}` has dtype {other:?}; expected F32, F16 or BF16"
                )))
            }
        };
        out.insert(name.to_string(), crate::TensorData { shape: view.shape().to_vec(), data });
    }
    Ok(out)
}

fn f16_to_f32(h: u16) -> f32 {
    let (sign, exp, frac) = ((h >> 15) as u32, ((h >> 10) & 0x1f) as u32, (h & 0x3ff) as u32);
    let bits = match (exp, frac) {
        (0, 0) => sign << 31,
        (0, f) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            (sign << 31) | ((e as u32) << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, f) => (sign << 31) | (0xff << 23) | (f << 13),
        (e, f) => (sign << 31) | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn half_floats_convert_exactly() {
        for (h, f) in [(0x3c00u16, 1.0f32), (0xc000, -2.0), (0x0001, 5.960_464_5e-8), (0x7bff, 65504.0), (0x0000, 0.0)]
        {
            assert_eq!(f16_to_f32(h), f, "{h:#x}");
        }
    }
}
