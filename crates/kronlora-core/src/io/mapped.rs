//! A memory-mapped safetensors file whose pages are released as soon as each tensor has been
//! copied out, so loading a model needs about its size in memory, not twice that.
//!
//! candle's `MmapedSafetensors` keeps the whole mapping resident until it is dropped; with the
//! f32 copies the peak is then twice the model. This is the same mapping plus
//! `madvise(MADV_DONTNEED)` on each copied range (written here because candle does not expose
//! its mapping).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use memmap2::{Mmap, UncheckedAdvice};
use safetensors::tensor::TensorInfo;
use safetensors::SafeTensors;

use crate::error::{Error, Result};

pub struct MappedSafetensors {
    path: std::path::PathBuf,
    map: Mmap,
    data_start: usize,
    tensors: HashMap<String, TensorInfo>,
}

impl MappedSafetensors {
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |what: String| Error::InvalidModel(format!("{}: {what}", path.display()));
        let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
        // Safety: mapped read-only and private; a file changed while it is loaded gives wrong
        // values, as with every memory-mapped loader (PyTorch's and candle's included).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| bad(format!("cannot map: {e}")))?;
        let (header, metadata) =
            SafeTensors::read_metadata(&map).map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
        let data_start = 8 + header;
        let tensors: HashMap<String, TensorInfo> =
            metadata.tensors().into_iter().map(|(n, i)| (n, i.clone())).collect();
        for (name, info) in &tensors {
            if data_start + info.data_offsets.1 > map.len() {
                return Err(bad(format!(
                    "not a valid safetensors file: tensor `{name}` lies past the end of the file (truncated?)"
                )));
            }
        }
        // `read_metadata` checks that the tensors tile the data section without gaps or
        // overlaps and that each one's bytes fit its shape; bytes past the last one are junk.
        let data_end = tensors.values().map(|i| i.data_offsets.1).max().unwrap_or(0);
        if data_start + data_end != map.len() {
            return Err(bad(format!(
                "not a valid safetensors file: {} bytes follow the last tensor's data",
                map.len() - data_start - data_end
            )));
        }
        Ok(MappedSafetensors { path: path.to_path_buf(), map, data_start, tensors })
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    /// Copy a tensor out (in its stored dtype), then drop its pages from this process.
    pub fn load(&self, name: &str, device: &Device) -> Result<Tensor> {
        let info = self.tensors.get(name).ok_or_else(|| Error::InvalidModel(format!("no tensor {name}")))?;
        // Checked when read, not when opened: checkpoints hold integer buffers that no model
        // reads (BERT's `position_ids`).
        super::safetensors_dir::check_float_dtype(&self.path, name, info.dtype)?;
        let (start, end) = (self.data_start + info.data_offsets.0, self.data_start + info.data_offsets.1);
        let bad = |e: candle_core::Error| {
            Error::InvalidModel(format!("{}: tensor `{name}` cannot be read: {e}", self.path.display()))
        };
        let dtype = DType::try_from(info.dtype).map_err(bad)?;
        let tensor = Tensor::from_raw_buffer(&self.map[start..end], dtype, &info.shape, device).map_err(bad)?;
        let page = 4096;
        let from = start / page * page;
        // Safety: a read-only private file mapping; dropped pages are re-read from the file if
        // touched again, so no data is lost.
        let _ = unsafe { self.map.unchecked_advise_range(UncheckedAdvice::DontNeed, from, end - from) };
        Ok(tensor)
    }
}
