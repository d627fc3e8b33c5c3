//! Where training reads data and writes checkpoints and adapters. Native code uses the file
//! system directly; the WASM build passes in one backed by Node's `fs` (wasm32 has none).
//!
//! Directories are written atomically: into a temporary sibling first, then renamed into
//! place, so a crash or a full disk never leaves a half-written checkpoint or adapter, and an
//! existing directory is replaced only once its successor is complete.

use crate::error::{Error, Result};

pub trait Storage {
    fn read(&self, path: &str) -> Result<Vec<u8>>;
    fn exists(&self, path: &str) -> bool;
    /// Names of the entries of `dir` (files and directories).
    fn list(&self, dir: &str) -> Result<Vec<String>>;
    /// Write `files` (name, bytes) as the directory `dir`, atomically (see the module docs).
    fn write_dir(&self, dir: &str, files: &[(String, Vec<u8>)]) -> Result<()>;
    fn remove_dir(&self, dir: &str) -> Result<()>;
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
impl Storage for FsStorage {
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| Error::Io(format!("{path}: cannot read: {e}")))
    }

    fn exists(&self, path: &str) -> bool {
        std::path::Path::new(path).exists()
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::Io(format!("{dir}: cannot list: {e}")))?;
        Ok(entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
    }

    fn write_dir(&self, dir: &str, files: &[(String, Vec<u8>)]) -> Result<()> {
        use std::io::Write;
        let io = |what: &str, e: std::io::Error| Error::Io(format!("{dir}: cannot {what}: {e}"));
        let target = std::path::Path::new(dir);
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io("create its parent directory", e))?;
        }
        let stamp = format!("{}-{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        let tmp = format!("{}.tmp-{stamp}", dir.trim_end_matches('/'));
        std::fs::create_dir(&tmp).map_err(|e| io("create a temporary directory", e))?;
        let result = (|| -> std::io::Result<()> {
            for (name, bytes) in files {
                let mut f = std::fs::File::create(join(&tmp, name))?;
                f.write_all(bytes)?;
                f.sync_all()?;
            }
            if target.exists() {
                // Keep the old directory until the new one is in place, then drop it.
                let old = format!("{}.old-{stamp}", dir.trim_end_matches('/'));
                std::fs::rename(dir, &old)?;
                std::fs::rename(&tmp, dir)?;
                std::fs::remove_dir_all(&old)?;
            } else {
                std::fs::rename(&tmp, dir)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(io("write", e));
        }
        Ok(())
    }

    fn remove_dir(&self, dir: &str) -> Result<()> {
        std::fs::remove_dir_all(dir).map_err(|e| Error::Io(format!("{dir}: cannot remove: {e}")))
    }
}

/// Bytes of a safetensors file holding f32 `tensors`, with string `metadata`.
pub fn safetensors_bytes(tensors: &[(String, crate::TensorData)], metadata: &[(&str, &str)]) -> Result<Vec<u8>> {
    use safetensors::tensor::TensorView;
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.iter().map(|(n, t)| (n.clone(), t.shape.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect())).collect();
    let views = raw
        .iter()
        .map(|(n, shape, bytes)| Ok((n.clone(), TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes).map_err(|e| Error::InvalidState(format!("cannot write tensor `{n}`: {e}")))?)))
        .collect::<Result<Vec<_>>>()?;
    let metadata: std::collections::HashMap<String, String> = metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::InvalidState(format!("cannot write safetensors: {e}")))
}

/// Every tensor of a safetensors file as f32 (F32, F16 and BF16 accepted); `path` names it in errors.
pub fn read_safetensors_bytes(bytes: &[u8], path: &str) -> Result<std::collections::BTreeMap<String, crate::TensorData>> {
    let file = safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::InvalidData(format!("{path}: not a valid safetensors file: {e}")))?;
    let mut out = std::collections::BTreeMap::new();
    for (name, view) in file.tensors() {
        let data: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            safetensors::Dtype::F16 => view.data().chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
            safetensors::Dtype::BF16 => view.data().chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect(),
            other => return Err(Error::InvalidData(format!("{path}: tensor `{name}` has dtype {other:?}; expected F32, F16 or BF16"))),
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
        for (h, f) in [(0x3c00u16, 1.0f32), (0xc000, -2.0), (0x0001, 5.960_464_5e-8), (0x7bff, 65504.0), (0x0000, 0.0)] {
            assert_eq!(f16_to_f32(h), f, "{h:#x}");
        }
    }

    #[test]
    fn directories_are_replaced_only_when_complete() {
        let root = std::env::temp_dir().join(format!("kronlora-storage-{}", std::process::id()));
        let dir = root.join("ckpt").display().to_string();
        FsStorage.write_dir(&dir, &[("a.txt".into(), b"one".to_vec())]).unwrap();
        FsStorage.write_dir(&dir, &[("b.txt".into(), b"two".to_vec())]).unwrap();
        assert_eq!(FsStorage.list(&dir).unwrap(), vec!["b.txt".to_string()]);
        assert_eq!(FsStorage.list(&root.display().to_string()).unwrap(), vec!["ckpt".to_string()], "no temporary left behind");
        std::fs::remove_dir_all(root).unwrap();
    }
}
