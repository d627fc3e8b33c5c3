//! A standalone layer (`new KronLoraLinear({...})` / `new LoraLinear({...})`) from its options.

use candle_core::Device;
use serde::Deserialize;
use serde_json::Value;

use super::device::device;
use super::fields::{alpha, bounded_int, flag, invalid, json_error, positive_int, required, seed};
use crate::adapters::{AdapterConfig, AdapterKind};
use crate::error::Result;
use crate::limits::{MAX_ADAPTER_PARAMETERS, MAX_FEATURES, MAX_RANK};
use crate::models::adapted_linear::{AdaptedLinear, LayerOptions};

/// The class users create a layer of this kind with, also a layer's default name.
pub fn class_name(kind: AdapterKind) -> &'static str {
    match kind {
        AdapterKind::KronLora => "KronLoraLinear",
        AdapterKind::Lora => "LoraLinear",
    }
}

/// The adapter kind of a type name (`"kron-lora"`, `"lora"`).
pub fn adapter_kind(name: &str) -> Result<AdapterKind> {
    AdapterKind::from_name(name)
        .ok_or_else(|| invalid(format!("unknown adapter type `{name}`; use \"kron-lora\" or \"lora\"")))
}

/// A new standalone layer of adapter type `kind` (`"kron-lora"`, `"lora"`) from its JSON
/// options and optional row-major `weight [out, in]` and `bias [out]`.
pub fn create_layer(
    kind: &str,
    options_json: &str,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
) -> Result<AdaptedLinear> {
    let (options, device) = layer_options(adapter_kind(kind)?, options_json)?;
    AdaptedLinear::standalone(&options, weight, bias, &device)
}

/// The JSON form; numbers are read as f64 so that errors can say "must be a positive integer".
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLayerOptions {
    in_features: Option<Value>,
    out_features: Option<Value>,
    rank: Option<Value>,
    alpha: Option<Value>,
    kron_in: Option<Value>,
    kron_out: Option<Value>,
    seed: Option<Value>,
    use_rslora: Option<Value>,
    name: Option<Value>,
    device: Option<Value>,
}

/// Parse `{ inFeatures, outFeatures, rank, alpha, kronIn?, kronOut?, seed?, useRslora?, name?,
/// device? }` for a layer of `kind`; also returns the device it asks for (default: the CPU).
pub fn layer_options(kind: AdapterKind, json: &str) -> Result<(LayerOptions, Device)> {
    // serde's text for unknown names already lists the accepted ones.
    let raw: RawLayerOptions = serde_json::from_str(json).map_err(|e| json_error("layer options", e))?;
    let name = match raw.name.as_ref().filter(|v| !v.is_null()) {
        None => class_name(kind).to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => return Err(invalid(format!("option `name` must be a string, got {v}"))),
    };
    let in_features = required("inFeatures", bounded_int("inFeatures", raw.in_features.as_ref(), MAX_FEATURES)?)?;
    let out_features = required("outFeatures", bounded_int("outFeatures", raw.out_features.as_ref(), MAX_FEATURES)?)?;
    let rank = required("rank", bounded_int("rank", raw.rank.as_ref(), MAX_RANK)?)?;
    // LoRA's count bounds Kron-LoRA's: refuse what could not be allocated.
    // In u64: on wasm32 usize is 32 bits and the product would wrap.
    let needed = rank as u64 * (in_features as u64 + out_features as u64);
    if needed > MAX_ADAPTER_PARAMETERS as u64 {
        return Err(invalid(format!(
            "rank {rank} on a {out_features}×{in_features} layer needs up to {needed} adapter parameters; \
             the maximum is {MAX_ADAPTER_PARAMETERS}: lower the rank or the sizes"
        )));
    }
    let alpha = alpha("alpha", raw.alpha.as_ref())?;
    let kron_in = positive_int("kronIn", raw.kron_in.as_ref())?;
    let kron_out = positive_int("kronOut", raw.kron_out.as_ref())?;
    if kind == AdapterKind::Lora && (kron_in.is_some() || kron_out.is_some()) {
        return Err(invalid("options `kronIn` / `kronOut` apply to Kron-LoRA only; remove them for LoraLinear".into()));
    }
    let seed = seed("seed", raw.seed.as_ref())?;
    let use_rslora = flag("useRslora", raw.use_rslora.as_ref())?;
    let device = device(raw.device.as_ref())?;
    let adapter = AdapterConfig { kind, rank, alpha, kron_in, kron_out, use_rslora, seed };
    Ok((LayerOptions { name, in_features, out_features, adapter }, device))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_options() {
        let o = layer_options(
            AdapterKind::KronLora,
            r#"{"inFeatures":8,"outFeatures":6,"rank":2,"alpha":4,"kronIn":2,"kronOut":3,"seed":7}"#,
        )
        .unwrap()
        .0;
        assert_eq!((o.in_features, o.out_features, o.adapter.rank), (8, 6, 2));
        assert_eq!((o.adapter.kron_in, o.adapter.kron_out, o.adapter.seed), (Some(2), Some(3), 7));
        assert_eq!(o.adapter.scale(), 2.0);
    }

    #[test]
    fn rejects_bad_options() {
        let cases = [
            (r#"{"inFeatures":8,"outFeatures":6,"rank":2,"alpha":4,"rnak":1}"#, "unknown field `rnak`"),
            (r#"{"inFeatures":0,"outFeatures":6,"rank":2,"alpha":4}"#, "`inFeatures` must be a positive integer"),
            (r#"{"inFeatures":8,"outFeatures":-6,"rank":2,"alpha":4}"#, "`outFeatures` must be a positive integer"),
            (r#"{"inFeatures":8,"outFeatures":6,"rank":2.5,"alpha":4}"#, "`rank` must be a positive integer"),
            (r#"{"inFeatures":8,"outFeatures":6,"alpha":4}"#, "`rank` is required"),
            (
                r#"{"inFeatures":1e12,"outFeatures":6,"rank":2,"alpha":4}"#,
                "`inFeatures` = 1000000000000 is larger than the supported maximum",
            ),
            (
                r#"{"inFeatures":8,"outFeatures":6,"rank":100000,"alpha":4}"#,
                "`rank` = 100000 is larger than the supported maximum",
            ),
            (r#"{"inFeatures":8,"outFeatures":6,"rank":2,"alpha":"x"}"#, "`alpha` must be a number"),
        ];
        for (json, want) in cases {
            let err = layer_options(AdapterKind::KronLora, json).unwrap_err();
            assert_eq!(err.code(), "ERR_INVALID_OPTION");
            assert!(err.to_string().contains(want), "{json}: {err}");
        }
        let err = layer_options(AdapterKind::Lora, r#"{"inFeatures":8,"outFeatures":6,"rank":2,"alpha":4,"kronIn":2}"#)
            .unwrap_err();
        assert!(err.to_string().contains("Kron-LoRA only"));
    }
}
