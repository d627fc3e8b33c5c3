//! `saveMerged` for a model loaded from a Hugging Face directory: a directory transformers loads
//! as the adapted model, with no adapter support. `model.safetensors` holds every tensor of the
//! base as stored (dtype and bytes unchanged) except the adapted projections, written merged in
//! f32 so that no merged value is rounded; a classifier's head is written under the names of
//! transformers' `*ForSequenceClassification` class with `config.json` saying so
//! (`architectures`, `id2label`); tokenizer files are copied. `config.json` carries a `kronlora`
//! block: the marker that lets kronlora replace the directory later, and nothing else.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Map, Value};

use super::PretrainedModel;
use crate::error::{Error, Result};
use crate::io::{join, write_owned_dir, EntryKind, Marker, OwnedLayout, Storage};
use crate::models::Task;

const CONFIG: &str = "config.json";
const WEIGHTS: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";
/// kronlora's merged `config.json` has a `kronlora` block naming the merged adapters.
const MERGED_MARKER: Marker = Marker {
    file: CONFIG,
    holds: "`kronlora` block",
    is_ours: |bytes| serde_json::from_slice::<Value>(bytes).is_ok_and(|v| v["kronlora"]["merged_adapters"].is_array()),
};

/// The files of a merged directory: the weights, the config (kronlora's marker), then
/// what is copied unchanged when the base has it: what a tokenizer (and generation) needs.
const MERGED_FILES: &[&str] = &[
    WEIGHTS,
    CONFIG,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "generation_config.json",
];
const COPIED: &[&str] = MERGED_FILES.split_at(2).1;

const MERGED_LAYOUT: OwnedLayout = OwnedLayout { what: "merged model", files: MERGED_FILES, markers: &[MERGED_MARKER] };

/// Prefixes a Hugging Face checkpoint may put before a backbone's names (`bert.` in a task
/// model's file, `model.` in some exports); the first one the file uses for a projection is it.
const STORED_PREFIXES: &[&str] = &["", "bert.", "distilbert.", "model."];

/// A tensor to write: the base's bytes as stored, or new f32 values.
enum Out<'a> {
    Stored(safetensors::tensor::TensorView<'a>),
    F32(Vec<usize>, Vec<u8>),
}

fn f32_bytes(t: &Tensor) -> Result<(Vec<usize>, Vec<u8>)> {
    let t = t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.contiguous()?;
    let bytes = t.flatten_all()?.to_vec1::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok((t.dims().to_vec(), bytes))
}

