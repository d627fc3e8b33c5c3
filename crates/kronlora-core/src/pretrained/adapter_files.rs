//! Saving and loading adapters in PEFT's layout: `adapter_config.json` +
//! `adapter_model.safetensors`, keys `base_model.model.<module path>.<param>`.
//!
//! LoRA uses PEFT's exact names (`lora_A.weight [r, in]`, `lora_B.weight [out, r]`); Kron-LoRA
//! uses LoKr's (`lokr_w1 = A`, `lokr_w2_a = B1`, `lokr_w2_b = B2`) with `peft_type: "LOKR"`, and
//! its own fields under `kronlora` (PEFT ignores unknown keys). A trained classification head
//! is saved as PEFT's `modules_to_save`. Loading reads shapes from the tensors, so any factor
//! choice round-trips.

use std::collections::BTreeMap;

use candle_core::Tensor;
use serde_json::{json, Value};

use super::{AdapterInfo, Backbone, PretrainedModel, Task};
use crate::adapters::{Adapter, AdapterKind, KronLora, Lora};
use crate::error::{Error, Result};
use crate::io::{join, read_safetensors_bytes, safetensors_bytes, write_owned_dir, Marker, OwnedLayout, Storage};
use crate::models::{AdapterDropout, Projection};
use crate::options::AdapterConfig;
use crate::TensorData;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const KEY_PREFIX: &str = "base_model.model.";

/// kronlora's `adapter_config.json` carries a `kronlora` block; PEFT's own does not.
pub const ADAPTER_MARKER: Marker = Marker {
    file: CONFIG_FILE,
    holds: "`kronlora` block",
    is_ours: |bytes| serde_json::from_slice::<Value>(bytes).is_ok_and(|v| v["kronlora"].is_object()),
};

/// What `save_adapter` may write and replace.
pub const ADAPTER_LAYOUT: OwnedLayout = OwnedLayout { what: "adapter", files: &[WEIGHTS_FILE, CONFIG_FILE], markers: &[ADAPTER_MARKER] };

/// The `decompose_factor` with which PEFT's LoKr builds exactly these Kron-LoRA shapes
/// (`[d_a1, d_a2, d_b1, d_b2, r]` per module): `w1 [out_l, in_m]` from
/// `factorization(out, f)`, `factorization(in, f)`, and a low-rank `w2` only when
/// `r < max(out_k, in_n) / 2`. None when no single factor does.
fn peft_decompose_factor(shapes: &[[usize; 5]]) -> Option<usize> {
    let first = shapes.first()?;
    [first[0], first[1]].into_iter().find(|&f| {
        shapes.iter().all(|&[d_a1, d_a2, d_b1, d_b2, r]| {
            let fits = |dim: usize, want: usize| crate::factorization(dim, f as i64).is_ok_and(|(m, _)| m == want);
            fits(d_a2 * d_b2, d_a2) && fits(d_a1 * d_b1, d_a1) && 2 * r < d_b1.max(d_b2)
        })
    })
}

/// `{ task, numLabels, type, name }` from an `adapter_config.json` (`path` for errors): the
/// task and head size to load the model with before `load_adapter`. kronlora's own fields
/// first; PEFT's `task_type` otherwise; null where the file does not say.
pub fn adapter_config_summary_json(bytes: &[u8], path: &str) -> Result<String> {
    let config: Value = serde_json::from_slice(bytes).map_err(|e| Error::InvalidModel(format!("{path}: invalid JSON: {e}")))?;
    let k = &config["kronlora"];
    let task = k["task"].as_str().map(str::to_string).or_else(|| {
        let task = match config["task_type"].as_str()? {
            "SEQ_CLS" => Task::SequenceClassification,
            "CAUSAL_LM" => Task::CausalLm,
            "FEATURE_EXTRACTION" => Task::Embedding,
            _ => return None,
        };
        Some(task.name().to_string())
    });
    let kind = k["type"].as_str().map(str::to_string).or_else(|| match config["peft_type"].as_str()? {
        "LORA" => Some("lora".into()),
        "LOKR" => Some("kron-lora".into()),
        _ => None,
    });
    Ok(json!({ "task": task, "numLabels": k["numLabels"], "type": kind, "name": k["name"] }).to_string())
}

