//! Inference without an autograd graph. candle records an op graph whenever a `Var` takes
//! part, and every intermediate activation stays alive until the output is dropped; for
//! inference and evaluation that multiplies peak memory for nothing. Under
//! `with_grad_mode(false, ..)` (`compute_pool::no_grad_on`) the trainable parameters are read
//! detached, so nothing downstream is recorded.

use std::cell::Cell;

use candle_core::{Tensor, Var};

thread_local! {
    static NO_GRAD: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` with parameters read tracked (`true`) or detached (`false`) on this thread, and
/// restore the mode after. A compute-pool thread that is waiting inside one caller's job may
/// run another caller's whole job (rayon work stealing), so each job sets its own mode rather
/// than inheriting whatever the thread last had.
pub fn with_grad_mode<T>(tracked: bool, f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            NO_GRAD.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(NO_GRAD.with(|g| g.replace(!tracked)));
    f()
}

/// A trainable parameter as forward passes should use it: tracked, or detached under
/// `with_grad_mode(false, ..)`.
pub fn param(v: &Var) -> Tensor {
    if NO_GRAD.with(Cell::get) {
        v.as_tensor().detach()
    } else {
        v.as_tensor().clone()
    }
}
