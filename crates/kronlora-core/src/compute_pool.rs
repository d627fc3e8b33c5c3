//! Where the numerics run. candle's ops, kronlora's fused kernels and gemm all split their work
//! with rayon. Called from a thread outside a rayon pool (Node's, a napi task's), every one of
//! those parallel sections is injected into rayon's global pool while the caller blocks until
//! workers wake, take it and finish: a training step has hundreds of sections, and on a 2-core
//! machine these handoffs were a large share of a MiniLM step (the README's training figures,
//! before and after). Here the work
//! runs on kronlora's own pool, on its first thread: that thread works in every parallel
//! section itself and shares it with the others by work stealing.
//!
//! Always the same thread, so that every step allocates from the same glibc arena: a job
//! handed to whichever worker is free (`rayon::ThreadPool::install`, candle's
//! `Device::with_context`) lands on either thread, and each thread's arena then keeps its own
//! copy of a step's freed buffers (a MiniLM run peaked at 1.3 GiB instead of 0.76).
//!
//! Thread-local state does not follow `f` onto the pool, and a pool thread waiting inside one
//! caller's job may run another caller's job (two models in one process, tests in parallel),
//! so every job sets the grad mode it needs on the thread that runs it: `tracked_on` for
//! training, `no_grad_on` for inference (and carries the caller's `ops::with_composed_ops` and
//! adapter selection). WASM has no threads; there `f` runs where it is, as
//! it does if the pool's threads cannot be started.

use std::sync::{Mutex, OnceLock};

use candle_core::Device;

use crate::grad_mode::with_grad_mode;
use crate::models::{adapter_selection, with_adapter_selection};
use crate::ops::{composed_ops, with_composed_ops};

fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(candle_core::utils::get_num_threads())
            .thread_name(|i| format!("kronlora-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// Run `f` on the compute pool's first thread (right here on WASM, on a GPU device, or when
/// already on the pool).
fn on_compute_pool<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    if cfg!(target_arch = "wasm32") || !device.is_cpu() {
        return f();
    }
    let Some(pool) = pool() else { return f() };
    if pool.current_thread_index().is_some() {
        return f();
    }
    let job = Mutex::new(Some(f));
    let out = Mutex::new(None);
    pool.broadcast(|ctx| {
        if ctx.index() == 0 {
            let f = job.lock().unwrap_or_else(|e| e.into_inner()).take().expect("run once");
            *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(f());
        }
    });
    out.into_inner().unwrap_or_else(|e| e.into_inner()).expect("the job ran on thread 0")
}

/// `f` on the compute pool with parameters tracked: a training step.
pub fn tracked_on<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    let (composed, selection) = (composed_ops(), adapter_selection());
    on_compute_pool(device, || {
        with_composed_ops(composed, || with_adapter_selection(selection, || with_grad_mode(true, f)))
    })
}

/// `f` on the compute pool with parameters detached: inference and evaluation.
pub fn no_grad_on<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    let (composed, selection) = (composed_ops(), adapter_selection());
    on_compute_pool(device, || {
        with_composed_ops(composed, || with_adapter_selection(selection, || with_grad_mode(false, f)))
    })
}
