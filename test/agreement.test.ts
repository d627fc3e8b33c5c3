import { describe, expect, it } from 'vitest';
import { on } from './backends.js';
import { maxRelError, randomArray, rng } from './reference.js';

describe('native and WASM agree', () => {
  const native = on('native');
  const wasm = on('wasm');

  it.each([
    ['kron-lora', 768, 768],
    ['kron-lora', 64, 96],
    ['lora', 64, 96],
  ] as const)('%s %i×%i: same seed gives the same factors, outputs and gradients to 1e-5', (kind, inp, out) => {
    const next = rng(42);
    const weight = randomArray(inp * out, next);
    const options = { inFeatures: inp, outFeatures: out, rank: 8, alpha: 16, seed: 7, weight };
    const make = (api: typeof native) => (kind === 'kron-lora' ? new api.KronLoraLinear(options) : new api.LoraLinear(options));
    const [a, b] = [make(native), make(wasm)];
    expect(a.backend).toBe('native');
    expect(b.backend).toBe('wasm');
    const pa = a.getParameters();
    expect(b.getParameters()).toEqual(pa);
    // Give the zero factor values so that the update path is exercised.
    const zeroName = kind === 'kron-lora' ? 'B1' : 'lora_B';
    const z = { shape: pa[zeroName].shape, data: randomArray(pa[zeroName].data.length, next) };
    a.setParameters({ [zeroName]: z });
    b.setParameters({ [zeroName]: z });
    const rows = 16;
    const x = randomArray(rows * inp, next);
    expect(maxRelError(b.forward(x, rows), a.forward(x, rows))).toBeLessThan(1e-5);
    const g = randomArray(rows * out, next);
    const [ga, gb] = [a.gradients(x, rows, g), b.gradients(x, rows, g)];
    for (const key of Object.keys(ga)) expect(maxRelError(gb[key].data, ga[key].data)).toBeLessThan(1e-5);
    expect(maxRelError(b.deltaWeight().data, a.deltaWeight().data)).toBeLessThan(1e-5);
  });
});
