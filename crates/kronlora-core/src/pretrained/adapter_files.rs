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

use super::{AdapterInfo, PretrainedModel, Task};
use crate::models::adapted_linear::AdaptedLinear;
use crate::adapters::AdapterConfig;
use crate::adapters::AdapterDropout;
use crate::adapters::{Adapter, AdapterKind, KronLora, Lora};
use crate::error::{Error, Result};
use crate::io::{join, read_safetensors_bytes, safetensors_bytes, write_owned_dir, Marker, OwnedLayout, Storage};
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
pub const ADAPTER_LAYOUT: OwnedLayout =
    OwnedLayout { what: "adapter", files: &[WEIGHTS_FILE, CONFIG_FILE], markers: &[ADAPTER_MARKER] };

use crate::limits::MAX_ALPHA;

/// An adapter's `alpha` (or `lora_alpha`, or an `alpha_pattern` entry): finite, non-zero, and
/// at most `MAX_ALPHA` in size.
fn check_alpha(path: &str, field: &str, value: &Value) -> Result<f64> {
    match value.as_f64() {
        Some(x) if x.is_finite() && x != 0.0 && x.abs() <= MAX_ALPHA => Ok(x),
        _ => Err(Error::InvalidModel(format!(
            "{path}: `{field}` = {value} is out of range; expected a non-zero number from -{MAX_ALPHA:e} to {MAX_ALPHA:e}"
        ))),
    }
}

/// An adapter's `r` (or a `rank_pattern` entry): an integer from 1 to `MAX_RANK`.
fn check_rank(path: &str, field: &str, value: &Value) -> Result<usize> {
    match value.as_u64() {
        Some(r) if r >= 1 && r as usize <= crate::limits::MAX_RANK => Ok(r as usize),
        _ => Err(Error::InvalidModel(format!(
            "{path}: `{field}` = {value} is out of range; expected an integer from 1 to {}",
            crate::limits::MAX_RANK
        ))),
    }
}

/// PEFT's `target_modules`: module-name suffixes, a regular expression that must match a whole
/// module name, or absent / "all-linear" (anything).
enum TargetList {
    Any,
    Pattern(regex::Regex, String),
    Names(Vec<String>),
}

impl TargetList {
    fn from_config(value: &Value, path: &str) -> Result<Self> {
        let bad = |what: String| Error::InvalidModel(format!("{path}: `target_modules` {what}"));
        match value {
            Value::Null => Ok(TargetList::Any),
            Value::String(s) if s == "all-linear" => Ok(TargetList::Any),
            Value::String(s) => {
                let re = regex::Regex::new(&format!("^(?:{s})$"))
                    .map_err(|e| bad(format!("= {s:?} is not a valid regular expression: {e}")))?;
                Ok(TargetList::Pattern(re, s.clone()))
            }
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad(format!("must hold module names, not {v}"))))
                .collect::<Result<_>>()
                .map(TargetList::Names),
            other => Err(bad(format!("must be a list of module names or a regular expression, not {other}"))),
        }
    }

    fn matches(&self, module: &str) -> bool {
        match self {
            TargetList::Any => true,
            TargetList::Pattern(re, _) => re.is_match(module),
            TargetList::Names(names) => names.iter().any(|n| Self::names(n, module)),
        }
    }

    /// PEFT's rule: a name matches the module it equals or ends (after a dot).
    fn names(name: &str, module: &str) -> bool {
        module == name || module.strip_suffix(name).is_some_and(|head| head.ends_with('.'))
    }

    /// A listed name that matches none of `modules`.
    fn unmatched(&self, modules: &[String]) -> Option<&str> {
        match self {
            TargetList::Names(names) => {
                names.iter().find(|n| !modules.iter().any(|m| Self::names(n, m))).map(String::as_str)
            }
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            TargetList::Any => "any module".into(),
            TargetList::Pattern(_, s) => format!("{s:?}"),
            TargetList::Names(names) if names.len() > 4 => {
                format!("{}, … ({} names)", names[..4].join(", "), names.len())
            }
            TargetList::Names(names) => names.join(", "),
        }
    }
}

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
    let config: Value =
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidModel(format!("{path}: invalid JSON: {e}")))?;
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
    // What the summary hands on must be what loadModel's options accept; the options parser
    // checks ranges, this checks that each field is of the right kind.
    let bad = |field: &str, value: &Value, expected: &str| {
        Error::InvalidModel(format!("{path}: `{field}` = {value} is not {expected}"))
    };
    if let Some(t) = &task {
        if ![Task::SequenceClassification, Task::CausalLm, Task::Embedding].iter().any(|known| known.name() == t) {
            return Err(bad(
                "kronlora.task",
                &k["task"],
                "a task (\"sequence-classification\", \"causal-lm\" or \"embedding\")",
            ));
        }
    }
    if !(k["numLabels"].is_null() || k["numLabels"].as_u64().is_some_and(|n| n >= 1)) {
        return Err(bad("kronlora.numLabels", &k["numLabels"], "a positive integer"));
    }
    if !(k["name"].is_null() || k["name"].is_string()) {
        return Err(bad("kronlora.name", &k["name"], "a string"));
    }
    Ok(json!({ "task": task, "numLabels": k["numLabels"], "type": kind, "name": k["name"] }).to_string())
}

