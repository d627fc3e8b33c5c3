//! Options of an adapter and of a standalone adapted layer, parsed from JSON.
//!
//! The bindings pass the user's options object through as JSON so that validation (unknown
//! names, types, ranges) is written once, here, for every backend.

use serde::Deserialize;
use serde_json::Value;

use crate::adapters::AdapterKind;
use crate::error::{Error, Result};

/// Kron-LoRA's default outer factors, the paper's DistilBERT setting (d_A1 = 2, d_A2 = 4).
pub const DEFAULT_KRON_IN: usize = 2;
pub const DEFAULT_KRON_OUT: usize = 4;

/// How one adapter is shaped and initialised, independent of the layer it sits on.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    pub kind: AdapterKind,
    pub rank: usize,
    pub alpha: f64,
    /// Kron-LoRA only: requested `d_A1` (None: default).
    pub kron_in: Option<usize>,
    /// Kron-LoRA only: requested `d_A2` (None: default).
    pub kron_out: Option<usize>,
    /// Scale `alpha / √r` (rsLoRA) instead of `alpha / r`.
    pub use_rslora: bool,
    pub seed: u64,
}

impl AdapterConfig {
    pub fn scale(&self) -> f64 {
        crate::adapters::update_scale(self.alpha, self.rank, self.use_rslora)
    }
}

/// Options of a standalone adapted linear layer (`new KronLoraLinear({...})` in JS).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerOptions {
    pub name: String,
    pub in_features: usize,
    pub out_features: usize,
    pub adapter: AdapterConfig,
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
}

pub(crate) fn invalid(msg: String) -> Error {
    Error::InvalidOption(msg)
}

pub(crate) fn number(field: &str, value: &Value) -> Result<f64> {
    value.as_f64().ok_or_else(|| invalid(format!("option `{field}` must be a number, got {value}")))
}

pub(crate) fn positive_int(field: &str, value: Option<&Value>) -> Result<Option<usize>> {
    let Some(value) = value.filter(|v| !v.is_null()) else { return Ok(None) };
    let x = number(field, value)?;
    if !(x.is_finite() && x >= 1.0 && x.fract() == 0.0 && x <= (1u64 << 40) as f64) {
        return Err(invalid(format!("option `{field}` must be a positive integer, got {value}")));
    }
    Ok(Some(x as usize))
}

pub(crate) fn required<T>(field: &str, value: Option<T>) -> Result<T> {
    value.ok_or_else(|| invalid(format!("option `{field}` is required")))
}

/// Largest layer width accepted (16 777 216): far above any model's, small enough that a typo
/// (`1e12`) is an error instead of an allocation that would abort the process.
pub const MAX_FEATURES: usize = 1 << 24;
/// Most adapter parameters one layer may ask for (8 GiB of f32).
pub const MAX_ADAPTER_PARAMETERS: usize = 1 << 31;
/// Most classes a classification head may have: more than any real label set (ImageNet-21k
/// has 21 841), small enough that a typo cannot ask for a head of gigabytes.
pub const MAX_NUM_LABELS: usize = 1 << 16;
/// Most parameters a classification head may have (1 GiB of f32, before gradients and AdamW).
pub const MAX_HEAD_PARAMETERS: usize = 1 << 28;
/// Largest adapter rank accepted.
pub const MAX_RANK: usize = 1 << 16;

/// A positive integer of at most `max`.
pub(crate) fn bounded_int(field: &str, value: Option<&Value>, max: usize) -> Result<Option<usize>> {
    match positive_int(field, value)? {
        Some(x) if x > max => {
            Err(invalid(format!("option `{field}` = {x} is larger than the supported maximum of {max}")))
        }
        other => Ok(other),
    }
}

/// The largest |alpha| an adapter may have, created or read from a file. Real adapters use 1 to
/// a few thousand (alpha is usually r or 2r); far beyond that the update swamps the layer and
/// outputs overflow to infinity.
pub const MAX_ALPHA: f64 = 1e6;

