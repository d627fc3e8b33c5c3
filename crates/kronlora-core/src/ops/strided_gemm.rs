//! gemm (the crate candle's CPU matmul runs on) called directly on row-major strided views, so a
//! product can accumulate into an existing buffer (`C += A·B`) instead of allocating a new one.

use gemm::Parallelism;

/// A row-major strided view: (pointer, row stride, column stride), in elements.
pub type View<P> = (P, usize, usize);

#[allow(clippy::too_many_arguments)]
unsafe fn gemm_with(
    parallelism: Parallelism,
    (m, n, k): (usize, usize, usize),
    c: View<*mut f32>,
    accumulate: bool,
    a: View<*const f32>,
    b: View<*const f32>,
    beta: f32,
) {
    gemm::gemm(
        m,
        n,
        k,
        c.0,
        c.2 as isize,
        c.1 as isize,
        accumulate,
        a.0,
        a.2 as isize,
        a.1 as isize,
        b.0,
        b.2 as isize,
        b.1 as isize,
        1.0,
        beta,
        false,
        false,
        false,
        parallelism,
    )
}

/// `C = beta·A·B`, or `C += beta·A·B` when `accumulate`, for `A [m, k]`, `B [k, n]`,
/// `C [m, n]`, on the calling thread (for kernels that already run one task per thread).
///
/// # Safety
/// Each view must address `rows × cols` valid elements at its strides; `C` must not alias `A` or `B`.
pub unsafe fn gemm_into(
    mnk: (usize, usize, usize),
    c: View<*mut f32>,
    accumulate: bool,
    a: View<*const f32>,
    b: View<*const f32>,
    beta: f32,
) {
    gemm_with(Parallelism::None, mnk, c, accumulate, a, b, beta)
}

/// `gemm_into` split across the rayon pool (one large product).
///
/// # Safety
/// As `gemm_into`.
pub unsafe fn gemm_into_parallel(
    mnk: (usize, usize, usize),
    c: View<*mut f32>,
    accumulate: bool,
    a: View<*const f32>,
    b: View<*const f32>,
    beta: f32,
) {
    // The thread count candle's own matmul uses.
    let parallelism = match candle_core::utils::get_num_threads() {
        1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    };
    gemm_with(parallelism, mnk, c, accumulate, a, b, beta)
}
