//! `exp` and `erf` for f32 written so that rustc vectorises the loops that call them.
//!
//! libm's `expf`/`erff` are scalar calls with branches: in a profile of a MiniLM training step
//! they took ~14 % of the time (GELU's erf alone ~10 %), more than attention. These forms are
//! branch-free polynomials (selects, not jumps), so a loop over a slice becomes AVX2/AVX-512 code.
//! Written here rather than taken from a crate: the SIMD-math crates need nightly or wrap the
//! same libm calls. Plain `a * b + c` rather than `mul_add`: on wasm32 `mul_add` is a software
//! `fmaf` call, and these polynomials do not need the extra rounding step saved.

/// `e^x` to within ~2 ulp for x in [-87.3, 88.7]; 0 below (softmax's masked scores), +inf above.
/// Cephes' `expf`: x = n·ln2 + r with |r| ≤ ln2/2, e^r as a degree-6 polynomial, 2^n from the
/// exponent bits.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln2 split in two so that n·ln2 is subtracted without rounding error.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let clamped = x.clamp(-87.3, 88.7);
    let n = (clamped * LOG2E + 0.5).floor();
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // n reaches 128 just below the overflow point, one past the largest exponent: take that
    // last factor of 2 separately.
    let n_low = n.min(127.0);
    let scale = f32::from_bits(((n_low as i32 + 127) as u32) << 23);
    let y = e_r * (1.0 + (n - n_low)) * scale;
    if x < -87.3 {
        0.0
    } else if x > 88.7 {
        f32::INFINITY
    } else {
        y
    }
}

/// `erf(x)` to an absolute error below 2e-7 (Abramowitz & Stegun 7.1.26, the form PyTorch's
/// vectorised CPU kernels use): `1 − t·P(t)·e^{−x²}` with `t = 1 / (1 + p|x|)`, sign restored.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_72;
    const A3: f32 = 1.421_413_8;
    const A4: f32 = -1.453_152_1;
    const A5: f32 = 1.061_405_4;
    // Near 0 the A&S form subtracts two numbers close to 1; the Maclaurin series
    // 2/√π · Σ (-1)ⁿ x²ⁿ⁺¹ / (n!(2n+1)) to n = 8 is exact to ~1e-8 there. Both are computed and
    // one selected, so the loop stays branch-free.
    const SERIES: [f32; 9] = [
        1.0,
        -1.0 / 3.0,
        1.0 / 10.0,
        -1.0 / 42.0,
        1.0 / 216.0,
        -1.0 / 1320.0,
        1.0 / 9360.0,
        -1.0 / 75600.0,
        1.0 / 685_440.0,
    ];
    let x2 = x * x;
    let series = SERIES.iter().rev().fold(0.0, |acc, &c| acc * x2 + c) * x * std::f32::consts::FRAC_2_SQRT_PI;
    let a = x.abs();
    let t = 1.0 / (P * a + 1.0);
    let poly = ((((A5 * t + A4) * t + A3) * t + A2) * t + A1) * t;
    let tail = (1.0 - poly * exp_f32(-x2)).copysign(x);
    if a < 0.75 {
        series
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest absolute error of `erf_f32`: the A&S formula's 1.5e-7 plus f32 rounding.
    const ERF_ERROR: f64 = 2e-7;

    /// Every 1/64 from -90 to 90 (and the edges) against f64's exp: relative error ≤ 3 ulp.
    #[test]
    fn exp_matches_f64_to_a_few_ulp() {
        for i in -90 * 64..=90 * 64 {
            let x = i as f32 / 64.0;
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            if x < -87.3 {
                assert_eq!(got, 0.0, "exp({x})");
            } else if x > 88.7 {
                assert!(got.is_infinite(), "exp({x})");
            } else if want > f32::MIN_POSITIVE as f64 {
                assert!(((got - want) / want).abs() < 3.0 * f32::EPSILON as f64, "exp({x}): {got} vs {want}");
            }
        }
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
    }

    /// Every 1/256 from -6 to 6 against candle's f64 erf, and odd symmetry.
    #[test]
    fn erf_matches_f64_within_its_stated_error() {
        for i in -6 * 256..=6 * 256 {
            let x = i as f32 / 256.0;
            let want = candle_core::cpu::erf::erf_f64(x as f64);
            let got = erf_f32(x) as f64;
            assert!((got - want).abs() < ERF_ERROR, "erf({x}): {got} vs {want}");
            assert_eq!(erf_f32(-x), -erf_f32(x));
        }
        assert_eq!(erf_f32(50.0), 1.0);
        assert_eq!(erf_f32(-50.0), -1.0);
    }
}
