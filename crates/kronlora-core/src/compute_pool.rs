//! Where the numerics run. candle's element-wise ops, kronlora's fused kernels and gemm all
//! split their work with rayon. Called from a thread outside a rayon pool (Node's, a napi
//! task's), every one of those parallel sections is injected into rayon's global pool while the
//! caller blocks until workers wake, take it and finish: a training step has hundreds of
//! sections, and on a 2-core machine these handoffs cost about a quarter of a MiniLM step
//! (1.23 → 0.9 s). Run on candle's own CPU pool (`Device::with_context`), the calling thread is
//! one of the workers: it works on each section itself and shares it by work stealing.
//!
//! Thread-local state does not follow `f` onto the pool, and a pool thread waiting inside one
//! caller's job may run another caller's whole job (work stealing: two models in one process,
//! or tests in parallel), so every job sets the grad mode it needs on the thread that runs it:
//! `tracked_on` for training, `no_grad_on` for inference. WASM has no threads; there `f` runs
//! where it is.

use candle_core::Device;

use crate::grad_mode::with_grad_mode;

/// Run `f` on `device`'s compute pool (candle's CPU pool; elsewhere, right here).
fn on_compute_pool<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    #[cfg(target_arch = "wasm32")]
    {
        let _ = device;
        f()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        // Before the pool's threads first allocate (see `reuse_freed_memory`).
        crate::reuse_freed_memory::share_one_arena();
        device.with_context(f)
    }
}

/// `f` on `device`'s compute pool with parameters tracked: a training step.
pub fn tracked_on<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    on_compute_pool(device, || with_grad_mode(true, f))
}

/// `f` on `device`'s compute pool with parameters detached: inference and evaluation.
pub fn no_grad_on<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    on_compute_pool(device, || with_grad_mode(false, f))
}
