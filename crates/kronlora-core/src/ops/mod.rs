//! Custom candle operations with their own backward passes. They know no model or adapter.

mod frozen_matmul;
mod kron;

pub use frozen_matmul::frozen_matmul;
pub use kron::kron;
