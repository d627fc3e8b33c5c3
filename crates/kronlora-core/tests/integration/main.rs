//! kronlora-core's integration tests, in one binary: each test file used to be its own
//! binary, and linking candle into ten of them (with the release profile's LTO, shared with
//! the addon build) dominated `npm test`'s build time.

mod json_api;
mod reference;
mod tiny;

mod bert;
mod checkpointing;
mod cli_setup;
mod device;
mod device_parity;
mod export;
mod file_safety;
mod fused;
mod fuzz;
mod layers;
mod llama;
mod lm_training;
mod loaders;
mod matmul_t;
mod multi_adapter;
mod parity;
mod quantized;
mod train;
mod training;
mod untrusted_input;
