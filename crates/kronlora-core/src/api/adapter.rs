//! `addAdapter`'s options as an `AdapterPlan`: type, rank, alpha, Kronecker factors, target
//! modules and per-module patterns, adapter dropout.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::fields::{alpha, bounded_int, flag, invalid, json_error, positive_int, required, seed};
use crate::adapters::{AdapterConfig, AdapterKind};
use crate::error::Result;
use crate::limits::MAX_RANK;
use crate::models::{AdapterPlan, ModuleOverride, TargetModules};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAdapterOptions {
    #[serde(rename = "type")]
    kind: Option<Value>,
    rank: Option<Value>,
    alpha: Option<Value>,
    kron_in: Option<Value>,
    kron_out: Option<Value>,
    target_modules: Option<Value>,
    rank_pattern: Option<BTreeMap<String, Value>>,
    alpha_pattern: Option<BTreeMap<String, Value>>,
    kron_in_pattern: Option<BTreeMap<String, Value>>,
    kron_out_pattern: Option<BTreeMap<String, Value>>,
    use_rslora: Option<Value>,
    seed: Option<Value>,
    dropout: Option<Value>,
}

/// `{ type, rank, alpha, kronIn?, kronOut?, targetModules, rankPattern?, alphaPattern?,
/// kronInPattern?, kronOutPattern?, useRslora?, seed?, dropout? }` as an adapter plan.
pub fn adapter_plan(json: &str) -> Result<AdapterPlan> {
    let raw: RawAdapterOptions = serde_json::from_str(json).map_err(|e| json_error("adapter options", e))?;
    let kind = match raw.kind.as_ref() {
        None => return Err(invalid("option `type` is required: \"kron-lora\" or \"lora\"".into())),
        Some(v) => v
            .as_str()
            .and_then(AdapterKind::from_name)
            .ok_or_else(|| invalid(format!("option `type` must be \"kron-lora\" or \"lora\", got {v}")))?,
    };
    let rank = required("rank", bounded_int("rank", raw.rank.as_ref(), MAX_RANK)?)?;
    let kron_in = positive_int("kronIn", raw.kron_in.as_ref())?;
    let kron_out = positive_int("kronOut", raw.kron_out.as_ref())?;
    if kind == AdapterKind::Lora
        && (kron_in.is_some() || kron_out.is_some() || raw.kron_in_pattern.is_some() || raw.kron_out_pattern.is_some())
    {
        return Err(invalid(
            "options `kronIn` / `kronOut` (and their patterns) apply to type \"kron-lora\" only".into(),
        ));
    }
    let targets = match raw.target_modules.as_ref() {
        None | Some(Value::Null) => {
            return Err(invalid(
                "option `targetModules` is required: module names, a regular expression, or \"all-linear\"".into(),
            ))
        }
        Some(Value::String(s)) if s == "all-linear" => TargetModules::AllLinear,
        Some(Value::String(s)) => TargetModules::Regex(s.clone()),
        Some(Value::Array(list)) => TargetModules::Names(
            list.iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| invalid(format!("`targetModules` entries must be strings, got {v}")))
                })
                .collect::<Result<_>>()?,
        ),
        Some(v) => {
            return Err(invalid(format!("option `targetModules` must be a string or an array of strings, got {v}")))
        }
    };
    let mut overrides: BTreeMap<String, ModuleOverride> = BTreeMap::new();
    fn entry<'a>(overrides: &'a mut BTreeMap<String, ModuleOverride>, pattern: &str) -> &'a mut ModuleOverride {
        overrides
            .entry(pattern.to_string())
            .or_insert_with(|| ModuleOverride { pattern: pattern.to_string(), ..Default::default() })
    }
    for (pattern, v) in raw.rank_pattern.iter().flatten() {
        entry(&mut overrides, pattern).rank = bounded_int(&format!("rankPattern[\"{pattern}\"]"), Some(v), MAX_RANK)?;
    }
    for (pattern, v) in raw.alpha_pattern.iter().flatten() {
        entry(&mut overrides, pattern).alpha = Some(alpha(&format!("alphaPattern[\"{pattern}\"]"), Some(v))?);
    }
    for (pattern, v) in raw.kron_in_pattern.iter().flatten() {
        entry(&mut overrides, pattern).kron_in = positive_int(&format!("kronInPattern[\"{pattern}\"]"), Some(v))?;
    }
    for (pattern, v) in raw.kron_out_pattern.iter().flatten() {
        entry(&mut overrides, pattern).kron_out = positive_int(&format!("kronOutPattern[\"{pattern}\"]"), Some(v))?;
    }
    Ok(AdapterPlan {
        targets,
        config: AdapterConfig {
            kind,
            rank,
            alpha: alpha("alpha", raw.alpha.as_ref())?,
            kron_in,
            kron_out,
            use_rslora: flag("useRslora", raw.use_rslora.as_ref())?,
            seed: seed("seed", raw.seed.as_ref())?,
        },
        overrides: overrides.into_values().collect(),
        dropout: match raw.dropout.as_ref().filter(|v| !v.is_null()) {
            None => 0.0,
            Some(v) => match v.as_f64() {
                Some(p) if (0.0..1.0).contains(&p) => p,
                _ => return Err(invalid(format!("option `dropout` must be a number in [0, 1), got {v}"))),
            },
        },
    })
}
