// Naive reference maths in float64 for the tests, independent of the Rust core.

export function rng(seed: number): () => number {
  // mulberry32: uniform in [-1, 1)
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  };
}

export function randomArray(n: number, next: () => number): Float32Array {
  return Float32Array.from({ length: n }, next);
}

/** a [p, q] · b [q, r] */
export function matmul(a: ArrayLike<number>, b: ArrayLike<number>, p: number, q: number, r: number): Float64Array {
  const out = new Float64Array(p * r);
  for (let i = 0; i < p; i++) for (let k = 0; k < q; k++) for (let j = 0; j < r; j++) out[i * r + j] += a[i * q + k] * b[k * r + j];
  return out;
}

/** kron(a [p, q], b [m, n]) → [p·m, q·n] */
export function kron(a: ArrayLike<number>, b: ArrayLike<number>, p: number, q: number, m: number, n: number): Float64Array {
  const out = new Float64Array(p * m * q * n);
  for (let i = 0; i < p; i++)
    for (let j = 0; j < q; j++)
      for (let k = 0; k < m; k++) for (let l = 0; l < n; l++) out[(i * m + k) * (q * n) + j * n + l] = a[i * q + j] * b[k * n + l];
  return out;
}

/** y = x·(W + ΔW)ᵀ + b */
export function linear(
  x: ArrayLike<number>,
  w: ArrayLike<number> | undefined,
  delta: ArrayLike<number>,
  b: ArrayLike<number> | undefined,
  rows: number,
  inp: number,
  out: number,
): Float64Array {
  const y = new Float64Array(rows * out);
  for (let r = 0; r < rows; r++)
    for (let o = 0; o < out; o++) {
      let acc = b ? b[o] : 0;
      for (let i = 0; i < inp; i++) acc += x[r * inp + i] * ((w ? w[o * inp + i] : 0) + delta[o * inp + i]);
      y[r * out + o] = acc;
    }
  return y;
}

/** Max |got - want| relative to max(1, max |want|). */
export function maxRelError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) throw new Error(`length ${got.length} != ${want.length}`);
  let scale = 1;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  let err = 0;
  for (let i = 0; i < got.length; i++) err = Math.max(err, Math.abs(got[i] - want[i]));
  return err / scale;
}
