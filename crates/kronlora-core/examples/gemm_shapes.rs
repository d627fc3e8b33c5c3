//! GFLOP/s of candle's CPU matmul (the `gemm` crate) on the products of a MiniLM training step
//! (16 × 128 tokens), for comparison with a tuned BLAS (`bench/gemm_shapes.py` times PyTorch's on
//! the same shapes). Prints one JSON line per shape.
//!   RAYON_NUM_THREADS=2 cargo run --release --example gemm_shapes
use std::time::Instant;

use candle_core::{Device, Tensor};

fn main() -> candle_core::Result<()> {
    // (what, m, k, n, whether the right operand is read transposed as a weight `[n, k]` is)
    let shapes = [
        ("q/k/v/o forward", 2048, 384, 384, true),
        ("up forward", 2048, 384, 1536, true),
        ("down forward", 2048, 1536, 384, true),
        ("q/k/v/o input grad", 2048, 384, 384, false),
        ("up input grad", 2048, 1536, 384, false),
        ("down input grad", 2048, 384, 1536, false),
        ("LoRA B grad (k = tokens)", 384, 2048, 16, false),
    ];
    let dev = Device::Cpu;
    for (what, m, k, n, transposed) in shapes {
        let a = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let b =
            if transposed { Tensor::randn(0f32, 1.0, (n, k), &dev)? } else { Tensor::randn(0f32, 1.0, (k, n), &dev)? };
        let run = || if transposed { a.matmul(&b.t()?) } else { a.matmul(&b) };
        for _ in 0..3 {
            run()?;
        }
        let mut times: Vec<f64> = (0..15)
            .map(|_| {
                let t0 = Instant::now();
                run().map(|_| t0.elapsed().as_secs_f64())
            })
            .collect::<candle_core::Result<_>>()?;
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let gflops = 2.0 * (m * k * n) as f64 / median / 1e9;
        println!(
            "{{\"what\":\"{what}\",\"m\":{m},\"k\":{k},\"n\":{n},\"ms\":{:.3},\"gflops\":{gflops:.1}}}",
            median * 1e3
        );
    }
    Ok(())
}