impl PretrainedModel {
    /// Write the model with its active adapters merged as a Hugging Face directory `dir`,
    /// re-reading the base's files from the directory it was loaded from.
    pub(super) fn save_merged_hf(&self, storage: &dyn Storage, dir: &str) -> Result<()> {
        let source = self.source_name.as_str();
        if storage.kind(&join(source, CONFIG))? != EntryKind::File {
            return Err(Error::Unsupported(format!(
                "saveMerged reads the base model's files again from the directory it was loaded from, and `{source}` is not one; load the model from its directory"
            )));
        }
        let merged = self.merged_weights()?;
        let shards = self.source_shards(storage)?;
        let parsed = shards
            .iter()
            .map(|(path, bytes)| {
                safetensors::SafeTensors::deserialize(bytes)
                    .map_err(|e| Error::InvalidModel(format!("{path}: not a valid safetensors file: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let stored: Vec<(String, safetensors::tensor::TensorView)> = parsed.iter().flat_map(|f| f.tensors()).collect();
        let first = merged.first().map(|(p, _)| format!("{p}.weight")).unwrap_or_default();
        let prefix = STORED_PREFIXES
            .iter()
            .find(|p| stored.iter().any(|(n, _)| *n == format!("{p}{first}")))
            .ok_or_else(|| Error::InvalidModel(format!("{source}: the weights no longer hold `{first}`")))?;
        let head_prefix = self.backbone.task_module_prefix(self.task);

        let mut merged: HashMap<String, Tensor> = merged.into_iter().map(|(p, w)| (format!("{p}.weight"), w)).collect();
        let mut tensors: Vec<(String, Out)> = Vec::new();
        for (name, view) in stored {
            let rest = name.strip_prefix(prefix).unwrap_or(&name).to_string();
            let out_name = match &self.head {
                None => name,
                // A task model's backbone sits under its prefix; the base's own head (pooler,
                // classifier, pretraining heads) is replaced by the trained one below.
                Some(_) if ["embeddings.", "encoder.", "transformer."].iter().any(|b| rest.starts_with(b)) => {
                    format!("{head_prefix}{rest}")
                }
                Some(_) => continue,
            };
            let t = match merged.remove(&rest) {
                Some(w) => {
                    let (shape, bytes) = f32_bytes(&w)?;
                    Out::F32(shape, bytes)
                }
                None => Out::Stored(view),
            };
            tensors.push((out_name, t));
        }
        if let Some(missing) = merged.keys().next() {
            return Err(Error::InvalidModel(format!("{source}: the weights no longer hold `{prefix}{missing}`")));
        }
        if let Some(head) = &self.head {
            for (name, var) in head.parameters() {
                let (shape, bytes) = f32_bytes(var.as_tensor())?;
                let name = if name.starts_with("pooler.") { format!("{head_prefix}{name}") } else { name.to_string() };
                tensors.push((name, Out::F32(shape, bytes)));
            }
        }
        let weights = serialize(&tensors)?;
        drop(tensors);
        drop(parsed);

        let mut files = vec![(WEIGHTS.to_string(), weights)];
        for name in COPIED {
            let path = join(source, name);
            if storage.kind(&path)? == EntryKind::File {
                files.push((name.to_string(), storage.read(&path)?));
            }
        }
        files.push((CONFIG.to_string(), self.merged_config(storage)?));
        write_owned_dir(storage, dir, &MERGED_LAYOUT, &files)
    }

    /// The base's safetensors files, with their paths: the single file or the index's shards.
    fn source_shards(&self, storage: &dyn Storage) -> Result<Vec<(String, Vec<u8>)>> {
        let source = self.source_name.as_str();
        let single = join(source, WEIGHTS);
        if storage.kind(&single)? == EntryKind::File {
            return Ok(vec![(single.clone(), storage.read(&single)?)]);
        }
        let index_path = join(source, INDEX);
        let index: Value = serde_json::from_slice(&storage.read(&index_path)?)
            .map_err(|e| Error::InvalidModel(format!("{index_path}: invalid: {e}")))?;
        let mut shards: Vec<&str> =
            index["weight_map"].as_object().into_iter().flat_map(|m| m.values()).filter_map(Value::as_str).collect();
        shards.sort_unstable();
        shards.dedup();
        if shards.iter().any(|s| s.is_empty() || s.contains(['/', '\\']) || *s == "..") {
            return Err(Error::InvalidModel(format!(
                "{index_path}: a shard is not a file name in the model directory"
            )));
        }
        shards
            .into_iter()
            .map(|s| {
                let path = join(source, s);
                let bytes = storage.read(&path)?;
                Ok((path, bytes))
            })
            .collect()
    }

    /// The base's `config.json`, as the class of the task for a classifier, and marked.
    fn merged_config(&self, storage: &dyn Storage) -> Result<Vec<u8>> {
        let path = join(&self.source_name, CONFIG);
        let mut config: Map<String, Value> = serde_json::from_slice(&storage.read(&path)?)
            .map_err(|e| Error::InvalidModel(format!("{path}: not a JSON object: {e}")))?;
        if let (Some(head), Task::SequenceClassification) = (&self.head, self.task) {
            let class = if self.backbone.model_type() == "distilbert" {
                "DistilBertForSequenceClassification"
            } else {
                "BertForSequenceClassification"
            };
            let names: Vec<String> = (0..head.num_labels())
                .map(|i| self.labels.names.get(i).cloned().unwrap_or_else(|| format!("LABEL_{i}")))
                .collect();
            let id2label: Map<String, Value> =
                names.iter().enumerate().map(|(i, n)| (i.to_string(), json!(n))).collect();
            let label2id: Map<String, Value> = names.iter().enumerate().map(|(i, n)| (n.clone(), json!(i))).collect();
            config.insert("architectures".into(), json!([class]));
            config.insert("id2label".into(), Value::Object(id2label));
            config.insert("label2id".into(), Value::Object(label2id));
            config.insert("problem_type".into(), json!("single_label_classification"));
        }
        let adapters: Vec<Value> =
            self.active_adapters().iter().map(|a| json!({ "name": a.name, "weight": a.weight })).collect();
        config.insert(
            "kronlora".into(),
            json!({ "version": env!("CARGO_PKG_VERSION"), "merged_adapters": adapters, "merged_dtype": "float32" }),
        );
        serde_json::to_vec_pretty(&config).map_err(|e| Error::InvalidState(format!("cannot write {CONFIG}: {e}")))
    }
}

fn serialize(tensors: &[(String, Out)]) -> Result<Vec<u8>> {
    use safetensors::tensor::TensorView;
    let views = tensors
        .iter()
        .map(|(name, t)| {
            let view = match t {
                Out::Stored(v) => TensorView::new(v.dtype(), v.shape().to_vec(), v.data()),
                Out::F32(shape, bytes) => TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes),
            };
            view.map(|v| (name.as_str(), v))
                .map_err(|e| Error::InvalidState(format!("cannot write tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::InvalidState(format!("cannot write {WEIGHTS}: {e}")))
}
