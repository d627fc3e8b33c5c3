//! Range checks shared by the model configs: every field a loader uses is checked before any
//! tensor is read, and a bad one is refused naming the file and the field.

use crate::error::{Error, Result};

/// The largest size a config field may state: far above any real model's (vocabularies of
/// 256k, contexts of 10M positions), small enough that products of two sizes cannot overflow.
pub const MAX_SIZE: usize = 1 << 24;

pub fn invalid(path: &str, field: &str, what: String) -> Error {
    Error::InvalidModel(format!("{path}: `{field}` {what}"))
}

/// A size (layers, heads, widths, vocabulary, positions): an integer from 1 to `MAX_SIZE`.
pub fn size(path: &str, field: &str, value: usize) -> Result<()> {
    if value == 0 || value > MAX_SIZE {
        return Err(invalid(
            path,
            field,
            format!("= {value} is out of range; expected an integer from 1 to {MAX_SIZE}"),
        ));
    }
    Ok(())
}

/// A normalisation epsilon: finite, above 0 and below 1 (real models use 1e-12 to 1e-5).
pub fn epsilon(path: &str, field: &str, value: f64) -> Result<()> {
    if !(value.is_finite() && value > 0.0 && value < 1.0) {
        return Err(invalid(
            path,
            field,
            format!("= {value} is out of range; expected a number above 0 and below 1 (such as 1e-12)"),
        ));
    }
    Ok(())
}

/// Check the JSON types of a config's numeric fields before serde reads them, so that a bad
/// one is named (serde's messages name a line and column, not the field): `sizes` must be
/// integers from 1 to `MAX_SIZE` (a 32-bit build could not even hold larger ones), `numbers`
/// numbers. Absent and null fields are left to the config's defaults.
pub fn check_json_fields(config: &serde_json::Value, path: &str, sizes: &[&str], numbers: &[&str]) -> Result<()> {
    for field in sizes {
        match config.get(*field) {
            None | Some(serde_json::Value::Null) => {}
            Some(v) if v.as_u64().is_some_and(|n| n >= 1 && n <= MAX_SIZE as u64) => {}
            Some(v) => {
                return Err(invalid(
                    path,
                    field,
                    format!("= {v} is out of range; expected an integer from 1 to {MAX_SIZE}"),
                ))
            }
        }
    }
    for field in numbers {
        match config.get(*field) {
            None | Some(serde_json::Value::Null) => {}
            Some(v) if v.is_number() => {}
            Some(v) => return Err(invalid(path, field, format!("= {v} is not a number"))),
        }
    }
    Ok(())
}
