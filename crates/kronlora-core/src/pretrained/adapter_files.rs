//! A model's adapters in PEFT's files (the format itself is `io::peft`): which adapter tensors
//! and head tensors to save, and on loading, which of the model's projections each module of
//! the file is, the adapters built from it, the head and the labels.

use candle_core::{Tensor, Var};

use super::{AdapterInfo, PretrainedModel};
use crate::adapters::{alpha_for_scale, update_scale, Adapter, AdapterKind, KronLora, Lora};
use crate::adapters::{AdapterConfig, AdapterDropout};
use crate::error::{Error, Result};
use crate::io::peft::{
    self, tensor_key, AdapterTensors, KronloraBlock, ModuleTensors, ModuleWeights, PeftAdapterConfig, TargetList,
    ADAPTER_LAYOUT, CONFIG_FILE, KEY_PREFIX, WEIGHTS_FILE,
};
use crate::io::{join, write_owned_dir, EntryKind, Storage};
use crate::TensorData;

/// An adapter's factors as PEFT stores them.
fn module_weights(adapter: &dyn Adapter) -> Result<ModuleWeights> {
    let param = |name: &str| -> Result<TensorData> {
        let var = adapter.parameter(name).ok_or_else(|| {
            Error::InvalidState(format!("the {} adapter has no parameter `{name}`", adapter.kind().name()))
        })?;
        TensorData::from_tensor(var.as_tensor())
    };
    Ok(match adapter.kind() {
        AdapterKind::Lora => ModuleWeights::Lora { lora_a: param("lora_A")?, lora_b: param("lora_B")? },
        AdapterKind::KronLora => {
            ModuleWeights::LoKr { lokr_w1: param("A")?, lokr_w2_a: param("B1")?, lokr_w2_b: param("B2")? }
        }
    })
}

impl PretrainedModel {
    /// Head tensors under their PEFT keys (the pooler lives inside the backbone module).
    fn head_tensors(&self) -> Vec<(String, &Var)> {
        let prefix = self.backbone.task_module_prefix(self.task);
        self.head
            .iter()
            .flat_map(|h| h.parameters())
            .map(|(name, var)| {
                let inside = if name.starts_with("pooler.") { prefix } else { "" };
                (tensor_key(&format!("{inside}{name}")), var)
            })
            .collect()
    }

