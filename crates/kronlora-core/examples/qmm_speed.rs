//! Why the quantised base multiplies many rows from dequantised slabs: milliseconds (median of 5)
//! of f32 gemm, candle's quantised matmul and a whole-tensor dequantisation, for SmolLM2-135M's
//! projection shapes at a training batch (2048 rows) and a generation step (1 row).
//!   RAYON_NUM_THREADS=2 cargo run --release --example qmm_speed
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use std::time::Instant;
/// Median seconds of 5 runs after a warm-up.
fn time<F: FnMut()>(mut f: F) -> f64 {
    f();
    let mut v: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[2]
}
fn main() -> candle_core::Result<()> {
    let d = Device::Cpu;
    for (m, k, n) in
        [(2048usize, 576usize, 576usize), (2048, 576, 1536), (2048, 1536, 576), (1, 576, 1536), (2048, 576, 8192)]
    {
        let x = Tensor::randn(0f32, 1., (m, k), &d)?;
        let w = Tensor::randn(0f32, 0.05, (n, k), &d)?;
        let tf = time(|| {
            x.matmul(&w.t().unwrap()).unwrap();
        });
        let mut line = format!("m{m} k{k} n{n}: f32 {:.2} ms", tf * 1e3);
        for dt in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q6K] {
            if k % dt.block_size() != 0 {
                continue;
            }
            let q = QTensor::quantize(&w, dt)?;
            let qm = QMatMul::from_qtensor(q)?;
            let tq = time(|| {
                qm.forward(&x).unwrap();
            });
            let q2 = QTensor::quantize(&w, dt)?;
            let tdq = time(|| {
                q2.dequantize(&d).unwrap();
            });
            line += &format!(" | {dt:?} q {:.2} ms deq {:.2} ms", tq * 1e3, tdq * 1e3);
        }
        println!("{line}");
    }
    Ok(())
}
