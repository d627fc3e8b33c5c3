// A seeded Float32Array of uniform values in [-scale/2, scale/2): the benchmark
// need repeatable inputs, not statistical quality (LCG, Numerical Recipes constants).
export function randomArray(n, seed, scale = 0.2) {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 4294967296 - 0.5) * scale;
  }
  return out;
}