    pub(super) fn resolve_adapter_name(&self, name: Option<&str>) -> Result<AdapterInfo> {
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

    /// The config of adapter `info` on this model, before its modules are recorded.
    fn peft_config(&self, info: &AdapterInfo) -> PeftAdapterConfig {
        PeftAdapterConfig {
            kind: info.config.kind,
            rank: info.config.rank,
            alpha: info.config.alpha,
            use_rslora: info.config.use_rslora,
            dropout: info.dropout,
            target_modules: TargetList::Names(Vec::new()),
            rank_pattern: Default::default(),
            alpha_pattern: Default::default(),
            task_type: Some(self.task),
            base_model_name_or_path: Some(self.source_name.clone()),
            modules_to_save: self.head.iter().flat_map(|h| h.module_names()).map(str::to_string).collect(),
            kronlora: KronloraBlock {
                name: Some(info.name.clone()),
                task: Some(self.task.name().to_string()),
                labels: self.labels.names.clone(),
                num_labels: self.head.as_ref().map(|h| h.num_labels()),
                kron_in: info.config.kron_in,
                kron_out: info.config.kron_out,
            },
        }
    }

    /// The files of adapter `name` (default: the only one) and the head, in PEFT's layout.
    pub fn adapter_files(&self, name: Option<&str>) -> Result<Vec<(String, Vec<u8>)>> {
        self.peft_files(name, false)
    }

    /// `adapter_files`, with a Kron-LoRA adapter written as the plain LoRA it exactly is
    /// (`as_lora`): rank `d_A1·r`, `lora_A = I ⊗ B2`, `lora_B = s·(A ⊗ B1)`, alpha = rank so
    /// PEFT's scale is 1 (and rsLoRA off, which would make it √rank). Modules whose rank or
    /// alpha differ from the first one's go in `rank_pattern` / `alpha_pattern`.
    pub(super) fn peft_files(&self, name: Option<&str>, as_lora: bool) -> Result<Vec<(String, Vec<u8>)>> {
        let info = self.resolve_adapter_name(name)?;
        let mut config = self.peft_config(&info);
        let convert = as_lora && info.config.kind == AdapterKind::KronLora;
        if convert {
            config.kind = AdapterKind::Lora;
            config.use_rslora = false;
            config.kronlora.kron_in = None;
            config.kronlora.kron_out = None;
        }
        let prefix = self.backbone.task_module_prefix(self.task);
        let mut entries = Vec::new();
        for (path, adapter_name, adapter) in self.adapters() {
            if adapter_name != info.name {
                continue;
            }
            let (weights, rank, alpha) = if convert {
                let lora = adapter.to_lora()?;
                let weights = ModuleWeights::Lora {
                    lora_a: TensorData::from_tensor(&lora.lora_a)?,
                    lora_b: TensorData::from_tensor(&lora.lora_b)?,
                };
                (weights, lora.rank, lora.alpha)
            } else {
                let alpha = alpha_for_scale(adapter.scale(), adapter.rank(), info.config.use_rslora);
                (module_weights(adapter)?, adapter.rank(), alpha)
            };
            entries.push((ModuleTensors { module: format!("{prefix}{path}"), weights }, rank, alpha));
        }
        if convert {
            // `r` is the rank most modules have (PEFT's convention), so the patterns stay short.
            let count = |r: usize| entries.iter().filter(|e| e.1 == r).count();
            if let Some(common) = entries.iter().map(|e| e.1).max_by_key(|&r| (count(r), std::cmp::Reverse(r))) {
                (config.rank, config.alpha) = (common, common as f64);
            }
        }
        let mut modules = Vec::with_capacity(entries.len());
        for (module, rank, alpha) in entries {
            config.set_module(&module.module, rank, alpha);
            modules.push(module);
        }
        config.target_modules = TargetList::Names(modules.iter().map(|m| m.module.clone()).collect());
        let head = self
            .head_tensors()
            .into_iter()
            .map(|(key, var)| Ok((key, TensorData::from_tensor(var.as_tensor())?)))
            .collect::<Result<_>>()?;
        peft::adapter_files(&config, modules, head)
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
        self.load_adapter_with(storage, dir, name, false)
    }

    /// `load_adapter`; with `replace`, an adapter already named so is swapped for the file's
    /// (keeping its active weight) once every check passed, while the base stays loaded.
    pub fn load_adapter_with(
        &mut self,
        storage: &dyn Storage,
        dir: &str,
        name: Option<&str>,
        replace: bool,
    ) -> Result<usize> {
        if storage.kind(dir)? == EntryKind::File {
            return self.load_foreign_adapter(dir, storage.read(dir)?, name, replace);
        }
        let config_path = join(dir, CONFIG_FILE);
        let weights_path = join(dir, WEIGHTS_FILE);
        for path in [&config_path, &weights_path] {
            if !storage.exists(path) {
                return Err(Error::InvalidModel(format!(
                    "{path} does not exist; an adapter directory holds {CONFIG_FILE} and {WEIGHTS_FILE}"
                )));
            }
        }
        let (config, weights) = (storage.read(&config_path)?, storage.read(&weights_path)?);
        self.load_adapter_bytes(&config, &weights, dir, name, replace)
    }

    /// `load_adapter_with` from the two files' bytes; `dir` names them in errors.
    pub fn load_adapter_bytes(
        &mut self,
        config: &[u8],
        weights: &[u8],
        dir: &str,
        name: Option<&str>,
        replace: bool,
    ) -> Result<usize> {
        // Loading checks what it reads first; a candle failure left over is still the file's
        // doing, not a kronlora bug.
        self.load_adapter_checked(config, weights, dir, name, replace).map_err(|e| match e {
            Error::Internal(e) => Error::InvalidModel(format!(
                "{}: cannot be read: {}",
                join(dir, WEIGHTS_FILE),
                e.to_string().lines().next().unwrap_or("")
            )),
            other => other,
        })
    }

    /// Every check comes before the first change: a file that fails one leaves the model as it was.
    fn load_adapter_checked(
        &mut self,
        config: &[u8],
        weights: &[u8],
        dir: &str,
        name: Option<&str>,
        replace: bool,
    ) -> Result<usize> {
        let paths = AdapterPaths { config: join(dir, CONFIG_FILE), weights: join(dir, WEIGHTS_FILE) };
        let config = PeftAdapterConfig::parse(config, &paths.config)?;
        let name = self.loaded_adapter_name(name, &config, &paths, replace)?;
        let mut tensors = peft::read_adapter_weights(weights, &paths.weights, &config)?;
        let modules = self.match_modules(&config, &mut tensors, &paths)?;
        let module_names: Vec<String> = modules.iter().map(|(_, m)| m.module.clone()).collect();
        let adapters = self.build_adapters(&config, modules, &paths)?;
        let head = self.take_head_tensors(&mut tensors, &paths)?;
        self.check_all_matched(&config, &tensors, &module_names, &paths)?;
        let labels = self.adapter_labels(&config, &paths)?;
        let adapter_config = AdapterConfig {
            kind: config.kind,
            rank: config.rank,
            alpha: config.alpha,
            kron_in: config.kronlora.kron_in,
            kron_out: config.kronlora.kron_out,
            use_rslora: config.use_rslora,
            seed: 0,
        };
        self.install_adapter(
            name,
            LoadedAdapter { config: adapter_config, dropout: config.dropout, adapters, head, labels },
        )
    }

    /// The name the loaded adapter gets (`name`, else the one it was saved under, else
    /// "default"), which must be free; and the file must be for this model's task.
    fn loaded_adapter_name(
        &self,
        name: Option<&str>,
        config: &PeftAdapterConfig,
        paths: &AdapterPaths,
        replace: bool,
    ) -> Result<String> {
        let name =
            name.map(str::to_string).or_else(|| config.kronlora.name.clone()).unwrap_or_else(|| "default".into());
        self.check_new_adapter_name(&name, replace)?;
        if let Some(task) = &config.kronlora.task {
            if task != self.task.name() {
                return Err(Error::InvalidModel(format!(
                    "{}: the adapter was trained for task \"{task}\", this model is loaded for \"{}\"",
                    paths.config,
                    self.task.name()
                )));
            }
        }
        Ok(name)
    }

    /// The file's module for each projection that has one (`(projection index, tensors)`):
    /// under this model's task prefix, or without one (an adapter of the bare backbone). Each
    /// must be one `target_modules` lists, with all its tensors.
    fn match_modules(
        &self,
        config: &PeftAdapterConfig,
        tensors: &mut AdapterTensors,
        paths: &AdapterPaths,
    ) -> Result<Vec<(usize, ModuleTensors)>> {
        let prefix = self.backbone.task_module_prefix(self.task);
        let projections = self.backbone.projections();
        let mut matched = Vec::new();
        for (index, p) in projections.iter().enumerate() {
            let candidates = [format!("{prefix}{}", p.name), p.name.clone()];
            let Some(module) = candidates.into_iter().find(|m| tensors.has_module(m)) else { continue };
            if !config.target_modules.matches(&module) {
                return Err(Error::InvalidModel(format!(
                    "{}: module `{module}` has adapter tensors, but {}'s `target_modules` ({}) does not list it; the config and the weights disagree",
                    paths.weights,
                    paths.config,
                    config.target_modules.describe()
                )));
            }
            let found = tensors.take_module(&module).expect("has_module above");
            matched.push((index, found.map_err(|missing| paths.unfit(&module, missing))?));
        }
        if matched.is_empty() {
            return Err(Error::InvalidModel(format!(
                "{}: no tensor matches a module of this model (e.g. {KEY_PREFIX}{}); the adapter was saved for another model",
                paths.weights,
                projections.first().map_or("?".to_string(), |p| format!("{prefix}{}", p.name))
            )));
        }
        Ok(matched)
    }

    /// Each matched module's adapter, its tensors on the model's device: their shapes must make
    /// an update of its projection, with the rank the config states for the module.
    fn build_adapters(
        &self,
        config: &PeftAdapterConfig,
        modules: Vec<(usize, ModuleTensors)>,
        paths: &AdapterPaths,
    ) -> Result<Vec<(usize, Box<dyn Adapter>)>> {
        let projections = self.backbone.projections();
        let tensor = |t: &TensorData| t.to_tensor(self.device());
        let mut built = Vec::with_capacity(modules.len());
        for (index, module) in modules {
            let (p, short) = (projections[index], module.module.as_str());
            let rank =
                module.rank_for_layer(p.out_features(), p.in_features()).map_err(|what| paths.unfit(short, &what))?;
            let stated = config.module_rank(short);
            if rank != stated {
                let field = match config.rank_pattern_for(short) {
                    Some(_) => format!("rank_pattern.{short}"),
                    None => "r".to_string(),
                };
                return Err(Error::InvalidModel(format!(
                    "{}: `{field}` = {stated}, but {}: `{}` has rank {rank}; the config and the weights disagree",
                    paths.config,
                    paths.weights,
                    tensor_key(&format!("{short}.{}", module.rank_param().name()))
                )));
            }
            let scale = update_scale(config.module_alpha(short), rank, config.use_rslora);
            let adapter: Box<dyn Adapter> = match &module.weights {
                ModuleWeights::Lora { lora_a, lora_b } => {
                    Box::new(Lora::from_factors(&tensor(lora_a)?, &tensor(lora_b)?, scale)?)
                }
                ModuleWeights::LoKr { lokr_w1, lokr_w2_a, lokr_w2_b } => Box::new(KronLora::from_factors(
                    &tensor(lokr_w1)?,
                    &tensor(lokr_w2_a)?,
                    &tensor(lokr_w2_b)?,
                    scale,
                )?),
            };
            built.push((index, adapter));
        }
        Ok(built)
    }

    /// The head's tensors the file holds (`(variable, value)`), when this model has a head; each
    /// must have the shape of the head's.
    fn take_head_tensors(&self, tensors: &mut AdapterTensors, paths: &AdapterPaths) -> Result<Vec<(Var, Tensor)>> {
        let mut values = Vec::new();
        for (key, var) in self.head_tensors() {
            let Some(t) = tensors.take(&key) else { continue };
            if t.shape != var.dims() {
                return Err(Error::InvalidModel(format!(
                    "{}: `{key}` has shape {:?}, this model's head {:?}; load the model with the numLabels the adapter was trained with",
                    paths.weights,
                    t.shape,
                    var.dims()
                )));
            }
            values.push((var.clone(), t.to_tensor(self.device())?));
        }
        Ok(values)
    }

    /// What is left over once the modules and the head were taken: no tensor of the file may
    /// be unused, and every name `target_modules` lists must be among the `loaded` modules.
    fn check_all_matched(
        &self,
        config: &PeftAdapterConfig,
        tensors: &AdapterTensors,
        loaded: &[String],
        paths: &AdapterPaths,
    ) -> Result<()> {
        let unused = tensors.untaken();
        if let Some(first) = unused.first() {
            let module = first.rsplit_once(".lora_").or_else(|| first.rsplit_once(".lokr_")).map(|(m, _)| m);
            let why = match module {
                Some(m) if self.backbone.projections().iter().any(|p| m.ends_with(&p.name)) => format!(
                    "module `{}` has `{}` without the other half of its adapter",
                    m.trim_start_matches(KEY_PREFIX),
                    &first[m.len() + 1..]
                ),
                _ => "it matches no module of this model; the adapter was saved for another model".to_string(),
            };
            return Err(Error::InvalidModel(format!(
                "{}: {} of {} tensors are unused (first: `{first}`): {why}",
                paths.weights,
                unused.len(),
                tensors.count()
            )));
        }
        if let Some(entry) = config.target_modules.unmatched(loaded) {
            return Err(Error::InvalidModel(format!(
                "{}: `target_modules` lists `{entry}`, but {} has no adapter tensors for a module it names; the config and the weights disagree",
                paths.config, paths.weights
            )));
        }
        Ok(())
    }

    /// The class names the file holds, which must fit this model's head.
    fn adapter_labels(&self, config: &PeftAdapterConfig, paths: &AdapterPaths) -> Result<Vec<String>> {
        let labels = &config.kronlora.labels;
        if let Some(head) = &self.head {
            if labels.len() > head.num_labels() {
                return Err(Error::InvalidModel(format!(
                    "{}: {} labels do not fit a head with numLabels = {}",
                    paths.config,
                    labels.len(),
                    head.num_labels()
                )));
            }
        }
        Ok(labels.clone())
    }

    /// `name` may be given to a loaded adapter: free, or (`replace`) in use and not merged.
    pub(super) fn check_new_adapter_name(&self, name: &str, replace: bool) -> Result<()> {
        let exists = self.adapters.iter().any(|a| a.name == name);
        if exists && !replace {
            return Err(Error::InvalidOption(format!(
                "the model already has an adapter named `{name}`; pass another name, or replace: true to swap its weights"
            )));
        }
        if replace && self.is_merged() {
            return Err(Error::InvalidState(
                "the active adapters are merged into the base weights; call unmergeAdapters() before replacing one"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Attach a loaded adapter whose every check passed, as `name`: an adapter already so named
    /// (`check_new_adapter_name` allowed replacing it) goes only now, and the new one keeps its
    /// active weight. Returns how many projections got the adapter.
    pub(super) fn install_adapter(&mut self, name: String, mut loaded: LoadedAdapter) -> Result<usize> {
        // The head's values first: the one step that can fail, so that a failure leaves the
        // adapter being replaced in place.
        for (var, value) in std::mem::take(&mut loaded.head) {
            var.set(&value)?;
        }
        let weight = self.adapters.iter().find(|a| a.name == name).map(|a| a.weight);
        if weight.is_some() {
            for p in self.backbone.projections_mut() {
                p.remove_adapter(&name);
            }
            self.adapters.retain(|a| a.name != name);
        }
        let count = self.attach_adapter(name.clone(), loaded)?;
        if let Some(weight) = weight {
            let mut active: Vec<(String, f64)> =
                self.active_adapters().into_iter().map(|a| (a.name, a.weight)).filter(|(n, _)| *n != name).collect();
            if let Some(w) = weight {
                active.push((name, w));
            }
            self.set_active_adapters(&active)?;
        }
        Ok(count)
    }

    /// Attach what the checks let through: each adapter to its projection, the head's values,
    /// the labels (when there are any), and the adapter's record. Returns how many projections
    /// got the adapter.
    fn attach_adapter(&mut self, name: String, loaded: LoadedAdapter) -> Result<usize> {
        let LoadedAdapter { config, dropout, adapters, head, labels } = loaded;
        for (var, value) in head {
            var.set(&value)?;
        }
        let count = adapters.len();
        let seed = self.backbone.dropout_seed().clone();
        let mut projections = self.backbone.projections_mut();
        for (index, adapter) in adapters {
            let p = &mut projections[index];
            let dropout = (dropout > 0.0).then(|| AdapterDropout::new(dropout, &p.name, seed.clone()));
            p.add_adapter(name.clone(), adapter, dropout);
        }
        if !labels.is_empty() {
            self.labels = crate::data::LabelMap { names: labels };
        }
        self.adapters.push(AdapterInfo { name, modules: count, config, dropout, weight: Some(1.0) });
        Ok(count)
    }
}

/// An adapter read from files, every check passed, not yet attached.
pub(super) struct LoadedAdapter {
    pub config: AdapterConfig,
    pub dropout: f64,
    /// `(projection index, adapter)`.
    pub adapters: Vec<(usize, Box<dyn Adapter>)>,
    /// The head's variables and their values from the file.
    pub head: Vec<(Var, Tensor)>,
    pub labels: Vec<String>,
}

/// Where an adapter's two files are, for messages.
struct AdapterPaths {
    config: String,
    weights: String,
}

impl AdapterPaths {
    /// `module`'s tensors do not make an adapter of this model's layer (`what`: why not).
    fn unfit(&self, module: &str, what: &str) -> Error {
        Error::InvalidModel(format!("{}: {module}: {what}; the adapter was saved for another model", self.weights))
    }
}
