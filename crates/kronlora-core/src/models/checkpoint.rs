//! Gradient checkpointing per transformer block (`gradientCheckpointing: true`): a block's
//! forward runs without an autograd graph, so none of its intermediate activations stay alive
//! until backward; only its input and output are kept, joined by one graph node whose backward
//! runs the block again from that input (this time recorded) and backpropagates through it.
//!
//! candle's custom ops give a gradient for their inputs only, while the recomputed block also
//! yields gradients for the adapter parameters inside it. Those are collected here, per thread,
//! and the trainer adds them to the ones the outer backward returns (`take_parameter_grads`).
//! Everything happens on the thread that runs the training step: the forward, the outer
//! backward that calls `bwd`, and the collection after it.
//!
//! Dropout masks are a pure function of the step's seed and the module, so the recomputed
//! block draws the masks of the first pass; the result is the plain backward's to rounding.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor, Var};

use crate::error::Result;
use crate::grad_mode::with_grad_mode;
use crate::ops::contiguous_f32;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    static PARAMETER_GRADS: RefCell<Vec<GradStore>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` with blocks checkpointed (`true`) or not on this thread; the mode is restored after.
pub fn with_checkpointing<T>(enabled: bool, f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ENABLED.with(|e| e.set(self.0));
        }
    }
    let _restore = Restore(ENABLED.with(|e| e.replace(enabled)));
    f()
}

/// The gradient stores of every block recomputed since the last call: sum each variable's
/// entries across them (and the outer backward's) for its full gradient.
pub fn take_parameter_grads() -> Vec<GradStore> {
    PARAMETER_GRADS.with(|g| std::mem::take(&mut *g.borrow_mut()))
}

type Block = Arc<dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync>;

/// Whether blocks are checkpointed on this thread now (a model then calls `checkpointed`).
pub fn is_enabled() -> bool {
    ENABLED.with(Cell::get)
}

/// `block(x)` as a checkpointed node; `block` owns what it needs (a clone of the layer: its
/// tensors and variables are shared handles, not copies).
pub fn checkpointed(x: &Tensor, block: impl Fn(&Tensor) -> Result<Tensor> + Send + Sync + 'static) -> Result<Tensor> {
    let out = with_grad_mode(false, || block(&x.detach()))?;
    // The node must be recorded even for the first block, whose input (the embeddings) depends
    // on no variable: a variable input makes candle record it.
    let input = if x.track_op() { x.clone() } else { Var::from_tensor(x)?.as_tensor().clone() };
    let node = Recompute { output: Mutex::new(Some(out)), block: Arc::new(block) };
    Ok(input.apply_op1_arc(Arc::new(Box::new(node)))?)
}

/// The graph node of a checkpointed block: its forward hands over the output computed without
/// a graph (held here only until then, so the graph keeps one copy); its backward recomputes
/// the block.
struct Recompute {
    output: Mutex<Option<Tensor>>,
    block: Block,
}

impl Recompute {
    fn take_output(&self) -> candle_core::Result<Tensor> {
        let taken = self.output.lock().ok().and_then(|mut o| o.take());
        taken.ok_or_else(|| candle_core::Error::Msg("a checkpointed block's output was taken twice".into()))
    }
}

impl CustomOp1 for Recompute {
    fn name(&self) -> &'static str {
        "checkpointed-block"
    }

    fn cpu_fwd(&self, _x: &CpuStorage, _layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = self.take_output()?;
        let (storage, layout) = out.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else { candle_core::bail!("checkpointed block: output not on the CPU") };
        let values = match layout.contiguous_offsets() {
            Some(_) => contiguous_f32(cpu, layout, "checkpointed block")?.to_vec(),
            None => out.flatten_all()?.to_vec1::<f32>()?,
        };
        Ok((CpuStorage::F32(values), out.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _x: &candle_core::CudaStorage,
        _layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        // A fresh storage holding exactly the output, then handed over as it is.
        let out = self.take_output()?.force_contiguous()?;
        let (storage, layout) = out.storage_and_layout();
        let Storage::Cuda(cuda) = &*storage else { candle_core::bail!("checkpointed block: output not on CUDA") };
        Ok((cuda.try_clone(layout)?, out.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let input = Var::from_tensor(&x.detach())?;
        let recomputed = with_grad_mode(true, || (self.block)(input.as_tensor()))
            .map_err(|e| candle_core::Error::Msg(format!("recomputing a checkpointed block: {e}")))?;
        let grads = (recomputed * grad.detach())?.sum_all()?.backward()?;
        let input_grad = grads.get(input.as_tensor()).cloned();
        PARAMETER_GRADS.with(|g| g.borrow_mut().push(grads));
        Ok(input_grad)
    }
}
