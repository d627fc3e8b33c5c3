//! A bounds-checked walk over a GGUF file's header and tensor directory before candle parses it.
//!
//! candle's `Content::read` (0.11) bounds string and array lengths by the file's size, but it
//! casts dims to `usize` (so 2^32 becomes 0 on 32-bit WASM), and it never checks a tensor's
//! offset, type and size against its neighbours: a tensor whose type or offset was changed is
//! read from the wrong bytes without a word. This walk checks the directory the way llama.cpp's
//! `gguf_init_from_file` does: at most 4 dims, known types, whole quantisation blocks, offsets
//! aligned to `general.alignment`, each tensor starting where the one before it ends (padded),
//! the last one inside the file. Dims are kept as the file states them, for messages.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::GgmlDType;

use super::safetensors_dir::model_file_error;
use crate::error::{Error, Result};

const DEFAULT_ALIGNMENT: u64 = 32;
const MAX_DIMS: u32 = 4;

/// One tensor of the directory, as the file states it (dims innermost first, as stored).
pub struct TensorEntry {
    pub name: String,
    pub dims: Vec<u64>,
    pub type_id: u32,
    pub offset: u64,
}

/// The candle type of a GGML type id, when candle can read it: the float types and every
/// block type but the 8-bit activation types Q8_1 and Q8_K.
pub fn ggml_dtype(id: u32) -> Option<GgmlDType> {
    Some(match id {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

/// llama.cpp's name of a type candle reads (`Q4_K`, not candle's `Q4K`).
pub fn ggml_type_name(t: GgmlDType) -> String {
    let name = format!("{t:?}");
    match name.strip_suffix('K') {
        Some(stem) if stem.starts_with('Q') => format!("{stem}_K"),
        _ => name,
    }
}

/// llama.cpp's name of a GGML type id that kronlora cannot read (`ggml_type` in ggml.h).
fn unreadable_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        9 => "Q8_1",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

/// The GGML types `ggml_dtype` knows, as llama.cpp names them.
const READABLE: &str = "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";

struct Walker<'a, R: Read + Seek> {
    reader: &'a mut R,
    path: &'a Path,
    len: u64,
    pos: u64,
    /// GGUF v1 stores counts and lengths as u32, later versions as u64.
    wide: bool,
}

impl<R: Read + Seek> Walker<'_, R> {
    fn bad(&self, what: String) -> Error {
        model_file_error(self.path, format!("not a valid GGUF file: {what}"))
    }

    fn need(&self, n: u64, what: &str) -> Result<()> {
        if n > self.len - self.pos {
            return Err(self.bad(format!(
                "{what} needs {n} bytes at offset {}, but the file ends at {} (truncated?)",
                self.pos, self.len
            )));
        }
        Ok(())
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        self.need(N as u64, what)?;
        let mut b = [0u8; N];
        self.reader.read_exact(&mut b).map_err(|e| self.bad(format!("cannot read {what}: {e}")))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes::<4>(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes::<8>(what)?))
    }

    /// A count or length: u32 in GGUF v1, u64 after.
    fn length(&mut self, what: &str) -> Result<u64> {
        if self.wide {
            self.u64(what)
        } else {
            Ok(self.u32(what)? as u64)
        }
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<()> {
        self.need(n, what)?;
        self.reader.seek(SeekFrom::Current(n as i64)).map_err(|e| self.bad(format!("cannot read {what}: {e}")))?;
        self.pos += n;
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.length(what)?;
        self.need(n, what)?;
        let mut v = vec![0u8; n as usize];
        self.reader.read_exact(&mut v).map_err(|e| self.bad(format!("cannot read {what}: {e}")))?;
        self.pos += n;
        String::from_utf8(v).map_err(|_| self.bad(format!("{what} is not UTF-8")))
    }

    fn skip_string(&mut self, what: &str) -> Result<()> {
        let n = self.length(what)?;
        self.skip(n, what)
    }

    /// Skip a metadata value of type `ty`; returns it when it is a u32 (for `general.alignment`).
    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Option<u32>> {
        let what = format!("metadata `{key}`");
        match ty {
            0 | 1 => self.skip(1, &what)?,
            2 | 3 => self.skip(2, &what)?,
            4 => return Ok(Some(self.u32(&what)?)),
            5 | 6 => self.skip(4, &what)?,
            7 => {
                let [b] = self.bytes::<1>(&what)?;
                if b > 1 {
                    return Err(self.bad(format!("{what}: boolean byte {b} is neither 0 nor 1")));
                }
            }
            8 => self.skip_string(&what)?,
            9 => {
                if depth > 2 {
                    return Err(self.bad(format!("{what}: arrays nested more than 3 deep")));
                }
                let item = self.u32(&what)?;
                let n = self.length(&what)?;
                // Every item takes at least one byte: a count beyond the file is a lie.
                self.need(n, &what)?;
                for _ in 0..n {
                    self.value(item, key, depth + 1)?;
                }
            }
            10..=12 => self.skip(8, &what)?,
            other => return Err(self.bad(format!("{what} has unknown value type {other}"))),
        }
        Ok(None)
    }
}

/// Walk the header of the GGUF file in `reader` (from its start) and check its tensor
/// directory; leaves the reader anywhere. `path` names the file in errors.
pub fn check<R: Read + Seek>(reader: &mut R, path: &Path) -> Result<Vec<TensorEntry>> {
    let len = reader.seek(SeekFrom::End(0)).map_err(|e| model_file_error(path, format!("cannot read: {e}")))?;
    reader.seek(SeekFrom::Start(0)).map_err(|e| model_file_error(path, format!("cannot read: {e}")))?;
    let mut w = Walker { reader, path, len, pos: 0, wide: true };
    if &w.bytes::<4>("the magic number")? != b"GGUF" {
        return Err(w.bad("it does not start with `GGUF`".into()));
    }
    let version = w.u32("the version")?;
    if !(1..=3).contains(&version) {
        return Err(w.bad(format!("version {version} is not 1, 2 or 3")));
    }
    w.wide = version >= 2;
    let tensor_count = w.length("the tensor count")?;
    let kv_count = w.length("the metadata count")?;
    let mut keys = BTreeSet::new();
    let mut alignment = DEFAULT_ALIGNMENT;
    // Each entry takes several bytes; counts beyond the file are refused before any loop.
    w.need(kv_count.saturating_mul(8), "the metadata")?;
    for _ in 0..kv_count {
        let key = w.string("a metadata key")?;
        let ty = w.u32(&format!("the type of metadata `{key}`"))?;
        let value = w.value(ty, &key, 0)?;
        if key == "general.alignment" {
            alignment = match value {
                Some(a) if a.is_power_of_two() => a as u64,
                _ => return Err(w.bad("metadata `general.alignment` must be a u32 power of two".into())),
            };
        }
        if !keys.insert(key.clone()) {
            return Err(w.bad(format!("metadata `{key}` appears twice")));
        }
    }
    w.need(tensor_count.saturating_mul(8), "the tensor directory")?;
    let mut tensors: Vec<TensorEntry> = Vec::new();
    let mut names = BTreeSet::new();
    for _ in 0..tensor_count {
        let name = w.string("a tensor name")?;
        let what = format!("tensor `{name}`");
        let n_dims = w.u32(&what)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(w.bad(format!("{what} has {n_dims} dimensions; GGUF tensors have 1 to {MAX_DIMS}")));
        }
        let dims = (0..n_dims)
            .map(|_| if w.wide { w.u64(&what) } else { w.u32(&what).map(u64::from) })
            .collect::<Result<Vec<_>>>()?;
        let type_id = w.u32(&what)?;
        let offset = w.u64(&what)?;
        if !names.insert(name.clone()) {
            return Err(w.bad(format!("{what} appears twice in the tensor directory")));
        }
        tensors.push(TensorEntry { name, dims, type_id, offset });
    }
    let data_start = w.pos.div_ceil(alignment) * alignment;
    let mut expected = 0u64;
    let mut before = String::from("the start of the data section");
    for t in &tensors {
        let shown: Vec<u64> = t.dims.iter().rev().copied().collect();
        let what = format!("tensor `{}` (dims {shown:?}, GGML type {})", t.name, t.type_id);
        let Some(dtype) = ggml_dtype(t.type_id) else {
            if let Some(type_name) = unreadable_type_name(t.type_id) {
                return Err(Error::Unsupported(format!(
                    "{}: tensor `{}` is stored as {type_name}, which kronlora cannot read; it reads {READABLE}: requantise the model to one of them (llama.cpp's `llama-quantize`, e.g. Q4_K_M or Q8_0)",
                    w.path.display(),
                    t.name
                )));
            }
            return Err(w.bad(format!("{what}: type {} is not a GGML type (kronlora reads {READABLE})", t.type_id)));
        };
        let (block, type_size) = (dtype.block_size() as u64, dtype.type_size() as u64);
        let elems = t.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let bytes = elems.filter(|_| t.dims[0] % block == 0).and_then(|n| (n / block).checked_mul(type_size));
        let Some(bytes) = bytes else {
            return Err(w.bad(format!(
                "{what}: the dims do not give a whole number of {dtype:?} blocks of {block} values, or overflow"
            )));
        };
        if t.offset % alignment != 0 {
            return Err(
                w.bad(format!("{what}: offset {} is not a multiple of general.alignment = {alignment}", t.offset))
            );
        }
        if t.offset != expected {
            return Err(w.bad(format!(
                "{what}: offset {} is not where {before} ends ({expected}); a type, dims or offset was changed",
                t.offset
            )));
        }
        let end = data_start.checked_add(t.offset).and_then(|s| s.checked_add(bytes));
        if end.is_none_or(|e| e > len) {
            return Err(w.bad(format!(
                "{what}: its {bytes} bytes at offset {} of the data section run past the end of the file ({len} bytes; truncated?)",
                t.offset
            )));
        }
        if t.dims.iter().any(|&d| usize::try_from(d).is_err()) || usize::try_from(bytes).is_err() {
            return Err(w.bad(format!("{what} is too large for this build's {}-bit addresses", usize::BITS)));
        }
        expected = (t.offset + bytes).div_ceil(alignment) * alignment;
        before = format!("the tensor before it (`{}`, {dtype:?}, dims {shown:?})", t.name);
    }
    Ok(tensors)
}
