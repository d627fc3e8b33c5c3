//! The frozen base's products through OpenBLAS (`--features openblas`, Linux; off by default).
//!
//! On a 2-core Zen 3 (AVX2) the frozen MiniLM projections ran 1.1–1.2× faster in Debian's
//! OpenBLAS 0.3.21 than in the `gemm` crate (README, issue 11), and those products are about
//! two thirds of a training step there. OpenBLAS's own threads would spin between calls and
//! take the cores from the element-wise kernels in between, so it runs single-threaded and the
//! product is split by bands of rows across kronlora's rayon pool instead.

use std::sync::Once;

use rayon::prelude::*;

use super::strided_gemm::View;

#[link(name = "openblas")]
extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn cblas_sgemm(
        layout: i32,
        trans_a: i32,
        trans_b: i32,
        m: i32,
        n: i32,
        k: i32,
        alpha: f32,
        a: *const f32,
        lda: i32,
        b: *const f32,
        ldb: i32,
        beta: f32,
        c: *mut f32,
        ldc: i32,
    );
    fn openblas_set_num_threads(threads: i32);
}

const ROW_MAJOR: i32 = 101;
const NO_TRANS: i32 = 111;
const TRANS: i32 = 112;
/// Fewer rows per band are not worth a call of their own.
const MIN_ROWS_PER_BAND: usize = 64;

static SINGLE_THREADED: Once = Once::new();

/// How cblas reads a view in row-major terms: (transpose flag, leading dimension).
fn cblas_layout<P>(view: &View<P>) -> Option<(i32, i32)> {
    let ld = |x: usize| i32::try_from(x).ok();
    match (view.1, view.2) {
        (rs, 1) => Some((NO_TRANS, ld(rs)?)),
        (1, cs) => Some((TRANS, ld(cs)?)),
        _ => None,
    }
}

/// `C = beta·A·B` (or `C += beta·A·B` when `accumulate`) through OpenBLAS; false, with nothing
/// written, when a view's strides have no cblas layout (the caller then uses gemm).
///
/// # Safety
/// As `strided_gemm::gemm_into`.
pub unsafe fn try_gemm(
    (m, n, k): (usize, usize, usize),
    c: View<*mut f32>,
    accumulate: bool,
    a: View<*const f32>,
    b: View<*const f32>,
    beta: f32,
) -> bool {
    let (Some((ta, lda)), Some((tb, ldb))) = (cblas_layout(&a), cblas_layout(&b)) else { return false };
    let (Ok(n32), Ok(k32), Ok(ldc)) = (i32::try_from(n), i32::try_from(k), i32::try_from(c.1)) else { return false };
    if c.2 != 1 || i32::try_from(m).is_err() {
        return false;
    }
    SINGLE_THREADED.call_once(|| openblas_set_num_threads(1));
    let bands = rayon::current_num_threads().min(m / MIN_ROWS_PER_BAND).max(1);
    let rows = m.div_ceil(bands);
    // Addresses, so that the closure is Send; each band writes its own rows of C.
    let (cp, ap, bp) = (c.0 as usize, a.0 as usize, b.0 as usize);
    (0..bands).into_par_iter().for_each(|band| {
        let start = band * rows;
        let len = rows.min(m - start);
        // Row `start` of A is `start` rows down in its own layout: row stride a.1.
        let a_band = (ap as *const f32).add(start * a.1);
        let c_band = (cp as *mut f32).add(start * c.1);
        let keep = if accumulate { 1.0 } else { 0.0 };
        cblas_sgemm(
            ROW_MAJOR,
            ta,
            tb,
            len as i32,
            n32,
            k32,
            beta,
            a_band,
            lda,
            bp as *const f32,
            ldb,
            keep,
            c_band,
            ldc,
        );
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a plain triple loop in f64, in both of cblas' layouts of each operand, with and
    /// without accumulation, for row counts that split into uneven bands (on a pool of 4).
    #[test]
    fn matches_the_naive_product() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
        pool.install(|| {
            for (m, n, k) in [(300, 7, 13), (1000, 96, 40), (5, 3, 2)] {
                let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 23) as f32 / 11.0 - 1.0).collect();
                let b: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 19) as f32 / 9.0 - 1.0).collect();
                let at = |i: usize, j: usize, t: bool| if t { a[j * m + i] } else { a[i * k + j] };
                let bt = |i: usize, j: usize, t: bool| if t { b[j * k + i] } else { b[i * n + j] };
                for (ta, tb, accumulate) in
                    [(false, false, false), (true, false, true), (false, true, false), (true, true, true)]
                {
                    // Row-major [m, k], or stored transposed ([k, m]) and read at row stride 1.
                    let av = if ta { (a.as_ptr(), 1, m) } else { (a.as_ptr(), k, 1) };
                    let bv = if tb { (b.as_ptr(), 1, k) } else { (b.as_ptr(), n, 1) };
                    let mut c = vec![0.5f32; m * n];
                    // SAFETY: every view addresses m·k, k·n and m·n elements of its own buffer.
                    assert!(unsafe { try_gemm((m, n, k), (c.as_mut_ptr(), n, 1), accumulate, av, bv, 2.0) });
                    for i in 0..m {
                        for j in 0..n {
                            let dot: f64 = (0..k).map(|t| at(i, t, ta) as f64 * bt(t, j, tb) as f64).sum();
                            let want = 2.0 * dot + if accumulate { 0.5 } else { 0.0 };
                            let got = c[i * n + j] as f64;
                            assert!(
                                (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                "({m},{n},{k}) {ta} {tb} [{i},{j}]"
                            );
                        }
                    }
                }
            }
        });
    }
}
