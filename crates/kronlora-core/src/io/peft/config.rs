//! `adapter_config.json`: PEFT's config fields and kronlora's own `kronlora` block, as typed
//! values; written from them and parsed (and checked) into them.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::adapters::{AdapterKind, KronShape};
use crate::error::{Error, Result};
use crate::limits::{MAX_ALPHA, MAX_RANK};
use crate::models::Task;

/// An adapter's `adapter_config.json`.
#[derive(Debug, Clone)]
pub struct PeftAdapterConfig {
    /// `peft_type`: `LORA`, or `LOKR` for Kron-LoRA.
    pub kind: AdapterKind,
    /// `r`.
    pub rank: usize,
    /// `lora_alpha` (LoRA) or `alpha` (LoKr).
    pub alpha: f64,
    /// `use_rslora` (LoRA), or the `kronlora` block's `useRslora`.
    pub use_rslora: bool,
    /// The `kronlora` block's `dropout`, else `lora_dropout`.
    pub dropout: f64,
    /// `target_modules`.
    pub target_modules: TargetList,
    /// `rank_pattern`: module name (or a suffix of one) → rank where it is not `r`.
    pub rank_pattern: BTreeMap<String, usize>,
    /// `alpha_pattern`: module name (or a suffix of one) → alpha where it is not `alpha`.
    pub alpha_pattern: BTreeMap<String, f64>,
    /// `task_type`, when it is one of kronlora's tasks.
    pub task_type: Option<Task>,
    /// `base_model_name_or_path`.
    pub base_model_name_or_path: Option<String>,
    /// `modules_to_save`: the trained head's modules.
    pub modules_to_save: Vec<String>,
    /// kronlora's own fields.
    pub kronlora: KronloraBlock,
}

/// The `kronlora` block's fields that are not also PEFT's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KronloraBlock {
    /// The adapter's name.
    pub name: Option<String>,
    /// The task the model was loaded for (`Task::name`), as the file spells it.
    pub task: Option<String>,
    /// Class names (`labels`).
    pub labels: Vec<String>,
    /// The head's size (`numLabels`).
    pub num_labels: Option<usize>,
    /// Kron-LoRA's requested `d_A1` (`kronIn`).
    pub kron_in: Option<usize>,
    /// Kron-LoRA's requested `d_A2` (`kronOut`).
    pub kron_out: Option<usize>,
}

/// PEFT's `peft_type` of an adapter kind.
fn peft_type(kind: AdapterKind) -> &'static str {
    match kind {
        AdapterKind::Lora => "LORA",
        AdapterKind::KronLora => "LOKR",
    }
}

fn kind_of_peft_type(peft_type: &str) -> Option<AdapterKind> {
    match peft_type {
        "LORA" => Some(AdapterKind::Lora),
        "LOKR" => Some(AdapterKind::KronLora),
        _ => None,
    }
}

/// The `kronlora` block's `type` of an adapter kind (the `type` option of an adapter).
fn type_name(kind: AdapterKind) -> &'static str {
    match kind {
        AdapterKind::KronLora => "kron-lora",
        AdapterKind::Lora => "lora",
    }
}

/// PEFT's `task_type` of a task.
fn peft_task_type(task: Task) -> &'static str {
    match task {
        Task::SequenceClassification => "SEQ_CLS",
        Task::CausalLm => "CAUSAL_LM",
        Task::Embedding => "FEATURE_EXTRACTION",
    }
}

fn task_of_peft_task_type(task_type: &str) -> Option<Task> {
    [Task::SequenceClassification, Task::CausalLm, Task::Embedding]
        .into_iter()
        .find(|&t| peft_task_type(t) == task_type)
}

/// The field holding the alpha of an adapter kind.
fn alpha_field(kind: AdapterKind) -> &'static str {
    match kind {
        AdapterKind::Lora => "lora_alpha",
        AdapterKind::KronLora => "alpha",
    }
}

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
        Some(r) if r >= 1 && r as usize <= MAX_RANK => Ok(r as usize),
        _ => Err(Error::InvalidModel(format!(
            "{path}: `{field}` = {value} is out of range; expected an integer from 1 to {MAX_RANK}"
        ))),
    }
}

