"""GFLOP/s of PyTorch's CPU matmul on the products of a MiniLM training step (the shapes of
crates/kronlora-core/examples/gemm_shapes.rs), one JSON line per shape and library.
    python bench/gemm_shapes.py           (threads: torch.set_num_threads(2))
    python bench/gemm_shapes.py --numpy   (numpy's BLAS too, on 2 threads: its wheels bundle
                                           OpenBLAS, a candidate BLAS for the frozen base)"""
import json
import os
import sys
import time

# OpenBLAS reads its thread count when it loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
import numpy  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)
SHAPES = [
    ("q/k/v/o forward", 2048, 384, 384, True),
    ("up forward", 2048, 384, 1536, True),
    ("down forward", 2048, 1536, 384, True),
    ("q/k/v/o input grad", 2048, 384, 384, False),
    ("up input grad", 2048, 1536, 384, False),
    ("down input grad", 2048, 384, 1536, False),
    ("LoRA B grad (k = tokens)", 384, 2048, 16, False),
    ("LoRA A grad (k = tokens)", 16, 2048, 384, False),
    ("Kron B1 grad (k = 4 · tokens)", 96, 8192, 8, False),
    ("Kron B2 grad (k = 2 · tokens)", 8, 4096, 192, False),
    ("LoRA update forward", 2048, 16, 384, True),
    ("Kron update forward", 8192, 8, 96, True),
    ("LoRA left grad", 2048, 384, 16, False),
    ("Kron left grad", 8192, 96, 8, False),
    ("LoRA input grad via A", 2048, 16, 384, False),
    ("Kron input grad via B2", 4096, 8, 192, False),
    ("LoRA first product", 2048, 384, 16, True),
    ("Kron first product", 4096, 192, 8, True),
]
def report(library, what, m, k, n, run):
    for _ in range(3):
        run()
    times = []
    for _ in range(15):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    median = sorted(times)[len(times) // 2]
    line = {"library": library, "what": what, "m": m, "k": k, "n": n, "ms": round(median * 1e3, 3)}
    print(json.dumps({**line, "gflops": round(2 * m * k * n / median / 1e9, 1)}, ensure_ascii=False))


for what, m, k, n, transposed in SHAPES:
    a = torch.randn(m, k)
    b = torch.randn(n, k) if transposed else torch.randn(k, n)
    report("torch", what, m, k, n, (lambda: a @ b.t()) if transposed else (lambda: a @ b))
    if "--numpy" in sys.argv:
        an, bn = a.numpy(), b.numpy()
        report(f"numpy {numpy.__version__}", what, m, k, n, (lambda: an @ bn.T) if transposed else (lambda: an @ bn))
