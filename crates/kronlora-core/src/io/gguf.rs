//! GGUF files (llama.cpp): metadata, and weights dequantised to f32 under Hugging Face names.

use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{QStorage, QTensor};
use candle_core::{DType, Device, Tensor};

use super::safetensors_dir::{check_finite, model_file_error};
use super::TensorSource;
use crate::error::{Error, Result};
use crate::models::FrozenWeight;
use crate::ops::{QuantizedWeight, QUANTIZED_TYPES};

trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// An open GGUF file: its metadata and tensor directory (the data stays on disk until read).
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: Mutex<Box<dyn ReadSeek>>,
    /// Tensor names in the file's order.
    names: Vec<String>,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| model_file_error(path, format!("cannot open: {e}")))?;
        Self::from_reader(path, Box::new(BufReader::new(file)))
    }

    /// A GGUF file given as bytes (WASM in a browser); `name` is used in errors.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Self> {
        Self::from_reader(Path::new(name), Box::new(Cursor::new(bytes)))
    }

    fn from_reader(path: &Path, mut reader: Box<dyn ReadSeek>) -> Result<Self> {
        // Checked first: candle's parser allocates whatever lengths the file states.
        let entries = super::gguf_layout::check(&mut reader, path)?;
        reader.rewind().map_err(|e| model_file_error(path, format!("cannot read: {e}")))?;
        let content =
            Content::read(&mut reader).map_err(|e| model_file_error(path, format!("not a valid GGUF file: {e}")))?;
        let names = entries.into_iter().map(|e| e.name).collect();
        Ok(GgufFile { path: path.to_path_buf(), content, reader: Mutex::new(reader), names })
    }

    /// Tensor names in the file's order.
    pub fn tensor_names(&self) -> &[String] {
        &self.names
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn value(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| model_file_error(&self.path, format!("metadata `{key}` is missing")))
    }

    fn bad(&self, key: &str, e: candle_core::Error) -> Error {
        model_file_error(&self.path, format!("metadata `{key}` has the wrong type: {e}"))
    }

    pub fn has(&self, key: &str) -> bool {
        self.content.metadata.contains_key(key)
    }

    pub fn string(&self, key: &str) -> Result<String> {
        self.value(key)?.to_string().cloned().map_err(|e| self.bad(key, e))
    }

    /// An integer of any GGUF integer type.
    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self.value(key)?;
        let n = match v {
            Value::U8(x) => *x as i64,
            Value::I8(x) => *x as i64,
            Value::U16(x) => *x as i64,
            Value::I16(x) => *x as i64,
            Value::U32(x) => *x as i64,
            Value::I32(x) => *x as i64,
            Value::U64(x) => *x as i64,
            Value::I64(x) => *x,
            _ => return Err(model_file_error(&self.path, format!("metadata `{key}` must be an integer"))),
        };
        usize::try_from(n).map_err(|_| model_file_error(&self.path, format!("metadata `{key}` = {n} is negative")))
    }

    pub fn bool(&self, key: &str) -> Result<bool> {
        match self.value(key)? {
            Value::Bool(b) => Ok(*b),
            _ => Err(model_file_error(&self.path, format!("metadata `{key}` must be a boolean"))),
        }
    }

    pub fn f64(&self, key: &str) -> Result<f64> {
        match self.value(key)? {
            Value::F32(x) => Ok(*x as f64),
            Value::F64(x) => Ok(*x),
            _ => Err(model_file_error(&self.path, format!("metadata `{key}` must be a number"))),
        }
    }

    pub fn strings(&self, key: &str) -> Result<Vec<String>> {
        let list = self.value(key)?.to_vec().map_err(|e| self.bad(key, e))?;
        list.iter().map(|v| v.to_string().cloned().map_err(|e| self.bad(key, e))).collect()
    }

    /// An array of integers of any GGUF integer type.
    pub fn i64s(&self, key: &str) -> Result<Vec<i64>> {
        let list = self.value(key)?.to_vec().map_err(|e| self.bad(key, e))?;
        list.iter()
            .map(|v| match v {
                Value::U8(x) => Ok(*x as i64),
                Value::I8(x) => Ok(*x as i64),
                Value::U16(x) => Ok(*x as i64),
                Value::I16(x) => Ok(*x as i64),
                Value::U32(x) => Ok(*x as i64),
                Value::I32(x) => Ok(*x as i64),
                Value::U64(x) => Ok(*x as i64),
                Value::I64(x) => Ok(*x),
                _ => Err(model_file_error(&self.path, format!("metadata `{key}` must hold integers"))),
            })
            .collect()
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Every metadata entry (for writing a file derived from this one).
    pub fn metadata(&self) -> &std::collections::HashMap<String, Value> {
        &self.content.metadata
    }

    /// A tensor as stored (quantised or not), for copying it unchanged into another file.
    pub fn raw_tensor(&self, name: &str) -> Result<candle_core::quantized::QTensor> {
        self.stored(name, &Device::Cpu)
    }

    /// A tensor as stored, on `device`.
    fn stored(&self, name: &str, device: &Device) -> Result<QTensor> {
        if !self.has_tensor(name) {
            return Err(model_file_error(&self.path, format!("tensor `{name}` is missing")));
        }
        let mut reader =
            self.reader.lock().map_err(|_| Error::InvalidState("GGUF reader poisoned by an earlier panic".into()))?;
        self.content.tensor(&mut *reader, name, device).map_err(|e| {
            model_file_error(
                &self.path,
                format!("tensor `{name}` cannot be read (truncated file or unsupported quantisation?): {e}"),
            )
        })
    }

    /// Read and dequantise a tensor to f32 (candle orders dims as PyTorch does: `[out, in]`).
    pub fn tensor(&self, name: &str, device: &Device) -> Result<Tensor> {
        self.to_f32(name, &self.stored(name, device)?, device)
    }

    /// The stored tensor `name` as checked f32.
    fn to_f32(&self, name: &str, q: &QTensor, device: &Device) -> Result<Tensor> {
        let t = q.dequantize(device).map_err(|e| {
            model_file_error(&self.path, format!("tensor `{name}` ({:?}) cannot be dequantised: {e}", q.dtype()))
        })?;
        let t = t
            .to_dtype(DType::F32)
            .map_err(|e| model_file_error(&self.path, format!("tensor `{name}` cannot be converted to f32: {e}")))?;
        check_finite(&self.path, name, &t)?;
        Ok(t)
    }
}

