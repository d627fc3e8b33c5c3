//! `loadAdapter` of files other tools write, told apart by what the path is: a LyCORIS / kohya
//! `.safetensors` file (LoKr becomes a Kron-LoRA adapter, LoRA a LoRA adapter) and a llama.cpp
//! GGUF LoRA `.gguf` file (a LoRA adapter; Q and K rows un-permuted). A PEFT directory is
//! `adapter_files.rs`'s. As there, every check comes before the first change.

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::adapter_files::LoadedAdapter;
use super::PretrainedModel;
use crate::adapters::{Adapter, AdapterConfig, AdapterKind, KronLora, Lora};
use crate::error::{Error, Result};
use crate::io::{gguf_tensor_name, lycoris_module_key, read_safetensors_bytes, unpermute, GgufFile, LYCORIS_PREFIX};
use crate::TensorData;

/// The adapters built from a file: `(projection index, adapter)`, and the config recorded.
type Built = (Vec<(usize, Box<dyn Adapter>)>, AdapterConfig);

fn config(kind: AdapterKind, rank: usize, alpha: f64, kron: Option<(usize, usize)>) -> AdapterConfig {
    AdapterConfig {
        kind,
        rank,
        alpha,
        kron_in: kron.map(|k| k.0),
        kron_out: kron.map(|k| k.1),
        use_rslora: false,
        seed: 0,
    }
}

impl PretrainedModel {
    /// Load a LyCORIS (`.safetensors`) or GGUF LoRA (`.gguf`) file's adapter as `name` (default:
    /// the name in the file, else "default").
    pub(super) fn load_foreign_adapter(
        &mut self,
        path: &str,
        bytes: Vec<u8>,
        name: Option<&str>,
        replace: bool,
    ) -> Result<usize> {
        let lower = path.to_ascii_lowercase();
        let (built, saved_name) = if lower.ends_with(".gguf") {
            self.gguf_lora_adapters(path, bytes)?
        } else if lower.ends_with(".safetensors") {
            (self.lycoris_adapters(path, &bytes)?, None)
        } else {
            return Err(Error::InvalidModel(format!(
                "{path}: an adapter is a PEFT directory, a LyCORIS .safetensors file or a GGUF LoRA .gguf file"
            )));
        };
        let name = name.map(str::to_string).or(saved_name).unwrap_or_else(|| "default".into());
        self.check_new_adapter_name(&name, replace)?;
        let (adapters, config) = built;
        let loaded = LoadedAdapter { config, dropout: 0.0, adapters, head: Vec::new(), labels: Vec::new() };
        self.install_adapter(name, loaded)
    }

    /// Projection index by a key derived from its path.
    fn projection_index(&self, key: impl Fn(&str) -> Option<String>) -> BTreeMap<String, usize> {
        let projections = self.backbone.projections();
        projections.iter().enumerate().filter_map(|(i, p)| key(&p.name).map(|k| (k, i))).collect()
    }

