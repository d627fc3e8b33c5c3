//! Splitting a dimension into two factors for the Kronecker product.

use crate::error::{Error, Result};

/// LyCORIS' `factorization(dimension, factor)`: if `factor > 0` divides `dim`, the pair
/// `(factor, dim / factor)`; otherwise the divisor pair `(m, dim / m)` with `m <= factor`
/// (`factor = -1`: unlimited) closest to `√dim`. The smaller factor comes first, as in LyCORIS.
///
/// `(768, 2) → (2, 384)`, `(4096, 20) → (16, 256)`, `(32000, 20) → (20, 1600)`, `(127, 4) → (1, 127)`.
pub fn factorization(dim: usize, factor: i64) -> Result<(usize, usize)> {
    if dim == 0 {
        return Err(Error::InvalidOption("factorization: dim must be a positive integer, got 0".into()));
    }
    if factor == 0 || factor < -1 {
        return Err(Error::InvalidOption(format!(
            "factorization: factor must be a positive integer or -1 (unlimited), got {factor}"
        )));
    }
    if factor > 0 && dim.is_multiple_of(factor as usize) {
        let (m, n) = (factor as usize, dim / factor as usize);
        return Ok(if m > n { (n, m) } else { (m, n) });
    }
    let limit = if factor < 0 { dim } else { factor as usize };
    let (mut m, mut n) = (1usize, dim);
    let length = m + n;
    while m < n {
        let mut new_m = m + 1;
        while !dim.is_multiple_of(new_m) {
            new_m += 1;
        }
        let new_n = dim / new_m;
        if new_m + new_n > length || new_m > limit {
            break;
        }
        (m, n) = (new_m, new_n);
    }
    Ok(if m > n { (n, m) } else { (m, n) })
}

/// The nearest divisors of `dim` below and above `wanted` (either may be absent).
fn nearest_divisors(dim: usize, wanted: usize) -> (Option<usize>, Option<usize>) {
    let below = (1..wanted.min(dim + 1)).rev().find(|d| dim.is_multiple_of(*d));
    let above = (wanted + 1..=dim).find(|d| dim.is_multiple_of(*d));
    (below, above)
}

/// Resolve the outer Kronecker factor (`d_A1` for inputs, `d_A2` for outputs) of one side.
///
/// An explicit `requested` factor must divide `dim` exactly: otherwise the error names the
/// layer, the dimension and the nearest valid factors. Without one, `default` is used where it
/// divides `dim`, else `factorization(dim, default).0`: a smaller divisor, at worst 1 (a prime
/// dimension then gets a plain LoRA-like factor on that side).
pub fn resolve_kron_factor(
    layer: &str,
    option: &str,
    dim_name: &str,
    dim: usize,
    requested: Option<usize>,
    default: usize,
) -> Result<usize> {
    match requested {
        Some(f) if f >= 1 && f <= dim && dim.is_multiple_of(f) => Ok(f),
        Some(f) => {
            let (below, above) = nearest_divisors(dim, f);
            let options: Vec<String> = [below, above].iter().flatten().map(|d| d.to_string()).collect();
            Err(Error::Factorization(format!(
                "layer `{layer}`: {option} = {f} does not divide {dim_name} = {dim}; \
                 {option} must be a divisor of {dim}, the nearest valid values are {}",
                options.join(" or ")
            )))
        }
        // The default is used as is where it divides; otherwise the closest smaller split.
        None if default <= dim && dim.is_multiple_of(default) => Ok(default),
        None => Ok(factorization(dim, default as i64)?.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_lycoris_examples() {
        assert_eq!(factorization(768, 2).unwrap(), (2, 384));
        assert_eq!(factorization(4096, 20).unwrap(), (16, 256));
        assert_eq!(factorization(32000, 20).unwrap(), (20, 1600));
        assert_eq!(factorization(127, 4).unwrap(), (1, 127));
        assert_eq!(factorization(4096, -1).unwrap(), (64, 64));
        assert_eq!(factorization(768, -1).unwrap(), (24, 32));
    }

    #[test]
    fn explicit_factor_must_divide() {
        assert_eq!(resolve_kron_factor("l", "kronIn", "inFeatures", 768, Some(4), 2).unwrap(), 4);
        let err = resolve_kron_factor("enc.0.q", "kronIn", "inFeatures", 768, Some(5), 2).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("enc.0.q") && msg.contains("768") && msg.contains("4 or 6"), "{msg}");
        assert_eq!(err.code(), "ERR_FACTORIZATION");
    }

    #[test]
    fn default_falls_back_for_odd_sizes() {
        assert_eq!(resolve_kron_factor("l", "kronIn", "inFeatures", 127, None, 2).unwrap(), 1);
        assert_eq!(resolve_kron_factor("l", "kronOut", "outFeatures", 12, None, 4).unwrap(), 4);
        assert_eq!(resolve_kron_factor("l", "kronOut", "outFeatures", 6, None, 4).unwrap(), 2);
    }
}
