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
        ("LoRA A grad (k = tokens)", 16, 2048, 384, false),
        // Kron-LoRA (d_A1 = 2, d_A2 = 4, r = 8) on a 384 → 384 layer: its factor gradients
        // reduce over 2 or 4 rows per token into outputs of a few hundred elements.
        ("Kron B1 grad (k = 4 · tokens)", 96, 8192, 8, false),
        ("Kron B2 grad (k = 2 · tokens)", 8, 4096, 192, false),
        ("LoRA update forward", 2048, 16, 384, true),
        ("Kron update forward", 8192, 8, 96, true),
        ("LoRA left grad", 2048, 384, 16, false),
        ("Kron left grad", 8192, 96, 8, false),
        ("LoRA input grad via A", 2048, 16, 384, false),
        ("Kron input grad via B2", 4096, 8, 192, false),
        ("LoRA first product", 2048, 384, 16, true),
        ("Kron first product", 4096, 192, 8, true),
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
