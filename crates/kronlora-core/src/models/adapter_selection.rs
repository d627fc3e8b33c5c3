//! Which adapters a forward pass uses, for one call: `classify(texts, { adapter: 'b' })` runs
//! adapter `b` alone without changing the model's active set (another caller may be using the
//! model at the same time). Thread-local like the grad mode, and carried onto the compute pool
//! by `compute_pool` the same way.

use std::cell::RefCell;
use std::sync::Arc;

/// Adapter names with their weights (the update of each is scaled by its weight).
pub type AdapterSelection = Arc<Vec<(String, f64)>>;

thread_local! {
    static SELECTION: RefCell<Option<AdapterSelection>> = const { RefCell::new(None) };
}

/// Run `f` with `selection` (None: each layer's own active adapters) on this thread.
pub fn with_adapter_selection<T>(selection: Option<AdapterSelection>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<AdapterSelection>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SELECTION.with(|s| *s.borrow_mut() = previous);
        }
    }
    let _restore = Restore(SELECTION.with(|s| s.replace(selection)));
    f()
}

/// The selection in force on this thread, if any.
pub fn adapter_selection() -> Option<AdapterSelection> {
    SELECTION.with(|s| s.borrow().clone())
}