/// A llama.cpp model's tensors under Hugging Face names (`model.layers.0.self_attn.q_proj.weight`).
pub struct GgufWeights {
    file: std::sync::Arc<GgufFile>,
    device: Device,
    /// llama.cpp stores Q and K of `llama`-architecture models permuted for its interleaved
    /// RoPE; (heads, kv heads) to undo that, or None (e.g. qwen2, stored as in HF).
    unpermute: Option<(usize, usize)>,
    /// `get_frozen` keeps quantised blocks as they are (on the CPU).
    quantized: bool,
    /// GGUF names that `get` has returned.
    read: Mutex<std::collections::BTreeSet<String>>,
}

impl GgufWeights {
    pub fn new(
        file: std::sync::Arc<GgufFile>,
        device: &Device,
        unpermute: Option<(usize, usize)>,
        quantized: bool,
    ) -> Self {
        GgufWeights { file, device: device.clone(), unpermute, quantized, read: Default::default() }
    }

    fn mark_read(&self, gguf_name: String) -> Result<()> {
        self.read
            .lock()
            .map_err(|_| Error::InvalidState("GGUF weights lock poisoned by an earlier panic".into()))?
            .insert(gguf_name);
        Ok(())
    }

    /// The heads to undo llama.cpp's Q / K row permutation over, for tensor `name`.
    fn permuted_heads(&self, name: &str) -> Option<usize> {
        let (heads, kv_heads) = self.unpermute?;
        if name.ends_with("self_attn.q_proj.weight") {
            Some(heads)
        } else if name.ends_with("self_attn.k_proj.weight") {
            Some(kv_heads)
        } else {
            None
        }
    }
}

/// `unpermute` of a quantised tensor: its rows are whole blocks, so rows move as bytes.
fn unpermute_rows(q: &QTensor, heads: usize) -> candle_core::Result<QTensor> {
    let (rows, cols) = q.shape().dims2()?;
    let row_bytes = cols / q.dtype().block_size() * q.dtype().type_size();
    let (head_dim, half) = (rows / heads, rows / heads / 2);
    let data = q.data()?;
    let mut out = Vec::with_capacity(data.len());
    for new in 0..rows {
        // New row (h, j, i) of [h, 2, half] is old row (h, i, j) of [h, half, 2].
        let (h, j, i) = (new / head_dim, new % head_dim / half, new % half);
        let old = h * head_dim + i * 2 + j;
        out.extend_from_slice(&data[old * row_bytes..(old + 1) * row_bytes]);
    }
    let storage = QStorage::from_data(std::borrow::Cow::Owned(out), &Device::Cpu, q.dtype())?;
    QTensor::new(storage, (rows, cols))
}