    fn lycoris_adapters(&self, path: &str, bytes: &[u8]) -> Result<Built> {
        let tensors = read_safetensors_bytes(bytes, path).map_err(|e| match e {
            Error::InvalidData(m) => Error::InvalidModel(m),
            other => other,
        })?;
        let mut modules: BTreeMap<&str, BTreeMap<&str, &TensorData>> = BTreeMap::new();
        for (key, t) in &tensors {
            if t.data.iter().any(|v| !v.is_finite()) {
                return Err(Error::InvalidModel(format!("{path}: tensor `{key}` holds a non-finite value")));
            }
            let (module, tensor) = key
                .strip_prefix(LYCORIS_PREFIX)
                .and_then(|rest| rest.split_once('.'))
                .map(|(m, t)| (&key[..LYCORIS_PREFIX.len() + m.len()], t))
                .ok_or_else(|| {
                    Error::InvalidModel(format!("{path}: `{key}` is not a LyCORIS key (`lycoris_<module>.<tensor>`)"))
                })?;
            modules.entry(module).or_default().insert(tensor, t);
        }
        let index = self.projection_index(|p| Some(lycoris_module_key(p)));
        let projections = self.backbone.projections();
        let device = self.device();
        let tensor = |t: &TensorData| t.to_tensor(device);
        let mut built = Vec::new();
        let mut recorded = None;
        for (module, parts) in &modules {
            let &i = index.get(*module).ok_or_else(|| {
                Error::InvalidModel(format!("{path}: module `{module}` is not a projection of this model; the adapter was saved for another model"))
            })?;
            let p = projections[i];
            let (out, inp) = (p.out_features(), p.in_features());
            let unfit = |what: String| Error::InvalidModel(format!("{path}: {module}: {what}"));
            let names: Vec<&str> = parts.keys().copied().filter(|k| *k != "alpha").collect();
            let (adapter, kind, rank, kron): (Box<dyn Adapter>, _, _, _) = match names.as_slice() {
                ["lokr_w1", "lokr_w2_a", "lokr_w2_b"] => {
                    let (w1, w2a, w2b) = (parts["lokr_w1"], parts["lokr_w2_a"], parts["lokr_w2_b"]);
                    let ok = w1.shape.len() == 2
                        && w2a.shape.len() == 2
                        && w2b.shape.len() == 2
                        && w2a.shape[1] == w2b.shape[0]
                        && w1.shape[1] * w2b.shape[1] == inp
                        && w1.shape[0] * w2a.shape[0] == out;
                    if !ok {
                        return Err(unfit(format!(
                            "lokr_w1 {:?} ⊗ (lokr_w2_a {:?} · lokr_w2_b {:?}) is not the [{out}, {inp}] update of its layer",
                            w1.shape, w2a.shape, w2b.shape
                        )));
                    }
                    let rank = w2b.shape[0];
                    let scale = alpha_of(parts, rank, &unfit)? / rank as f64;
                    let adapter = KronLora::from_factors(&tensor(w1)?, &tensor(w2a)?, &tensor(w2b)?, scale)?;
                    (Box::new(adapter) as Box<dyn Adapter>, AdapterKind::KronLora, rank, Some((w1.shape[1], w1.shape[0])))
                }
                ["lora_down.weight", "lora_up.weight"] => {
                    let (down, up) = (parts["lora_down.weight"], parts["lora_up.weight"]);
                    if down.shape.len() != 2 || up.shape.len() != 2 || down.shape[1] != inp || up.shape[0] != out || up.shape[1] != down.shape[0] {
                        return Err(unfit(format!(
                            "lora_up {:?} · lora_down {:?} is not the [{out}, {inp}] update of its layer",
                            up.shape, down.shape
                        )));
                    }
                    let rank = down.shape[0];
                    let scale = alpha_of(parts, rank, &unfit)? / rank as f64;
                    (Box::new(Lora::from_factors(&tensor(down)?, &tensor(up)?, scale)?) as Box<dyn Adapter>, AdapterKind::Lora, rank, None)
                }
                other => {
                    return Err(unfit(format!(
                        "holds {other:?}; kronlora reads LoKr (lokr_w1, lokr_w2_a, lokr_w2_b) and LoRA (lora_down, lora_up) modules"
                    )))
                }
            };
            let alpha = adapter.scale() * rank as f64;
            recorded.get_or_insert_with(|| config(kind, rank, alpha, kron));
            built.push((i, adapter));
        }
        let recorded = recorded.ok_or_else(|| Error::InvalidModel(format!("{path}: holds no adapter tensors")))?;
        Ok((built, recorded))
    }

