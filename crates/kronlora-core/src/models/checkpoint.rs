//! Gradient checkpointing per transformer block (`gradientCheckpointing: true`): a block's
//! forward runs without an autograd graph, so none of its intermediate activations stay alive
//! until backward; only its input and output are kept, joined by one graph node whose backward
//! runs the block again from that input (this time recorded) and backpropagates through it.
//!
//! candle's custom ops give a gradient for their inputs only, while the recomputed block also
//! yields gradients for the adapter parameters inside it. The trainable parameters' ones are
//! summed here, per thread, as each block's backward ends (the rest of that block's gradients
//! are dropped at once: kept, they would cost more than the activations saved), and the trainer
//! adds them to the ones the outer backward returns (`take_parameter_grads`).
//! Everything happens on the thread that runs the training step: the forward, the outer
//! backward that calls `bwd`, and the collection after it.
//!
//! Dropout masks are a pure function of the step's seed and the module, so the recomputed
//! block draws the masks of the first pass; the result is the plain backward's to rounding.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor, Var};

use crate::error::Result;
use crate::grad_mode::with_grad_mode;
use crate::ops::contiguous_f32;

/// The parameters whose gradients recomputed blocks hand over, and their sums so far.
struct Collected {
    parameters: Vec<Var>,
    sums: Vec<Option<Tensor>>,
}

thread_local! {
    static COLLECTED: RefCell<Option<Collected>> = const { RefCell::new(None) };
}

/// Run `f` with blocks checkpointed on this thread when `parameters` is Some: the variables
/// whose gradients to collect from recomputed blocks. The previous mode is restored after.
pub fn with_checkpointing<T>(parameters: Option<Vec<Var>>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Collected>);
    impl Drop for Restore {
        fn drop(&mut self) {
            COLLECTED.with(|c| *c.borrow_mut() = self.0.take());
        }
    }
    let collected = parameters.map(|parameters| Collected { sums: vec![None; parameters.len()], parameters });
    let _restore = Restore(COLLECTED.with(|c| c.replace(collected)));
    f()
}

/// Each parameter's gradient summed over the blocks recomputed since the last call (in the
/// order given to `with_checkpointing`; None where no block used it), and the sums reset.
pub fn take_parameter_grads() -> Vec<Option<Tensor>> {
    COLLECTED.with(|c| match c.borrow_mut().as_mut() {
        Some(c) => c.sums.iter_mut().map(Option::take).collect(),
        None => Vec::new(),
    })
}

/// Add `gradient` to a running sum (None: nothing summed yet). Detached, so that the sum does
/// not keep the graph that produced it alive. The trainer sums micro-batches with it too.
pub fn add_gradient(sum: &mut Option<Tensor>, gradient: &Tensor) -> candle_core::Result<()> {
    let g = gradient.detach();
    *sum = Some(match sum.take() {
        Some(s) => (s + g)?,
        None => g,
    });
    Ok(())
}

type Block = Arc<dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync>;

/// Whether blocks are checkpointed on this thread now (a model then calls `checkpointed`).
pub fn is_enabled() -> bool {
    COLLECTED.with(|c| c.borrow().is_some())
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
        COLLECTED.with(|c| -> candle_core::Result<()> {
            let mut c = c.borrow_mut();
            let Some(c) = c.as_mut() else { return Ok(()) };
            for (p, sum) in c.parameters.iter().zip(c.sums.iter_mut()) {
                if let Some(g) = grads.get(p.as_tensor()) {
                    add_gradient(sum, g)?;
                }
            }
            Ok(())
        })?;
        Ok(input_grad)
    }
}
