//! Naive reference maths for the tests: plain loops over f64, no candle.
#![allow(dead_code)] // each suite uses a different part

pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Lcg(seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407))
    }
    /// Uniform in [-1, 1).
    pub fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// `a [p, q] · b [q, r]`, row-major.
pub fn matmul(a: &[f32], b: &[f32], p: usize, q: usize, r: usize) -> Vec<f64> {
    let mut out = vec![0f64; p * r];
    for i in 0..p {
        for k in 0..q {
            for j in 0..r {
                out[i * r + j] += a[i * q + k] as f64 * b[k * r + j] as f64;
            }
        }
    }
    out
}

/// `kron(a [p, q], b [m, n])`, `[p·m, q·n]`.
pub fn kron(a: &[f64], b: &[f64], (p, q): (usize, usize), (m, n): (usize, usize)) -> Vec<f64> {
    let mut out = vec![0f64; p * m * q * n];
    for i in 0..p {
        for j in 0..q {
            for k in 0..m {
                for l in 0..n {
                    out[(i * m + k) * (q * n) + j * n + l] = a[i * q + j] * b[k * n + l];
                }
            }
        }
    }
    out
}

/// `y = x · (W + ΔW)ᵀ + b` for `x [rows, in]`, `W, ΔW [out, in]`.
pub fn linear(
    x: &[f32],
    w: Option<&[f32]>,
    delta: &[f64],
    b: Option<&[f32]>,
    rows: usize,
    inp: usize,
    out: usize,
) -> Vec<f64> {
    let mut y = vec![0f64; rows * out];
    for r in 0..rows {
        for o in 0..out {
            let mut acc = b.map_or(0.0, |b| b[o] as f64);
            for i in 0..inp {
                let wv = w.map_or(0.0, |w| w[o * inp + i] as f64) + delta[o * inp + i];
                acc += x[r * inp + i] as f64 * wv;
            }
            y[r * out + o] = acc;
        }
    }
    y
}

pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(((*g as f64) - w).abs() <= tol * scale, "{what}[{i}]: got {g}, want {w} (scale {scale})");
    }
}