impl PretrainedModel {
    /// The prefix transformers' task class puts before the backbone's module paths.
    fn module_prefix(&self) -> &'static str {
        self.backbone.task_module_prefix(self.task)
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
                    if self.adapters.is_empty() {
                        "none".to_string()
                    } else {
                        self.adapters.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
                    }
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
            let alpha = if info.config.use_rslora {
                adapter.scale() * (rank as f64).sqrt()
            } else {
                adapter.scale() * rank as f64
            };
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
                fields
                    .get_mut("kronlora")
                    .and_then(Value::as_object_mut)
                    .map(|k| k.insert("peftLoadable".into(), json!(factor.is_some())));
                fields.insert("rank_dropout".into(), json!(0.0));
                fields.insert("module_dropout".into(), json!(0.0));
                fields.insert("use_effective_conv2d".into(), json!(false));
                fields.insert("init_weights".into(), json!(true));
            }
        }
        let config = serde_json::to_vec_pretty(&config)
            .map_err(|e| Error::InvalidState(format!("cannot serialise the adapter config: {e}")))?;
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
                return Err(Error::InvalidModel(format!(
                    "{path} does not exist; an adapter directory holds {CONFIG_FILE} and {WEIGHTS_FILE}"
                )));
            }
        }
        self.load_adapter_bytes(&storage.read(&config_path)?, &storage.read(&weights_path)?, dir, name)
    }

    /// `load_adapter` from the two files' bytes; `dir` names them in errors.
    pub fn load_adapter_bytes(
        &mut self,
        config: &[u8],
        weights: &[u8],
        dir: &str,
        name: Option<&str>,
    ) -> Result<usize> {
        // Loading checks what it reads first; a candle failure left over is still the file's
        // doing, not a kronlora bug.
        self.load_adapter_checked(config, weights, dir, name).map_err(|e| match e {
            Error::Internal(e) => Error::InvalidModel(format!(
                "{}: cannot be read: {}",
                join(dir, WEIGHTS_FILE),
                e.to_string().lines().next().unwrap_or("")
            )),
            other => other,
        })
    }

    fn load_adapter_checked(&mut self, config: &[u8], weights: &[u8], dir: &str, name: Option<&str>) -> Result<usize> {
        let config_path = join(dir, CONFIG_FILE);
        let weights_path = join(dir, WEIGHTS_FILE);
        let config: Value = serde_json::from_slice(config)
            .map_err(|e| Error::InvalidModel(format!("{config_path}: invalid JSON: {e}")))?;
        let bad = |msg: String| Error::InvalidModel(format!("{config_path}: {msg}"));
        let kind = match config["peft_type"].as_str() {
            Some("LORA") => AdapterKind::Lora,
            Some("LOKR") => AdapterKind::KronLora,
            Some(other) => {
                return Err(bad(format!("peft_type `{other}` is not supported; kronlora loads LORA and LOKR adapters")))
            }
            None => return Err(bad("`peft_type` is missing".into())),
        };
        let number = |key: &str| config[key].as_f64();
        let alpha_field = if kind == AdapterKind::Lora { "lora_alpha" } else { "alpha" };
        let alpha = check_alpha(&config_path, alpha_field, &config[alpha_field])?;
        let rank = check_rank(&config_path, "r", &config["r"])?;
        for (field, is_rank) in [("rank_pattern", true), ("alpha_pattern", false)] {
            match &config[field] {
                Value::Null => {}
                Value::Object(entries) => {
                    for (module, v) in entries {
                        let field = format!("{field}.{module}");
                        if is_rank {
                            check_rank(&config_path, &field, v).map(|_| ())?
                        } else {
                            check_alpha(&config_path, &field, v).map(|_| ())?
                        }
                    }
                }
                other => return Err(bad(format!("`{field}` must be an object of module → number, got {other}"))),
            }
        }
        let use_rslora = config["use_rslora"].as_bool().unwrap_or(false)
            || config["kronlora"]["useRslora"].as_bool().unwrap_or(false);
        let (dropout_field, dropout) = match config["kronlora"]["dropout"].as_f64() {
            Some(d) => ("kronlora.dropout", d),
            None => ("lora_dropout", number("lora_dropout").unwrap_or(0.0)),
        };
        if !(0.0..1.0).contains(&dropout) {
            return Err(bad(format!(
                "`{dropout_field}` = {dropout} is out of range; expected a number from 0 to below 1"
            )));
        }
        let name = name
            .map(str::to_string)
            .or_else(|| config["kronlora"]["name"].as_str().map(str::to_string))
            .unwrap_or_else(|| "default".into());
        if self.adapters.iter().any(|a| a.name == name) {
            return Err(Error::InvalidOption(format!(
                "the model already has an adapter named `{name}`; pass another name"
            )));
        }
        if let Some(task) = config["kronlora"]["task"].as_str() {
            if task != self.task.name() {
                return Err(Error::InvalidModel(format!(
                    "{config_path}: the adapter was trained for task \"{task}\", this model is loaded for \"{}\"",
                    self.task.name()
                )));
            }
        }
        // A file that is not a float safetensors file is a bad adapter (a model file), whatever
        // code the shared reader gives it.
        let tensors = read_safetensors_bytes(weights, &weights_path).map_err(|e| match e {
            Error::InvalidData(m) => Error::InvalidModel(m),
            other => other,
        })?;
        if let Some((key, t)) = tensors.iter().find(|(_, t)| t.data.iter().any(|v| !v.is_finite())) {
            let at = t.data.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Err(Error::InvalidModel(format!(
                "{weights_path}: tensor `{key}` holds {} at index {at}; the file is corrupt",
                t.data[at]
            )));
        }
        let targets = TargetList::from_config(&config["target_modules"], &config_path)?;
        let device = self.device().clone();
        let used = std::cell::RefCell::new(std::collections::BTreeSet::<String>::new());
        let get = |key: &str| -> Option<Result<Tensor>> {
            let t = tensors.get(key)?;
            used.borrow_mut().insert(key.to_string());
            Some(t.to_tensor(&device))
        };
        let pattern = |field: &str, module: &str| -> Option<f64> {
            config[field]
                .as_object()?
                .iter()
                .find(|(k, _)| module == k.as_str() || module.ends_with(&format!(".{k}")))
                .and_then(|(_, v)| v.as_f64())
        };
        let prefix = self.module_prefix();
        let seed = self.backbone.dropout_seed().clone();
        // Build every adapter before attaching any: a bad file leaves the model unchanged.
        let mut built: Vec<(usize, Box<dyn Adapter>)> = Vec::new();
        let projections: Vec<&AdaptedLinear> = self.backbone.projections();
        let mut loaded_modules: Vec<String> = Vec::new();
        for (index, p) in projections.iter().enumerate() {
            // Keys with this model's task prefix, or without one (an adapter from the bare backbone).
            let candidates = [format!("{KEY_PREFIX}{prefix}{}", p.name), format!("{KEY_PREFIX}{}", p.name)];
            let key = |module: &str, param: &str| format!("{module}.{param}");
            let module = candidates.iter().find(|m| {
                tensors.contains_key(&key(m, if kind == AdapterKind::Lora { "lora_A.weight" } else { "lokr_w1" }))
            });
            let Some(module) = module else { continue };
            let short = module.trim_start_matches(KEY_PREFIX);
            let module_alpha = pattern("alpha_pattern", short).unwrap_or(alpha);
            let module_rank = pattern("rank_pattern", short).map_or(rank, |r| r as usize);
            let (out_f, in_f) = (p.out_features(), p.in_features());
            let shape_error = |what: String| {
                Error::InvalidModel(format!("{weights_path}: {short}: {what}; the adapter was saved for another model"))
            };
            if !targets.matches(short) {
                return Err(Error::InvalidModel(format!(
                    "{weights_path}: module `{short}` has adapter tensors, but {config_path}'s `target_modules` ({}) does not list it; the config and the weights disagree",
                    targets.describe()
                )));
            }
            // The rank the config states for this module must be the tensors' rank.
            let rank_check = |r: usize, tensor: &str| -> Result<()> {
                if r == module_rank {
                    return Ok(());
                }
                let field = if pattern("rank_pattern", short).is_some() {
                    format!("rank_pattern.{short}")
                } else {
                    "r".to_string()
                };
                Err(Error::InvalidModel(format!(
                    "{config_path}: `{field}` = {module_rank}, but {weights_path}: `{module}.{tensor}` has rank {r}; the config and the weights disagree"
                )))
            };
            let adapter: Box<dyn Adapter> = match kind {
                AdapterKind::Lora => {
                    let a = get(&key(module, "lora_A.weight")).expect("found above")?;
                    let b = get(&key(module, "lora_B.weight"))
                        .ok_or_else(|| shape_error("lora_A.weight is there but lora_B.weight is missing".into()))??;
                    let (Ok((r, a_in)), Ok((b_out, r2))) = (a.dims2(), b.dims2()) else {
                        return Err(shape_error(format!(
                            "lora_A {:?} and lora_B {:?} must be matrices",
                            a.dims(),
                            b.dims()
                        )));
                    };
                    if a_in != in_f || b_out != out_f || r != r2 {
                        return Err(shape_error(format!(
                            "lora_A {:?} / lora_B {:?} do not fit a [{out_f}, {in_f}] layer",
                            a.dims(),
                            b.dims()
                        )));
                    }
                    rank_check(r, "lora_A.weight")?;
                    let scale = if use_rslora { module_alpha / (r as f64).sqrt() } else { module_alpha / r as f64 };
                    Box::new(Lora::from_factors(&a, &b, scale)?)
                }
                AdapterKind::KronLora => {
                    let a = get(&key(module, "lokr_w1")).expect("found above")?;
                    let b1 = get(&key(module, "lokr_w2_a")).ok_or_else(|| {
                        shape_error("lokr_w2_a is missing (a full lokr_w2 is not supported)".into())
                    })??;
                    let b2 =
                        get(&key(module, "lokr_w2_b")).ok_or_else(|| shape_error("lokr_w2_b is missing".into()))??;
                    let (Ok((d_a2, d_a1)), Ok((d_b2, r)), Ok((r2, d_b1))) = (a.dims2(), b1.dims2(), b2.dims2()) else {
                        return Err(shape_error("lokr_w1, lokr_w2_a and lokr_w2_b must be matrices".into()));
                    };
                    if r != r2 || d_a1.checked_mul(d_b1) != Some(in_f) || d_a2.checked_mul(d_b2) != Some(out_f) {
                        return Err(shape_error(format!(
                            "lokr_w1 {:?} ⊗ (lokr_w2_a {:?} · lokr_w2_b {:?}) does not give a [{out_f}, {in_f}] update",
                            a.dims(),
                            b1.dims(),
                            b2.dims()
                        )));
                    }
                    rank_check(r, "lokr_w2_a")?;
                    let scale = if use_rslora { module_alpha / (r as f64).sqrt() } else { module_alpha / r as f64 };
                    Box::new(KronLora::from_factors(&a, &b1, &b2, scale)?)
                }
            };
            built.push((index, adapter));
            loaded_modules.push(short.to_string());
        }
        if built.is_empty() {
            return Err(Error::InvalidModel(format!(
                "{weights_path}: no tensor matches a module of this model (e.g. {}{}); the adapter was saved for another model",
                KEY_PREFIX,
                projections.first().map_or("?".to_string(), |p| format!("{prefix}{}", p.name))
            )));
        }
        // The head, when the file has one and this model has a head.
        let head_keys: Vec<(String, candle_core::Var)> =
            self.head_tensors().into_iter().map(|(k, v)| (k, v.clone())).collect();
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
                    Ok(Some(t))
                }
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        let used = used.into_inner();
        let unused: Vec<&String> = tensors.keys().filter(|k| !used.contains(*k)).collect();
        if let Some(first) = unused.first() {
            let module = first.rsplit_once(".lora_").or_else(|| first.rsplit_once(".lokr_")).map(|(m, _)| m);
            let why = match module {
                Some(m) if projections.iter().any(|p| m.ends_with(&format!(".{}", p.name)) || m.ends_with(&p.name)) => {
                    format!(
                        "module `{}` has `{}` without the other half of its adapter",
                        m.trim_start_matches(KEY_PREFIX),
                        &first[m.len() + 1..]
                    )
                }
                _ => "it matches no module of this model; the adapter was saved for another model".to_string(),
            };
            return Err(Error::InvalidModel(format!(
                "{weights_path}: {} of {} tensors are unused (first: `{first}`): {why}",
                unused.len(),
                tensors.len()
            )));
        }
        if let Some(entry) = targets.unmatched(&loaded_modules) {
            return Err(Error::InvalidModel(format!(
                "{config_path}: `target_modules` lists `{entry}`, but {weights_path} has no adapter tensors for a module it names; the config and the weights disagree"
            )));
        }
        let labels: Vec<String> = config["kronlora"]["labels"]
            .as_array()
            .map(|l| l.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        if let Some(head) = &self.head {
            if labels.len() > head.num_labels() {
                return Err(bad(format!(
                    "{} labels do not fit a head with numLabels = {}",
                    labels.len(),
                    head.num_labels()
                )));
            }
        }
        // Attach.
        let count = built.len();
        let mut projections: Vec<&mut AdaptedLinear> = self.backbone.projections_mut();
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
            config: AdapterConfig {
                kind,
                rank,
                alpha,
                kron_in: kron("kronIn"),
                kron_out: kron("kronOut"),
                use_rslora,
                seed: 0,
            },
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
        let square = |f: usize, r: usize| {
            vec![[f, f, 384 / f, 384 / f, r], [f, f, 384 / f, 1536 / f, r], [f, f, 1536 / f, 384 / f, r]]
        };
        assert_eq!(peft_decompose_factor(&square(4, 8)), Some(4));
        // Kron-LoRA's default d_A1 = 2, d_A2 = 4: PEFT's single factor cannot express it.
        assert_eq!(peft_decompose_factor(&[[2, 4, 192, 96, 8]]), None);
        // PEFT keeps w2 full when r ≥ max(out_k, in_n) / 2.
        assert_eq!(peft_decompose_factor(&[[4, 4, 4, 4, 2]]), None);
        assert_eq!(peft_decompose_factor(&[]), None);
    }
}