impl PretrainedModel {
    /// The prefix transformers' task class puts before the backbone's module paths.
    fn module_prefix(&self) -> &'static str {
        match (&self.backbone, self.task) {
            (Backbone::Bert(m), Task::SequenceClassification) if m.config.is_distilbert() => "distilbert.",
            (Backbone::Bert(_), Task::SequenceClassification) => "bert.",
            _ => "",
        }
    }

    /// PEFT's `task_type`.
    fn peft_task_type(&self) -> &'static str {
        match self.task {
            Task::SequenceClassification => "SEQ_CLS",
            Task::CausalLm => "CAUSAL_LM",
            Task::Embedding => "FEATURE_EXTRACTION",
        }
    }

    /// Head tensors under their PEFT keys (the pooler lives inside the backbone module).
    fn head_tensors(&self) -> Vec<(String, &candle_core::Var)> {
        let prefix = self.module_prefix();
        self.head
            .iter()
            .flat_map(|h| h.parameters())
            .map(|(name, var)| {
                let inside = if name.starts_with("pooler.") { prefix } else { "" };
                (format!("{KEY_PREFIX}{inside}{name}"), var)
            })
            .collect()
    }

    fn resolve_adapter_name(&self, name: Option<&str>) -> Result<AdapterInfo> {
        match name {
            Some(n) => self.adapters.iter().find(|a| a.name == n).cloned().ok_or_else(|| {
                Error::InvalidOption(format!(
                    "the model has no adapter named `{n}`; it has {}",
                    if self.adapters.is_empty() { "none".to_string() } else { self.adapters.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ") }
                ))
            }),
            None => match self.adapters.as_slice() {
                [only] => Ok(only.clone()),
                [] => Err(Error::InvalidState("the model has no adapter to save; add or train one first".into())),
                many => Err(Error::InvalidOption(format!(
                    "the model has {} adapters ({}); pass the name of the one to save",
                    many.len(),
                    many.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
                ))),
            },
        }
    }

    /// The files of adapter `name` (default: the only one) and the head, in PEFT's layout.
    pub fn adapter_files(&self, name: Option<&str>) -> Result<Vec<(String, Vec<u8>)>> {
        let info = self.resolve_adapter_name(name)?;
        let prefix = self.module_prefix();
        let mut tensors: Vec<(String, TensorData)> = Vec::new();
        let mut modules: Vec<String> = Vec::new();
        let mut ranks: BTreeMap<String, Value> = BTreeMap::new();
        let mut alphas: BTreeMap<String, Value> = BTreeMap::new();
        // Kron-LoRA factor shapes per module ([d_a2, d_a1], [d_b2, r], [r, d_b1]), to find a
        // PEFT `decompose_factor` that rebuilds exactly these shapes, when one exists.
        let mut kron_shapes: Vec<[usize; 5]> = Vec::new();
        for (path, adapter_name, adapter) in self.adapters() {
            if adapter_name != info.name {
                continue;
            }
            let module = format!("{prefix}{path}");
            let params = adapter.parameters();
            let rank = match adapter.kind() {
                AdapterKind::Lora => params[0].1.dim(0)?,
                AdapterKind::KronLora => params[1].1.dim(1)?,
            };
            let alpha = if info.config.use_rslora { adapter.scale() * (rank as f64).sqrt() } else { adapter.scale() * rank as f64 };
            if adapter.kind() == AdapterKind::KronLora {
                let (d_a2, d_a1) = params[0].1.as_tensor().dims2()?;
                let (d_b2, d_b1) = (params[1].1.dim(0)?, params[2].1.dim(1)?);
                kron_shapes.push([d_a1, d_a2, d_b1, d_b2, rank]);
            }
            if rank != info.config.rank {
                ranks.insert(module.clone(), json!(rank));
            }
            if (alpha - info.config.alpha).abs() > 1e-9 * alpha.abs().max(1.0) {
                alphas.insert(module.clone(), json!(alpha));
            }
            for (param, var) in params {
                let key = match (adapter.kind(), param) {
                    (AdapterKind::Lora, p) => format!("{KEY_PREFIX}{module}.{p}.weight"),
                    (AdapterKind::KronLora, "A") => format!("{KEY_PREFIX}{module}.lokr_w1"),
                    (AdapterKind::KronLora, "B1") => format!("{KEY_PREFIX}{module}.lokr_w2_a"),
                    (AdapterKind::KronLora, _) => format!("{KEY_PREFIX}{module}.lokr_w2_b"),
                };
                tensors.push((key, TensorData::from_tensor(var.as_tensor())?));
            }
            modules.push(module);
        }
        let mut modules_to_save: Vec<&str> = Vec::new();
        if let Some(head) = &self.head {
            for (key, var) in self.head_tensors() {
                tensors.push((key, TensorData::from_tensor(var.as_tensor())?));
            }
            modules_to_save = head.module_names();
        }
        let kronlora = json!({
            "format": 1,
            "type": match info.config.kind { AdapterKind::KronLora => "kron-lora", AdapterKind::Lora => "lora" },
            "name": info.name,
            "rank": info.config.rank,
            "alpha": info.config.alpha,
            "kronIn": info.config.kron_in,
            "kronOut": info.config.kron_out,
            "useRslora": info.config.use_rslora,
            "dropout": info.dropout,
            "task": self.task.name(),
            "labels": self.labels.names,
            "numLabels": self.head.as_ref().map(|h| h.num_labels()),
        });
        let mut config = json!({
            "task_type": self.peft_task_type(),
            "base_model_name_or_path": self.source_name,
            "target_modules": modules,
            "modules_to_save": if modules_to_save.is_empty() { Value::Null } else { json!(modules_to_save) },
            "r": info.config.rank,
            "rank_pattern": ranks,
            "alpha_pattern": alphas,
            "inference_mode": true,
            "kronlora": kronlora,
        });
        let fields = config.as_object_mut().expect("an object");
        match info.config.kind {
            AdapterKind::Lora => {
                fields.insert("peft_type".into(), json!("LORA"));
                fields.insert("lora_alpha".into(), json!(info.config.alpha));
                fields.insert("lora_dropout".into(), json!(info.dropout));
                fields.insert("use_rslora".into(), json!(info.config.use_rslora));
                fields.insert("bias".into(), json!("none"));
                fields.insert("fan_in_fan_out".into(), json!(false));
                fields.insert("init_lora_weights".into(), json!(true));
            }
            AdapterKind::KronLora => {
                fields.insert("peft_type".into(), json!("LOKR"));
                fields.insert("alpha".into(), json!(info.config.alpha));
                fields.insert("decompose_both".into(), json!(false));
                // Kron-LoRA picks d_A1 and d_A2 separately; PEFT rebuilds LoKr's shapes from one
                // factor. When one factor gives every module's shapes, PEFT loads the file as it
                // is; otherwise -1, and kronlora (which reads shapes from the tensors) still does.
                let factor = peft_decompose_factor(&kron_shapes);
                fields.insert("decompose_factor".into(), json!(factor.map_or(-1, |f| f as i64)));
                fields.get_mut("kronlora").and_then(Value::as_object_mut).map(|k| k.insert("peftLoadable".into(), json!(factor.is_some())));
                fields.insert("rank_dropout".into(), json!(0.0));
                fields.insert("module_dropout".into(), json!(0.0));
                fields.insert("use_effective_conv2d".into(), json!(false));
                fields.insert("init_weights".into(), json!(true));
            }
        }
        let config = serde_json::to_vec_pretty(&config).map_err(|e| Error::InvalidState(format!("cannot serialise the adapter config: {e}")))?;
        // Weights before the config (the marker): see `io::owned_dir`.
        Ok(vec![(WEIGHTS_FILE.into(), safetensors_bytes(&tensors, &[("format", "pt")])?), (CONFIG_FILE.into(), config)])
    }

    /// Write adapter `name` (default: the only one) to the directory `dir`: a new directory
    /// atomically, or kronlora's two files in an existing one, leaving everything else there;
    /// refused when it would replace files kronlora did not write (see `io::owned_dir`).
    pub fn save_adapter(&self, storage: &dyn Storage, dir: &str, name: Option<&str>) -> Result<()> {
        if dir.is_empty() {
            return Err(Error::InvalidOption("the adapter directory is empty; pass a path".into()));
        }
        write_owned_dir(storage, dir, &ADAPTER_LAYOUT, &self.adapter_files(name)?)
    }

    /// Read an adapter directory written by `save_adapter` (or PEFT) and add it as `name`
    /// (default: the name it was saved under, else "default"). Returns how many modules got it.
    pub fn load_adapter(&mut self, storage: &dyn Storage, dir: &str, name: Option<&str>) -> Result<usize> {
        let config_path = join(dir, CONFIG_FILE);
        let weights_path = join(dir, WEIGHTS_FILE);
        for path in [&config_path, &weights_path] {
            if !storage.exists(path) {
                return Err(Error::InvalidModel(format!("{path} does not exist; an adapter directory holds {CONFIG_FILE} and {WEIGHTS_FILE}")));
            }
        }
        self.load_adapter_bytes(&storage.read(&config_path)?, &storage.read(&weights_path)?, dir, name)
    }

    /// `load_adapter` from the two files' bytes; `dir` names them in errors.
    pub fn load_adapter_bytes(&mut self, config: &[u8], weights: &[u8], dir: &str, name: Option<&str>) -> Result<usize> {
        let config_path = join(dir, CONFIG_FILE);
        let weights_path = join(dir, WEIGHTS_FILE);
        let config: Value = serde_json::from_slice(config).map_err(|e| Error::InvalidModel(format!("{config_path}: invalid JSON: {e}")))?;
        let bad = |msg: String| Error::InvalidModel(format!("{config_path}: {msg}"));
        let kind = match config["peft_type"].as_str() {
            Some("LORA") => AdapterKind::Lora,
            Some("LOKR") => AdapterKind::KronLora,
            Some(other) => return Err(bad(format!("peft_type `{other}` is not supported; kronlora loads LORA and LOKR adapters"))),
            None => return Err(bad("`peft_type` is missing".into())),
        };
        let number = |key: &str| config[key].as_f64();
        let alpha = match kind {
            AdapterKind::Lora => number("lora_alpha"),
            AdapterKind::KronLora => number("alpha"),
        }
        .ok_or_else(|| bad(format!("`{}` must be a number", if kind == AdapterKind::Lora { "lora_alpha" } else { "alpha" })))?;
        let rank = number("r").filter(|r| *r >= 1.0).ok_or_else(|| bad("`r` must be a positive integer".into()))? as usize;
        let use_rslora = config["use_rslora"].as_bool().unwrap_or(false) || config["kronlora"]["useRslora"].as_bool().unwrap_or(false);
        let dropout = config["kronlora"]["dropout"].as_f64().or_else(|| number("lora_dropout")).unwrap_or(0.0).clamp(0.0, 0.99);
        let name = name.map(str::to_string).or_else(|| config["kronlora"]["name"].as_str().map(str::to_string)).unwrap_or_else(|| "default".into());
        if self.adapters.iter().any(|a| a.name == name) {
            return Err(Error::InvalidOption(format!("the model already has an adapter named `{name}`; pass another name")));
        }
        if let Some(task) = config["kronlora"]["task"].as_str() {
            if task != self.task.name() {
                return Err(Error::InvalidModel(format!(
                    "{config_path}: the adapter was trained for task \"{task}\", this model is loaded for \"{}\"",
                    self.task.name()
                )));
            }
        }
        let tensors = read_safetensors_bytes(weights, &weights_path)?;
        let device = crate::default_device();
        let get = |key: &str| -> Option<Result<Tensor>> { tensors.get(key).map(|t| t.to_tensor(&device)) };
        let pattern = |field: &str, module: &str| -> Option<f64> {
            config[field].as_object()?.iter().find(|(k, _)| module == k.as_str() || module.ends_with(&format!(".{k}"))).and_then(|(_, v)| v.as_f64())
        };
        let prefix = self.module_prefix();
        let seed = match &self.backbone {
            Backbone::Bert(m) => m.dropout_seed.clone(),
            Backbone::Llama(m) => m.dropout_seed.clone(),
        };
        // Build every adapter before attaching any: a bad file leaves the model unchanged.
        let mut built: Vec<(usize, Box<dyn Adapter>)> = Vec::new();
        let projections: Vec<&Projection> = match &self.backbone {
            Backbone::Bert(m) => m.projections(),
            Backbone::Llama(m) => m.projections().into_iter().map(|(p, _)| p).collect(),
        };
        let mut used = 0usize;
        for (index, p) in projections.iter().enumerate() {
            // Keys with this model's task prefix, or without one (an adapter from the bare backbone).
            let candidates = [format!("{KEY_PREFIX}{prefix}{}", p.name), format!("{KEY_PREFIX}{}", p.name)];
            let key = |module: &str, param: &str| format!("{module}.{param}");
            let module = candidates.iter().find(|m| tensors.contains_key(&key(m, if kind == AdapterKind::Lora { "lora_A.weight" } else { "lokr_w1" })));
            let Some(module) = module else { continue };
            let short = module.trim_start_matches(KEY_PREFIX);
            let module_alpha = pattern("alpha_pattern", short).unwrap_or(alpha);
            let (out_f, in_f) = (p.out_features(), p.in_features());
            let shape_error = |what: String| Error::InvalidModel(format!("{weights_path}: {short}: {what}; the adapter was saved for another model"));
            let adapter: Box<dyn Adapter> = match kind {
                AdapterKind::Lora => {
                    let a = get(&key(module, "lora_A.weight")).expect("found above")?;
                    let b = get(&key(module, "lora_B.weight")).ok_or_else(|| shape_error("lora_B.weight is missing".into()))??;
                    let r = a.dim(0)?;
                    if a.dims() != [r, in_f] || b.dims() != [out_f, r] {
                        return Err(shape_error(format!("lora_A {:?} / lora_B {:?} do not fit a [{out_f}, {in_f}] layer", a.dims(), b.dims())));
                    }
                    used += 2;
                    let scale = if use_rslora { module_alpha / (r as f64).sqrt() } else { module_alpha / r as f64 };
                    Box::new(Lora::from_factors(&a, &b, scale)?)
                }
                AdapterKind::KronLora => {
                    let a = get(&key(module, "lokr_w1")).expect("found above")?;
                    let b1 = get(&key(module, "lokr_w2_a")).ok_or_else(|| shape_error("lokr_w2_a is missing (a full lokr_w2 is not supported)".into()))??;
                    let b2 = get(&key(module, "lokr_w2_b")).ok_or_else(|| shape_error("lokr_w2_b is missing".into()))??;
                    let (Ok((d_a2, d_a1)), Ok((d_b2, r)), Ok((r2, d_b1))) = (a.dims2(), b1.dims2(), b2.dims2()) else {
                        return Err(shape_error("lokr_w1, lokr_w2_a and lokr_w2_b must be matrices".into()));
                    };
                    if r != r2 || d_a1 * d_b1 != in_f || d_a2 * d_b2 != out_f {
                        return Err(shape_error(format!(
                            "lokr_w1 {:?} ⊗ (lokr_w2_a {:?} · lokr_w2_b {:?}) does not give a [{out_f}, {in_f}] update",
                            a.dims(),
                            b1.dims(),
                            b2.dims()
                        )));
                    }
                    used += 3;
                    let scale = if use_rslora { module_alpha / (r as f64).sqrt() } else { module_alpha / r as f64 };
                    Box::new(KronLora::from_factors(&a, &b1, &b2, scale)?)
                }
            };
            built.push((index, adapter));
        }
        if built.is_empty() {
            return Err(Error::InvalidModel(format!(
                "{weights_path}: no tensor matches a module of this model (e.g. {}{}); the adapter was saved for another model",
                KEY_PREFIX,
                projections.first().map_or("?".to_string(), |p| format!("{prefix}{}", p.name))
            )));
        }
        // The head, when the file has one and this model has a head.
        let head_keys: Vec<(String, candle_core::Var)> = self.head_tensors().into_iter().map(|(k, v)| (k, v.clone())).collect();
        let head_values: Vec<Option<Tensor>> = head_keys
            .iter()
            .map(|(key, var)| match get(key) {
                Some(t) => {
                    let t = t?;
                    if t.dims() != var.dims() {
                        return Err(Error::InvalidModel(format!(
                            "{weights_path}: `{key}` has shape {:?}, this model's head {:?}; load the model with the numLabels the adapter was trained with",
                            t.dims(),
                            var.dims()
                        )));
                    }
                    used += 1;
                    Ok(Some(t))
                }
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        if used < tensors.len() {
            let known: Vec<&String> = tensors.keys().collect();
            return Err(Error::InvalidModel(format!(
                "{weights_path}: {} of {} tensors match no module of this model (first: {}); the adapter was saved for another model",
                tensors.len() - used,
                tensors.len(),
                known.first().map_or("?", |k| k.as_str())
            )));
        }
        let labels: Vec<String> = config["kronlora"]["labels"].as_array().map(|l| l.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default();
        if let Some(head) = &self.head {
            if labels.len() > head.num_labels() {
                return Err(bad(format!("{} labels do not fit a head with numLabels = {}", labels.len(), head.num_labels())));
            }
        }
        // Attach.
        let count = built.len();
        let mut projections: Vec<&mut Projection> = match &mut self.backbone {
            Backbone::Bert(m) => m.projections_mut(),
            Backbone::Llama(m) => m.projections_mut(),
        };
        for (index, adapter) in built {
            let p = &mut projections[index];
            let dropout = (dropout > 0.0).then(|| AdapterDropout::new(dropout, &p.name, seed.clone()));
            p.add_adapter(name.clone(), adapter, dropout);
        }
        for ((_, var), value) in head_keys.iter().zip(head_values) {
            if let Some(v) = value {
                var.set(&v)?;
            }
        }
        if !labels.is_empty() {
            self.labels = crate::data::LabelMap { names: labels };
        }
        let kron = |k: &str| config["kronlora"][k].as_u64().map(|x| x as usize);
        self.adapters.push(AdapterInfo {
            name,
            modules: count,
            config: AdapterConfig { kind, rank, alpha, kron_in: kron("kronIn"), kron_out: kron("kronOut"), use_rslora, seed: 0 },
            dropout,
        });
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::peft_decompose_factor;

    #[test]
    fn a_peft_factor_exists_only_when_one_factor_gives_every_shape() {
        // MiniLM's 384→384, 384→1536, 1536→384 layers: [d_a1, d_a2, d_b1, d_b2, r].
        let square = |f: usize, r: usize| vec![[f, f, 384 / f, 384 / f, r], [f, f, 384 / f, 1536 / f, r], [f, f, 1536 / f, 384 / f, r]];
        assert_eq!(peft_decompose_factor(&square(4, 8)), Some(4));
        // Kron-LoRA's default d_A1 = 2, d_A2 = 4: PEFT's single factor cannot express it.
        assert_eq!(peft_decompose_factor(&[[2, 4, 192, 96, 8]]), None);
        // PEFT keeps w2 full when r ≥ max(out_k, in_n) / 2.
        assert_eq!(peft_decompose_factor(&[[4, 4, 4, 4, 2]]), None);
        assert_eq!(peft_decompose_factor(&[]), None);
    }
}
