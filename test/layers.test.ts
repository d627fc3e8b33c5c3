import { describe, expect, it } from 'vitest';
import { backends, on } from './backends.js';
import { kron, linear, matmul, maxRelError, randomArray, rng } from './reference.js';

// [inFeatures, outFeatures, rank, kronIn (d_A1), kronOut (d_A2)]:
// square, non-square, d_A1 = 1, d_A2 = 1, rank larger than a factor (d_B1 = 4 < r = 5).
const SHAPES: [number, number, number, number, number][] = [
  [12, 12, 2, 2, 3],
  [12, 20, 3, 3, 4],
  [10, 6, 2, 1, 2],
  [8, 9, 2, 2, 1],
  [8, 12, 5, 2, 4],
];

describe.each(backends)('Kron-LoRA and LoRA layers on %s', (name) => {
  const { KronLoraLinear, LoraLinear } = on(name);

  /** A layer with random weight, bias and non-zero factors, plus the naive ΔW. */
  function kronCase([inp, out, rank, dA1, dA2]: (typeof SHAPES)[number], seed: number) {
    const next = rng(seed);
    const weight = randomArray(inp * out, next);
    const bias = randomArray(out, next);
    const alpha = 2 * rank;
    const layer = new KronLoraLinear({ inFeatures: inp, outFeatures: out, rank, alpha, kronIn: dA1, kronOut: dA2, seed, weight, bias });
    const [dB1, dB2] = [inp / dA1, out / dA2];
    const A = randomArray(dA2 * dA1, next);
    const B1 = randomArray(dB2 * rank, next);
    const B2 = randomArray(rank * dB1, next);
    layer.setParameters({ A: { shape: [dA2, dA1], data: A }, B1: { shape: [dB2, rank], data: B1 }, B2: { shape: [rank, dB1], data: B2 } });
    const delta = kron(A, matmul(B1, B2, dB2, rank, dB1), dA2, dA1, dB2, dB1).map((v) => v * (alpha / rank));
    return { layer, weight, bias, delta, next };
  }

  it.each(SHAPES)('forward equals x·(W + s·kron(A, B1·B2))ᵀ + b for %i×%i r=%i (%i, %i)', (...shape) => {
    const [inp, out] = shape;
    const { layer, weight, bias, delta, next } = kronCase(shape, 1);
    const rows = 5;
    const x = randomArray(rows * inp, next);
    const y = layer.forward(x, rows);
    expect(y).toBeInstanceOf(Float32Array);
    expect(maxRelError(y, linear(x, weight, delta, bias, rows, inp, out))).toBeLessThan(1e-5);
    expect(maxRelError(layer.deltaWeight().data, delta)).toBeLessThan(1e-6);
  });

  it.each(SHAPES)('gradients equal central finite differences for %i×%i r=%i (%i, %i)', (...shape) => {
    const [inp, out] = shape;
    const { layer, next } = kronCase(shape, 2);
    const rows = 3;
    const x = randomArray(rows * inp, next);
    const g = randomArray(rows * out, next);
    const loss = (xs: Float32Array) => layer.forward(xs, rows).reduce((s, y, i) => s + y * g[i], 0);
    const grads = layer.gradients(x, rows, g);
    expect(Object.keys(grads).sort()).toEqual(['A', 'B1', 'B2', 'x']);
    // The loss is linear in each single parameter: central differences are exact up to rounding.
    const h = 0.5;
    for (const [pname, p] of Object.entries(layer.getParameters())) {
      const numeric = p.data.map((v, i) => {
        const plus = p.data.slice();
        plus[i] = v + h;
        layer.setParameters({ [pname]: { shape: p.shape, data: plus } });
        const lp = loss(x);
        const minus = p.data.slice();
        minus[i] = v - h;
        layer.setParameters({ [pname]: { shape: p.shape, data: minus } });
        return (lp - loss(x)) / (2 * h);
      });
      layer.setParameters({ [pname]: p });
      expect(grads[pname].shape).toEqual(p.shape);
      expect(maxRelError(grads[pname].data, numeric)).toBeLessThan(2e-4);
    }
    const numericX = x.map((v, i) => {
      const xp = x.slice();
      xp[i] = v + h;
      const xm = x.slice();
      xm[i] = v - h;
      return (loss(xp) - loss(xm)) / (2 * h);
    });
    expect(maxRelError(grads.x.data, numericX)).toBeLessThan(2e-4);
  });

  it('merge then unmerge restores the weight exactly', () => {
    const { layer, weight, delta, next } = kronCase(SHAPES[1], 3);
    const rows = 4;
    const x = randomArray(rows * 12, next);
    const before = layer.forward(x, rows);
    layer.merge();
    expect(layer.merged).toBe(true);
    expect(
      maxRelError(
        layer.weight()!.data,
        Array.from(weight, (w, i) => w + delta[i]),
      ),
    ).toBeLessThan(1e-6);
    expect(maxRelError(layer.forward(x, rows), before)).toBeLessThan(1e-5);
    // Merged: only the input gradient, which equals the unmerged one.
    expect(Object.keys(layer.gradients(x, rows, new Float32Array(rows * 20).fill(1)))).toEqual(['x']);
    layer.unmerge();
    expect(layer.merged).toBe(false);
    expect(layer.weight()!.data).toEqual(weight);
  });

  it.each(SHAPES)('toLora() reproduces deltaWeight() for %i×%i r=%i (%i, %i)', (...shape) => {
    const [inp, out, rank, dA1] = shape;
    const { layer, weight, bias } = kronCase(shape, 4);
    const { loraA, loraB, rank: r, alpha } = layer.toLora();
    expect(r).toBe(dA1 * rank);
    expect(loraA.shape).toEqual([r, inp]);
    expect(loraB.shape).toEqual([out, r]);
    const viaLora = matmul(loraB.data, loraA.data, out, r, inp).map((v) => (v * alpha) / r);
    expect(maxRelError(layer.deltaWeight().data, viaLora)).toBeLessThan(1e-6);
    // And a plain LoraLinear loaded with the export computes the same forward.
    const lora = new LoraLinear({ inFeatures: inp, outFeatures: out, rank: r, alpha, weight, bias });
    lora.setParameters({ lora_A: loraA, lora_B: loraB });
    const x = randomArray(2 * inp, rng(9));
    expect(maxRelError(lora.forward(x, 2), layer.forward(x, 2))).toBeLessThan(1e-5);
  });

  it('counts trainable parameters by the formula', () => {
    const k = new KronLoraLinear({ inFeatures: 768, outFeatures: 768, rank: 8, alpha: 16, kronIn: 2, kronOut: 4 });
    expect(k.numTrainableParameters).toBe(2 * 4 + 8 * (384 + 192));
    const l = new LoraLinear({ inFeatures: 768, outFeatures: 768, rank: 16, alpha: 32 });
    expect(l.numTrainableParameters).toBe(16 * (768 + 768));
    // Fresh adapters start at ΔW = 0: B1 / lora_B are zeros.
    expect(k.getParameters().B1.data.every((v) => v === 0)).toBe(true);
    expect(l.getParameters().lora_B.data.every((v) => v === 0)).toBe(true);
  });

  it('LoRA forward and gradients match naive maths (rsLoRA scale)', () => {
    const [inp, out, rank] = [10, 7, 3];
    const next = rng(5);
    const weight = randomArray(inp * out, next);
    const layer = new LoraLinear({ inFeatures: inp, outFeatures: out, rank, alpha: 6, useRslora: true, weight });
    const B = randomArray(out * rank, next);
    layer.setParameters({ lora_B: { shape: [out, rank], data: B } });
    const A = layer.getParameters().lora_A.data;
    const s = 6 / Math.sqrt(rank);
    const delta = matmul(B, A, out, rank, inp).map((v) => v * s);
    const rows = 4;
    const x = randomArray(rows * inp, next);
    expect(maxRelError(layer.forward(x, rows), linear(x, weight, delta, undefined, rows, inp, out))).toBeLessThan(1e-5);
    // dL/dA = s·Bᵀ gᵀ x for L = sum(y ⊙ g)
    const g = randomArray(rows * out, next);
    const gT = Float64Array.from({ length: out * rows }, (_, i) => g[(i % rows) * out + Math.floor(i / rows)]);
    const BT = Float64Array.from({ length: rank * out }, (_, i) => B[(i % out) * rank + Math.floor(i / out)]);
    const want = matmul(matmul(BT, gT, rank, out, rows), x, rank, rows, inp).map((v) => v * s);
    expect(maxRelError(layer.gradients(x, rows, g).lora_A.data, want)).toBeLessThan(1e-5);
  });

  it('factorization follows LyCORIS', () => {
    const { factorization } = on(name);
    expect(factorization(768, 2)).toEqual([2, 384]);
    expect(factorization(4096, 20)).toEqual([16, 256]);
    expect(factorization(32000, 20)).toEqual([20, 1600]);
    expect(factorization(127, 4)).toEqual([1, 127]);
    expect(factorization(4096)).toEqual([64, 64]);
  });
});
