//! Pretrained transformer models whose linear projections can carry adapters.

pub mod adapted_linear;
mod adapter_selection;
mod backbone;
pub mod bert;
pub mod checkpoint;
mod config_check;
pub mod head;
mod kv_cache;
pub mod llama;
mod load;
mod nn;
mod targets;

pub use crate::ops::FrozenWeight;
pub use adapted_linear::AdaptedLinear;
pub use adapter_selection::{adapter_selection, with_adapter_selection, AdapterSelection};
pub use backbone::{Backbone, Family, LlamaCppLayout, Task};
pub use kv_cache::KvCache;
pub use load::{family_of_model_type, load_backbone, model_type_of, LoadedBackbone};
pub use nn::{
    attention, attention_composed, gelu_erf, layer_norm, layer_norm_composed, mean_pool, rms_norm, rms_norm_composed,
    rope, rope_composed, softmax_last_dim, softmax_last_dim_composed, swiglu, swiglu_composed,
};
pub use targets::{AdapterPlan, ModuleOverride, TargetModules};

use crate::adapters::{self, Adapter, AdapterConfig, AdapterDropout};
use crate::error::{Error, Result};
use crate::io::TensorSource;

/// The layer index in a tensor name `…{layer_key}.{index}.…`, for any of `layer_keys`.
fn layer_index(name: &str, layer_keys: &[&str]) -> Option<usize> {
    layer_keys.iter().find_map(|key| {
        let rest = &name[name.find(&format!("{key}."))? + key.len() + 1..];
        rest.split('.').next()?.parse().ok()
    })
}

/// Refuse a checkpoint with model-body tensors (`is_body`) that loading did not read: the
/// config describes another model (fewer layers, say), and a half-read model gives wrong
/// outputs. `layers_field` (e.g. "config.json's `num_hidden_layers`") = `layers` is what the
/// loader went by; layers are found in names after one of `layer_keys` (`encoder.layer`, `blk`).
pub(crate) fn refuse_unread(
    w: &dyn TensorSource,
    is_body: impl Fn(&str) -> bool,
    layer_keys: &[&str],
    layers: usize,
    layers_field: &str,
) -> Result<()> {
    let unread: Vec<String> = w.unread().into_iter().filter(|n| is_body(n)).collect();
    let Some(first) = unread.first() else { return Ok(()) };
    let why = match unread.iter().filter_map(|n| layer_index(n, layer_keys)).filter(|l| *l >= layers).max() {
        Some(top) => format!("it holds layers up to {top}, but {layers_field} = {layers}"),
        None => "no part of the model its config describes reads them".to_string(),
    };
    Err(Error::InvalidModel(format!(
        "{}: {} tensor(s) would be left unused (first: `{first}`): {why}; the config and the weights disagree",
        w.path().display(),
        unread.len()
    )))
}

/// A rank above `min(in, out)` buys nothing (a LoRA update `B·A` cannot have more) and costs
/// memory without bound: rank 65536 on every projection of a small model asked for gigabytes.
/// The same bound holds an adapter to the size of the layer it adapts for Kron-LoRA too. (Its
/// inner `B1·B2` cannot use more than `min(d_B1, d_B2)`, but refusing that would refuse the
/// default rank 8 on small layers with large Kronecker factors, where it is merely redundant.)
fn check_rank(path: &str, in_features: usize, out_features: usize, config: &AdapterConfig) -> Result<()> {
    let max = in_features.min(out_features);
    if config.rank > max {
        return Err(Error::InvalidOption(format!(
            "option `rank` = {} is too large for layer `{path}`: an update of this {out_features}×{in_features} layer has rank at most {max}; \
             use rank ≤ {max} (rankPattern can set it per layer)",
            config.rank
        )));
    }
    Ok(())
}

/// Add an adapter named `name` to the projections of `backbone` that `plan` selects; returns
/// how many. Every adapter is built before any is attached, so an error (a factor that does
/// not divide, say) leaves the model unchanged.
pub fn attach_adapter(backbone: &mut dyn Backbone, name: &str, plan: &AdapterPlan) -> Result<usize> {
    let device = backbone.device().clone();
    let seed = backbone.dropout_seed().clone();
    let head = backbone.output_head().map(str::to_string);
    let projections = backbone.projections_mut();
    if projections.iter().any(|p| p.adapters().any(|(n, _)| n == name)) {
        return Err(Error::InvalidOption(format!("the model already has an adapter named `{name}`")));
    }
    let modules: Vec<(String, bool)> =
        projections.iter().map(|p| (p.name.clone(), head.as_deref() == Some(p.name.as_str()))).collect();
    let chosen = plan.resolve(&modules)?;
    let mut built: Vec<Option<Box<dyn Adapter>>> = projections.iter().map(|_| None).collect();
    for (path, config) in &chosen {
        let index = modules.iter().position(|(n, _)| n == path).expect("resolved from these modules");
        let p = &projections[index];
        check_rank(path, p.in_features(), p.out_features(), config)?;
        built[index] = Some(adapters::build(path, p.in_features(), p.out_features(), config, &device)?);
    }
    for (p, adapter) in projections.into_iter().zip(built) {
        if let Some(adapter) = adapter {
            let dropout = (plan.dropout > 0.0).then(|| AdapterDropout::new(plan.dropout, &p.name, seed.clone()));
            p.add_adapter(name.to_string(), adapter, dropout);
        }
    }
    Ok(chosen.len())
}
