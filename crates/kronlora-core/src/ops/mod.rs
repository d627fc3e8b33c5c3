//! Custom candle operations with their own backward passes. They know no model or adapter.

mod kron;
mod matmul_t;

pub use kron::kron;
pub use matmul_t::{frozen_matmul, matmul_t};
