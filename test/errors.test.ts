import { describe, expect, it } from 'vitest';
import { KronLoraError } from 'kronlora';
import { backends, on } from './backends.js';

/** Expect `fn` to throw a KronLoraError with this code and a message matching `message`. */
function expectError(fn: () => unknown, code: string, message: RegExp) {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught, 'expected an error').toBeInstanceOf(KronLoraError);
  expect(caught).toBeInstanceOf(Error);
  expect((caught as KronLoraError).code).toBe(code);
  expect((caught as KronLoraError).message).toMatch(message);
}

describe.each(backends)('bad input on %s gives documented errors', (name) => {
  const { KronLoraLinear, LoraLinear, factorization } = on(name);
  const base = { inFeatures: 12, outFeatures: 8, rank: 2, alpha: 4 };

  it('wrong array lengths', () => {
    const layer = new KronLoraLinear(base);
    expectError(() => layer.forward(new Float32Array(11), 1), 'ERR_SHAPE_MISMATCH', /expected 1 × 12 = 12 values, got 11/);
    expectError(() => layer.gradients(new Float32Array(12), 1, new Float32Array(3)), 'ERR_SHAPE_MISMATCH', /gradOutput.*expected 1 × 8/);
    expectError(() => new KronLoraLinear({ ...base, weight: new Float32Array(95) }), 'ERR_SHAPE_MISMATCH', /weight must hold .* 96 values/);
    expectError(
      () => new LoraLinear({ ...base, weight: new Float32Array(96), bias: new Float32Array(3) }),
      'ERR_SHAPE_MISMATCH',
      /bias must hold outFeatures = 8/,
    );
    expectError(
      () => layer.setParameters({ A: { shape: [2, 2], data: new Float32Array(4) } }),
      'ERR_SHAPE_MISMATCH',
      /`A` must have shape \[4, 2\]/,
    );
  });

  it('dimensions that do not factor', () => {
    expectError(
      () => new KronLoraLinear({ ...base, kronIn: 5, name: 'encoder.0.query' }),
      'ERR_FACTORIZATION',
      /layer `encoder.0.query`: kronIn = 5 does not divide inFeatures = 12.*4 or 6/,
    );
    expectError(
      () => new KronLoraLinear({ ...base, kronOut: 3 }),
      'ERR_FACTORIZATION',
      /kronOut = 3 does not divide outFeatures = 8.*2 or 4/,
    );
    expectError(() => new LoraLinear({ ...base, kronIn: 2 } as never), 'ERR_INVALID_OPTION', /Kron-LoRA only/);
  });

  it('zero or negative sizes', () => {
    expectError(
      () => new KronLoraLinear({ ...base, inFeatures: 0 }),
      'ERR_INVALID_OPTION',
      /`inFeatures` must be a positive integer, got 0/,
    );
    expectError(
      () => new LoraLinear({ ...base, outFeatures: -8 }),
      'ERR_INVALID_OPTION',
      /`outFeatures` must be a positive integer, got -8/,
    );
    expectError(() => new KronLoraLinear({ ...base, rank: 0 }), 'ERR_INVALID_OPTION', /`rank` must be a positive integer/);
    expectError(() => new KronLoraLinear({ ...base, rank: 1.5 }), 'ERR_INVALID_OPTION', /`rank` must be a positive integer, got 1.5/);
    expectError(() => new KronLoraLinear(base).forward(new Float32Array(0), 0), 'ERR_INVALID_OPTION', /rows must be a positive integer/);
    expectError(() => factorization(0, 2), 'ERR_INVALID_OPTION', /dim must be a positive integer/);
    // Sizes that could not be allocated are refused instead of aborting the process.
    expectError(() => new KronLoraLinear({ ...base, inFeatures: 1e12 }), 'ERR_INVALID_OPTION', /larger than the supported maximum/);
    expectError(
      () => new LoraLinear({ ...base, inFeatures: 1 << 24, outFeatures: 1 << 24, rank: 4096 }),
      'ERR_INVALID_OPTION',
      /needs up to \d+ adapter parameters/,
    );
    expectError(() => factorization(12, 0), 'ERR_INVALID_OPTION', /factor must be a positive integer or -1/);
  });

  it('NaN in the input, the options or the weights', () => {
    const layer = new KronLoraLinear(base);
    const x = new Float32Array(12);
    x[3] = NaN;
    expectError(() => layer.forward(x, 1), 'ERR_NON_FINITE', /index 3 is NaN/);
    expectError(() => new KronLoraLinear({ ...base, alpha: NaN }), 'ERR_INVALID_OPTION', /`alpha` must be a number/);
    const w = new Float32Array(96);
    w[0] = Infinity;
    expectError(() => new LoraLinear({ ...base, weight: w }), 'ERR_NON_FINITE', /weight: value at index 0 is inf/);
  });

  it('unknown option names and wrong types', () => {
    expectError(() => new KronLoraLinear({ ...base, rnak: 4 } as never), 'ERR_INVALID_OPTION', /unknown field `rnak`, expected one of/);
    expectError(
      () => new KronLoraLinear({ inFeatures: 12, outFeatures: 8, alpha: 1 } as never),
      'ERR_INVALID_OPTION',
      /`rank` is required/,
    );
    expectError(() => new KronLoraLinear(null as never), 'ERR_INVALID_ARG_TYPE', /options must be an object/);
    expectError(() => new KronLoraLinear(base).forward([1, 2] as never, 1), 'ERR_INVALID_ARG_TYPE', /x must be a Float32Array/);
    expectError(() => new KronLoraLinear({ ...base, weight: [1] as never }), 'ERR_INVALID_ARG_TYPE', /weight must be a Float32Array/);
    expectError(
      () => new KronLoraLinear(base).setParameters({ C: { shape: [1], data: new Float32Array(1) } }),
      'ERR_INVALID_OPTION',
      /no parameter `C`; its parameters are A, B1, B2/,
    );
  });

  it('calls that do not fit the state', () => {
    const noWeight = new KronLoraLinear(base);
    expectError(() => noWeight.merge(), 'ERR_INVALID_STATE', /no base weight to merge into/);
    expectError(() => noWeight.unmerge(), 'ERR_INVALID_STATE', /not merged/);
    expectError(() => new LoraLinear({ ...base, bias: new Float32Array(8) }), 'ERR_INVALID_OPTION', /bias needs a base weight/);
    const layer = new LoraLinear({ ...base, weight: new Float32Array(96) });
    layer.merge();
    expectError(() => layer.merge(), 'ERR_INVALID_STATE', /already merged/);
    expectError(() => layer.setParameters({}), 'ERR_INVALID_STATE', /unmerge it before setting its parameters/);
  });

  it('a failed call leaves the layer usable and unchanged', () => {
    const layer = new KronLoraLinear(base);
    const before = layer.getParameters();
    expectError(
      () => layer.setParameters({ B2: { shape: [2, 6], data: new Float32Array(12) }, A: { shape: [9], data: new Float32Array(9) } }),
      'ERR_SHAPE_MISMATCH',
      /`A`/,
    );
    expect(layer.getParameters()).toEqual(before);
    expect(layer.forward(new Float32Array(12).fill(1), 1)).toHaveLength(8);
  });
});