/// A `rank_pattern` / `alpha_pattern` object, each entry checked by `check`.
fn pattern<T>(
    config: &Value,
    field: &str,
    path: &str,
    check: impl Fn(&str, &str, &Value) -> Result<T>,
) -> Result<BTreeMap<String, T>> {
    match &config[field] {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(entries) => entries
            .iter()
            .map(|(module, v)| Ok((module.clone(), check(path, &format!("{field}.{module}"), v)?)))
            .collect(),
        other => {
            Err(Error::InvalidModel(format!("{path}: `{field}` must be an object of module → number, got {other}")))
        }
    }
}

/// The entry of `pattern` for `module`: the first whose key is the module's name or a suffix of
/// it after a dot.
fn pattern_entry<T: Copy>(pattern: &BTreeMap<String, T>, module: &str) -> Option<T> {
    pattern.iter().find(|(k, _)| module == k.as_str() || module.ends_with(&format!(".{k}"))).map(|(_, &v)| v)
}

impl PeftAdapterConfig {
    /// Parse and check an `adapter_config.json` (`path` for errors).
    pub fn parse(bytes: &[u8], path: &str) -> Result<Self> {
        let config: Value =
            serde_json::from_slice(bytes).map_err(|e| Error::InvalidModel(format!("{path}: invalid JSON: {e}")))?;
        let bad = |msg: String| Error::InvalidModel(format!("{path}: {msg}"));
        let kind = match config["peft_type"].as_str() {
            Some(t) => kind_of_peft_type(t).ok_or_else(|| {
                bad(format!("peft_type `{t}` is not supported; kronlora loads LORA and LOKR adapters"))
            })?,
            None => return Err(bad("`peft_type` is missing".into())),
        };
        let alpha = check_alpha(path, alpha_field(kind), &config[alpha_field(kind)])?;
        let rank = check_rank(path, "r", &config["r"])?;
        let rank_pattern = pattern(&config, "rank_pattern", path, check_rank)?;
        let alpha_pattern = pattern(&config, "alpha_pattern", path, check_alpha)?;
        let k = &config["kronlora"];
        let use_rslora = config["use_rslora"].as_bool().unwrap_or(false) || k["useRslora"].as_bool().unwrap_or(false);
        let (dropout_field, dropout) = match k["dropout"].as_f64() {
            Some(d) => ("kronlora.dropout", d),
            None => ("lora_dropout", config["lora_dropout"].as_f64().unwrap_or(0.0)),
        };
        if !(0.0..1.0).contains(&dropout) {
            return Err(bad(format!(
                "`{dropout_field}` = {dropout} is out of range; expected a number from 0 to below 1"
            )));
        }
        let string = |v: &Value| v.as_str().map(str::to_string);
        let size = |v: &Value| v.as_u64().map(|x| x as usize);
        Ok(PeftAdapterConfig {
            kind,
            rank,
            alpha,
            use_rslora,
            dropout,
            target_modules: TargetList::from_config(&config["target_modules"], path)?,
            rank_pattern,
            alpha_pattern,
            task_type: config["task_type"].as_str().and_then(task_of_peft_task_type),
            base_model_name_or_path: string(&config["base_model_name_or_path"]),
            modules_to_save: config["modules_to_save"]
                .as_array()
                .map(|l| l.iter().filter_map(string).collect())
                .unwrap_or_default(),
            kronlora: KronloraBlock {
                name: string(&k["name"]),
                task: string(&k["task"]),
                labels: k["labels"].as_array().map(|l| l.iter().filter_map(string).collect()).unwrap_or_default(),
                num_labels: size(&k["numLabels"]),
                kron_in: size(&k["kronIn"]),
                kron_out: size(&k["kronOut"]),
            },
        })
    }

    /// `module`'s `rank_pattern` entry, if it has one.
    pub fn rank_pattern_for(&self, module: &str) -> Option<usize> {
        pattern_entry(&self.rank_pattern, module)
    }

    /// The rank `module` has: its `rank_pattern` entry, else `r`.
    pub fn module_rank(&self, module: &str) -> usize {
        self.rank_pattern_for(module).unwrap_or(self.rank)
    }

    /// The alpha `module` has: its `alpha_pattern` entry, else `alpha`.
    pub fn module_alpha(&self, module: &str) -> f64 {
        pattern_entry(&self.alpha_pattern, module).unwrap_or(self.alpha)
    }