/// The GGUF name of a Hugging Face Llama-family tensor name.
pub fn gguf_tensor_name(name: &str) -> Option<String> {
    let fixed = match name {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, module) = rest.split_once('.')?;
    let (module, suffix) = module.rsplit_once('.')?;
    let g = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{suffix}"))
}

/// llama.cpp's `permute` of Q and K rows (its converter's, for interleaved RoPE):
/// `[h, 2, hd/2, ..] → [h, hd/2, 2, ..]`; `unpermute` undoes it.
pub fn permute(t: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rest: usize = dims[1..].iter().product();
    let half = dims[0] / heads / 2;
    Ok(t.reshape((heads, 2, half, rest))?.transpose(1, 2)?.contiguous()?.reshape(dims)?)
}

/// Undo llama.cpp's `permute`: `[h, hd/2, 2, ..] → [h, 2, hd/2, ..]`.
pub fn unpermute(t: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rest: usize = dims[1..].iter().product();
    let half = dims[0] / heads / 2;
    Ok(t.reshape((heads, half, 2, rest))?.transpose(1, 2)?.contiguous()?.reshape(dims)?)
}

impl GgufWeights {
    /// The stored tensor for the Hugging Face name `name`, on `device`, checked against `shape`;
    /// and its GGUF name.
    fn stored(&self, name: &str, shape: &[usize], device: &Device) -> Result<(String, QTensor)> {
        let g = gguf_tensor_name(name)
            .ok_or_else(|| model_file_error(self.path(), format!("no GGUF tensor corresponds to `{name}`")))?;
        let q = self.file.stored(&g, device)?;
        if q.shape().dims() != shape {
            return Err(model_file_error(
                self.path(),
                format!("tensor `{g}` has shape {:?}, but the metadata implies {shape:?}", q.shape().dims()),
            ));
        }
        Ok((g, q))
    }

    /// `stored`'s tensor in f32 under Hugging Face's layout.
    fn dense(&self, name: &str, g: String, q: &QTensor) -> Result<Tensor> {
        let mut t = self.file.to_f32(&g, q, &self.device)?;
        // The shape matched the config, whose head_dim is even: the split cannot fail.
        if let Some(heads) = self.permuted_heads(name) {
            t = unpermute(&t, heads)?;
        }
        self.mark_read(g)?;
        Ok(t)
    }
}

impl TensorSource for GgufWeights {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let (g, q) = self.stored(name, shape, &self.device)?;
        self.dense(name, g, &q)
    }

    fn get_frozen(&self, name: &str, shape: &[usize]) -> Result<FrozenWeight> {
        if !self.quantized {
            return Ok(self.get(name, shape)?.into());
        }
        let (g, q) = self.stored(name, shape, &Device::Cpu)?;
        // The layout check lets through only float types and QUANTIZED_TYPES.
        if !QUANTIZED_TYPES.contains(&q.dtype()) {
            return Ok(self.dense(name, g, &q)?.into());
        }
        let q = match self.permuted_heads(name) {
            Some(heads) => unpermute_rows(&q, heads)?,
            None => q,
        };
        let weight = QuantizedWeight::new(q)?;
        if !weight.is_finite()? {
            return Err(model_file_error(
                self.path(),
                format!("tensor `{g}` holds NaN or infinite values; the file is corrupt"),
            ));
        }
        self.mark_read(g)?;
        Ok(FrozenWeight::Quantized(weight))
    }

    fn unread(&self) -> Vec<String> {
        let read = self.read.lock().map(|r| r.clone()).unwrap_or_default();
        self.file.tensor_names().iter().filter(|n| !read.contains(*n)).cloned().collect()
    }

    fn contains(&self, name: &str) -> bool {
        gguf_tensor_name(name).is_some_and(|g| self.file.has_tensor(&g))
    }

    fn path(&self) -> &Path {
        self.file.path()
    }

    fn device(&self) -> &Device {
        &self.device
    }
}
