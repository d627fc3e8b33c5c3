//! Validators of JSON option fields: each says which option is wrong and what it must be.
//! Numbers arrive as JSON numbers (f64), so "must be a positive integer" can be said of 2.5.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::limits::MAX_ALPHA;

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

/// A positive integer of at most `max`.
pub(crate) fn bounded_int(field: &str, value: Option<&Value>, max: usize) -> Result<Option<usize>> {
    match positive_int(field, value)? {
        Some(x) if x > max => {
            Err(invalid(format!("option `{field}` = {x} is larger than the supported maximum of {max}")))
        }
        other => Ok(other),
    }
}

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