    /// Record that `module` has `rank` and `alpha`: pattern entries where they are not `r` and `alpha`.
    pub fn set_module(&mut self, module: &str, rank: usize, alpha: f64) {
        if rank != self.rank {
            self.rank_pattern.insert(module.to_string(), rank);
        }
        if (alpha - self.alpha).abs() > 1e-9 * alpha.abs().max(1.0) {
            self.alpha_pattern.insert(module.to_string(), alpha);
        }
    }

    /// The file's bytes. `kron_shapes`: a Kron-LoRA adapter's factor shapes per module, to find a
    /// PEFT `decompose_factor` that rebuilds exactly these shapes, when one exists.
    pub fn to_json(&self, kron_shapes: &[KronShape]) -> Result<Vec<u8>> {
        let kronlora = json!({
            "format": 1,
            "type": type_name(self.kind),
            "name": self.kronlora.name,
            "rank": self.rank,
            "alpha": self.alpha,
            "kronIn": self.kronlora.kron_in,
            "kronOut": self.kronlora.kron_out,
            "useRslora": self.use_rslora,
            "dropout": self.dropout,
            "task": self.kronlora.task,
            "labels": self.kronlora.labels,
            "numLabels": self.kronlora.num_labels,
        });
        let mut config = json!({
            "task_type": self.task_type.map(peft_task_type),
            "base_model_name_or_path": self.base_model_name_or_path,
            "target_modules": self.target_modules.to_json(),
            "modules_to_save": if self.modules_to_save.is_empty() { Value::Null } else { json!(self.modules_to_save) },
            "r": self.rank,
            "rank_pattern": self.rank_pattern,
            "alpha_pattern": self.alpha_pattern,
            "inference_mode": true,
            "kronlora": kronlora,
        });
        let fields = config.as_object_mut().expect("an object");
        fields.insert("peft_type".into(), json!(peft_type(self.kind)));
        fields.insert(alpha_field(self.kind).into(), json!(self.alpha));
        match self.kind {
            AdapterKind::Lora => {
                fields.insert("lora_dropout".into(), json!(self.dropout));
                fields.insert("use_rslora".into(), json!(self.use_rslora));
                fields.insert("bias".into(), json!("none"));
                fields.insert("fan_in_fan_out".into(), json!(false));
                fields.insert("init_lora_weights".into(), json!(true));
            }
            AdapterKind::KronLora => {
                fields.insert("decompose_both".into(), json!(false));
                // Kron-LoRA picks d_A1 and d_A2 separately; PEFT rebuilds LoKr's shapes from one
                // factor. When one factor gives every module's shapes, PEFT loads the file as it
                // is; otherwise -1, and kronlora (which reads shapes from the tensors) still does.
                let factor = peft_decompose_factor(kron_shapes);
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
        serde_json::to_vec_pretty(&config)
            .map_err(|e| Error::InvalidState(format!("cannot serialise the adapter config: {e}")))
    }
}

/// PEFT's `target_modules`: module-name suffixes, a regular expression that must match a whole
/// module name, or absent / "all-linear" (anything).
#[derive(Debug, Clone)]
pub enum TargetList {
    Any,
    Pattern(regex::Regex, String),
    Names(Vec<String>),
}

impl TargetList {
    /// The `target_modules` field of the config at `path`.
    pub fn from_config(value: &Value, path: &str) -> Result<Self> {
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

    fn to_json(&self) -> Value {
        match self {
            TargetList::Any => Value::Null,
            TargetList::Pattern(_, s) => json!(s),
            TargetList::Names(names) => json!(names),
        }
    }

    pub fn matches(&self, module: &str) -> bool {
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
    pub fn unmatched(&self, modules: &[String]) -> Option<&str> {
        match self {
            TargetList::Names(names) => {
                names.iter().find(|n| !modules.iter().any(|m| Self::names(n, m))).map(String::as_str)
            }
            _ => None,
        }
    }

    /// The list for messages.
    pub fn describe(&self) -> String {
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

/// The `decompose_factor` with which PEFT's LoKr builds exactly these Kron-LoRA shapes: `w1
/// [out_l, in_m]` from `factorization(out, f)`, `factorization(in, f)`, and a low-rank `w2` only
/// when `r < max(out_k, in_n) / 2`. None when no single factor does.
pub fn peft_decompose_factor(shapes: &[KronShape]) -> Option<usize> {
    let first = shapes.first()?;
    [first.d_a1, first.d_a2].into_iter().find(|&f| {
        shapes.iter().all(|&KronShape { d_a1, d_a2, d_b1, d_b2, rank }| {
            let fits = |dim: usize, want: usize| crate::factorization(dim, f as i64).is_ok_and(|(m, _)| m == want);
            fits(d_a2 * d_b2, d_a2) && fits(d_a1 * d_b1, d_a1) && 2 * rank < d_b1.max(d_b2)
        })
    })
}

/// `{ task, numLabels, type, name }` from an `adapter_config.json` (`path` for errors): the
/// task and head size to load the model with before loading the adapter. kronlora's own fields
/// first; PEFT's `task_type` otherwise; null where the file does not say.
pub fn adapter_config_summary_json(bytes: &[u8], path: &str) -> Result<String> {
    let config: Value =
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidModel(format!("{path}: invalid JSON: {e}")))?;
    let k = &config["kronlora"];
    let task = k["task"].as_str().map(str::to_string).or_else(|| {
        let task = task_of_peft_task_type(config["task_type"].as_str()?)?;
        Some(task.name().to_string())
    });
    let kind = k["type"]
        .as_str()
        .map(str::to_string)
        .or_else(|| Some(type_name(kind_of_peft_type(config["peft_type"].as_str()?)?).to_string()));
    // What the summary hands on must be what the model options accept; the options parser
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peft_factor_exists_only_when_one_factor_gives_every_shape() {
        let shape = |d_a1, d_a2, d_b1, d_b2, rank| KronShape { d_a1, d_a2, d_b1, d_b2, rank };
        // MiniLM's 384→384, 384→1536, 1536→384 layers.
        let square = |f: usize, r: usize| {
            vec![shape(f, f, 384 / f, 384 / f, r), shape(f, f, 384 / f, 1536 / f, r), shape(f, f, 1536 / f, 384 / f, r)]
        };
        assert_eq!(peft_decompose_factor(&square(4, 8)), Some(4));
        // Kron-LoRA's default d_A1 = 2, d_A2 = 4: PEFT's single factor cannot express it.
        assert_eq!(peft_decompose_factor(&[shape(2, 4, 192, 96, 8)]), None);
        // PEFT keeps w2 full when r ≥ max(out_k, in_n) / 2.
        assert_eq!(peft_decompose_factor(&[shape(4, 4, 4, 4, 2)]), None);
        assert_eq!(peft_decompose_factor(&[]), None);
    }

    #[test]
    fn a_config_round_trips_through_its_json() {
        let mut config = PeftAdapterConfig {
            kind: AdapterKind::Lora,
            rank: 4,
            alpha: 8.0,
            use_rslora: true,
            dropout: 0.25,
            target_modules: TargetList::Names(vec!["enc.q".into(), "enc.v".into()]),
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            task_type: Some(Task::SequenceClassification),
            base_model_name_or_path: Some("tiny".into()),
            modules_to_save: vec!["classifier".into()],
            kronlora: KronloraBlock {
                name: Some("a".into()),
                task: Some("sequence-classification".into()),
                labels: vec!["neg".into(), "pos".into()],
                num_labels: Some(2),
                kron_in: None,
                kron_out: None,
            },
        };
        config.set_module("enc.q", 4, 8.0);
        config.set_module("enc.v", 2, 3.0);
        assert_eq!((config.rank_pattern.len(), config.alpha_pattern.len()), (1, 1));
        let bytes = config.to_json(&[]).unwrap();
        let back = PeftAdapterConfig::parse(&bytes, "p").unwrap();
        assert_eq!(
            (back.kind, back.rank, back.alpha, back.use_rslora, back.dropout),
            (AdapterKind::Lora, 4, 8.0, true, 0.25)
        );
        assert_eq!((back.module_rank("enc.v"), back.module_alpha("enc.v")), (2, 3.0));
        assert_eq!(
            (back.module_rank("enc.q"), back.module_alpha("enc.q"), back.rank_pattern_for("enc.q")),
            (4, 8.0, None)
        );
        assert_eq!(back.kronlora, config.kronlora);
        assert_eq!(
            (back.task_type, back.modules_to_save),
            (Some(Task::SequenceClassification), vec!["classifier".to_string()])
        );
        assert!(back.target_modules.matches("x.enc.q") && !back.target_modules.matches("enc.k"));
        let summary: Value = serde_json::from_str(&adapter_config_summary_json(&bytes, "p").unwrap()).unwrap();
        assert_eq!(summary, json!({ "task": "sequence-classification", "numLabels": 2, "type": "lora", "name": "a" }));
    }
}