/// A finite non-zero number of size at most `MAX_ALPHA` (an adapter's `alpha`).
pub(crate) fn alpha(field: &str, value: Option<&Value>) -> Result<f64> {
    let value = required(field, value.filter(|v| !v.is_null()))?;
    let x = number(field, value)?;
    if !x.is_finite() || x == 0.0 || x.abs() > MAX_ALPHA {
        return Err(invalid(format!(
            "option `{field}` must be a non-zero number from -{MAX_ALPHA:e} to {MAX_ALPHA:e}, got {value}"
        )));
    }
    Ok(x)
}

/// A non-negative safe integer (JavaScript's Number.MAX_SAFE_INTEGER at most); default 0.
pub(crate) fn seed(field: &str, value: Option<&Value>) -> Result<u64> {
    let Some(v) = value.filter(|v| !v.is_null()) else { return Ok(0) };
    let x = number(field, v)?;
    if !(x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= 9_007_199_254_740_991.0) {
        return Err(invalid(format!("option `{field}` must be a non-negative safe integer, got {v}")));
    }
    Ok(x as u64)
}

/// true / false; default false.
pub(crate) fn flag(field: &str, value: Option<&Value>) -> Result<bool> {
    match value.filter(|v| !v.is_null()) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(invalid(format!("option `{field}` must be true or false, got {v}"))),
    }
}

/// serde's message without its " at line 1 column N" suffix (the JSON was built by us).
pub(crate) fn json_error(what: &str, e: serde_json::Error) -> Error {
    let msg = e.to_string();
    invalid(format!("invalid {what}: {}", msg.split(" at line").next().unwrap_or(&msg)))
}

impl LayerOptions {
    /// Parse `{ inFeatures, outFeatures, rank, alpha, kronIn?, kronOut?, seed?, useRslora?, name? }`.
    pub fn from_json(kind: AdapterKind, json: &str) -> Result<Self> {
        // serde's text for unknown names already lists the accepted ones.
        let raw: RawLayerOptions = serde_json::from_str(json).map_err(|e| json_error("layer options", e))?;
        let name = match raw.name.as_ref().filter(|v| !v.is_null()) {
            None => kind.class_name().to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => return Err(invalid(format!("option `name` must be a string, got {v}"))),
        };
        let in_features = required("inFeatures", bounded_int("inFeatures", raw.in_features.as_ref(), MAX_FEATURES)?)?;
        let out_features =
            required("outFeatures", bounded_int("outFeatures", raw.out_features.as_ref(), MAX_FEATURES)?)?;
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
            return Err(invalid(
                "options `kronIn` / `kronOut` apply to Kron-LoRA only; remove them for LoraLinear".into(),
            ));
        }
        let seed = seed("seed", raw.seed.as_ref())?;
        let use_rslora = flag("useRslora", raw.use_rslora.as_ref())?;
        Ok(LayerOptions {
            name,
            in_features,
            out_features,
            adapter: AdapterConfig { kind, rank, alpha, kron_in, kron_out, use_rslora, seed },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_options() {
        let o = LayerOptions::from_json(
            AdapterKind::KronLora,
            r#"{"inFeatures":8,"outFeatures":6,"rank":2,"alpha":4,"kronIn":2,"kronOut":3,"seed":7}"#,
        )
        .unwrap();
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
            let err = LayerOptions::from_json(AdapterKind::KronLora, json).unwrap_err();
            assert_eq!(err.code(), "ERR_INVALID_OPTION");
            assert!(err.to_string().contains(want), "{json}: {err}");
        }
        let err = LayerOptions::from_json(
            AdapterKind::Lora,
            r#"{"inFeatures":8,"outFeatures":6,"rank":2,"alpha":4,"kronIn":2}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("Kron-LoRA only"));
    }
}