    fn gguf_lora_adapters(&self, path: &str, bytes: Vec<u8>) -> Result<(Built, Option<String>)> {
        let file = GgufFile::from_bytes(path, bytes)?;
        let is = |key: &str, want: &str| file.has(key) && file.string(key).is_ok_and(|v| v == want);
        if !is("general.type", "adapter") || !is("adapter.type", "lora") {
            return Err(Error::InvalidModel(format!(
                "{path}: not a GGUF LoRA adapter (general.type = adapter, adapter.type = lora); is it a model?"
            )));
        }
        let layout = self.backbone.llama_cpp_layout().ok_or_else(|| {
            Error::Unsupported(format!(
                "{path}: a GGUF LoRA file is for Llama-family models; this is a `{}`",
                self.backbone.model_type()
            ))
        })?;
        let arch = file.string("general.architecture")?;
        if arch != layout.architecture {
            return Err(Error::InvalidModel(format!(
                "{path}: the adapter is for a `{arch}` model, this one is `{}` to llama.cpp",
                layout.architecture
            )));
        }
        let alpha = if file.has("adapter.lora.alpha") { file.f64("adapter.lora.alpha")? } else { 0.0 };
        let index = self.projection_index(|p| gguf_tensor_name(&format!("{p}.weight")));
        let mut weights: Vec<&str> = Vec::new();
        for name in file.tensor_names() {
            let weight = name.strip_suffix(".lora_a").or_else(|| name.strip_suffix(".lora_b")).ok_or_else(|| {
                Error::InvalidModel(format!("{path}: tensor `{name}` is neither a `.lora_a` nor a `.lora_b`"))
            })?;
            if !weights.contains(&weight) {
                weights.push(weight);
            }
        }
        let projections = self.backbone.projections();
        let device = self.device();
        let mut built = Vec::new();
        let mut recorded = None;
        for weight in weights {
            let &i = index.get(weight).ok_or_else(|| {
                Error::InvalidModel(format!("{path}: `{weight}` is not a weight of this model with an adapter"))
            })?;
            let p = projections[i];
            let get = |part: &str| -> Result<Tensor> {
                let name = format!("{weight}.{part}");
                if !file.has_tensor(&name) {
                    return Err(Error::InvalidModel(format!("{path}: `{name}` is missing (the other half is there)")));
                }
                file.tensor(&name, device)
            };
            let (a, mut b) = (get("lora_a")?, get("lora_b")?);
            let (rank, inp) = a.dims2()?;
            let (out, rank_b) = b.dims2()?;
            if inp != p.in_features() || out != p.out_features() || rank != rank_b {
                return Err(Error::InvalidModel(format!(
                    "{path}: {weight}: lora_b {:?} · lora_a {:?} is not the [{}, {}] update of its layer",
                    b.dims(),
                    a.dims(),
                    p.out_features(),
                    p.in_features()
                )));
            }
            if let Some((heads, kv_heads)) = layout.permuted_heads {
                if weight.ends_with(".attn_q.weight") {
                    b = unpermute(&b, heads)?;
                } else if weight.ends_with(".attn_k.weight") {
                    b = unpermute(&b, kv_heads)?;
                }
            }
            let scale = if alpha != 0.0 { alpha / rank as f64 } else { 1.0 };
            recorded.get_or_insert_with(|| config(AdapterKind::Lora, rank, scale * rank as f64, None));
            built.push((i, Box::new(Lora::from_factors(&a, &b, scale)?) as Box<dyn Adapter>));
        }
        let recorded = recorded.ok_or_else(|| Error::InvalidModel(format!("{path}: holds no adapter tensors")))?;
        let name = if file.has("general.name") { file.string("general.name").ok() } else { None };
        Ok(((built, recorded), name.filter(|n| super::valid_adapter_name(n))))
    }
}

/// A LyCORIS module's `alpha` (a scalar; the rank when absent, i.e. scale 1).
fn alpha_of(parts: &BTreeMap<&str, &TensorData>, rank: usize, unfit: &dyn Fn(String) -> Error) -> Result<f64> {
    match parts.get("alpha") {
        None => Ok(rank as f64),
        Some(t) if t.data.len() == 1 && t.data[0] != 0.0 => Ok(t.data[0] as f64),
        Some(t) => Err(unfit(format!("alpha must be one non-zero number, got {:?}", t.data))),
    }
}
