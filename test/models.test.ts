import { readFileSync, writeFileSync, mkdtempSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KronLoraError } from 'kronlora';
import { backends, on } from './backends.js';
import { maxRelError } from './reference.js';
import { BERT, LLAMA, tinyBertDir, tinyLlamaGguf } from './tiny-models.js';

const bertDir = tinyBertDir(1);
const llamaFile = tinyLlamaGguf(2);
const texts = ['the movie was great!', 'a bad plot, not fun.', 'film'];

/** Kron-LoRA parameters of one [out, in] projection (the spec's formula). */
const kronCount = (inp: number, out: number, r: number, a1: number, a2: number) => a1 * a2 + r * (inp / a1 + out / a2);

async function rejectsWith(promise: Promise<unknown>, code: string, message: RegExp) {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, 'expected a rejection').toBeInstanceOf(KronLoraError);
  expect((error as KronLoraError).code).toBe(code);
  expect((error as KronLoraError).message).toMatch(message);
}

describe.each(backends)('pretrained models with adapters on %s', (name) => {
  const api = on(name);

  it('embeds with an encoder; a fresh adapter leaves outputs unchanged', async () => {
    const model = await api.loadModel(bertDir, { task: 'embedding' });
    expect(model.backend).toBe(name);
    expect(model.architecture).toMatch(/^bert/);
    const before = await model.embed(texts);
    expect(before).toHaveLength(3);
    expect(before[0]).toHaveLength(BERT.hidden);
    const { modules } = await model.addAdapter('default', {
      type: 'kron-lora',
      rank: 4,
      alpha: 8,
      kronIn: 2,
      kronOut: 4,
      targetModules: 'all-linear',
    });
    expect(modules).toBe(6 * BERT.layers);
    expect(await model.embed(texts)).toEqual(before);
  });

  it('reports trainable parameters by the formula', async () => {
    const model = await api.loadModel(bertDir, { task: 'sequence-classification', numLabels: 3 });
    await model.addAdapter('kron', {
      type: 'kron-lora',
      rank: 4,
      alpha: 8,
      kronIn: 2,
      kronOut: 4,
      targetModules: ['query', 'value', 'dense'],
    });
    const { hidden: h, ffn, layers } = BERT;
    // query, value, attention.output.dense, intermediate.dense, output.dense in every layer.
    const perLayer = 3 * kronCount(h, h, 4, 2, 4) + kronCount(h, ffn, 4, 2, 4) + kronCount(ffn, h, 4, 2, 4);
    const report = model.trainableParameters();
    expect(report.adapters).toEqual({ kron: layers * perLayer });
    expect(report.adaptedModules).toEqual({ kron: 5 * layers });
    expect(report.head).toBe(h * h + h + 3 * h + 3);
    expect(report.trainable).toBe(layers * perLayer + report.head);
    expect(report.percentage).toBeCloseTo((100 * report.trainable) / report.total, 10);
    await model.addAdapter('lora', {
      type: 'lora',
      rank: 2,
      alpha: 4,
      targetModules: '.*attention\\.self\\.(query|key)',
      rankPattern: { 'layer\\.1\\.attention\\.self\\.key': 5 },
    });
    const lora = model.trainableParameters().adapters.lora;
    expect(lora).toBe(2 * (h + h) * layers + 2 * (h + h) + 5 * (h + h));
  });

  it('classifies into probabilities', async () => {
    const model = await api.loadModel(bertDir, { task: 'sequence-classification', numLabels: 3, seed: 4 });
    const out = await model.classify(texts);
    expect(out).toHaveLength(3);
    for (const c of out) {
      expect(c.scores).toHaveLength(3);
      expect(c.scores.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
      expect(c.score).toBe(Math.max(...c.scores));
      expect(c.label).toBe(c.scores.indexOf(c.score));
    }
    const logits = await model.logits(texts);
    expect(logits[0]).toHaveLength(3);
  });

  it('generates with a decoder from GGUF: greedy and seeded sampling are repeatable', async () => {
    const model = await api.loadModel(llamaFile);
    expect(model.task).toBe('causal-lm');
    const greedy = await model.generate('a the', { maxTokens: 6 });
    expect(greedy.promptTokens).toBe(2);
    expect(greedy.generatedTokens + (greedy.stoppedAtEos ? 1 : 0)).toBeGreaterThan(0);
    expect(await model.generate('a the', { maxTokens: 6 })).toEqual(greedy);
    const sampled = await model.generate('a the', { maxTokens: 6, temperature: 1, seed: 3 });
    expect(await model.generate('a the', { maxTokens: 6, temperature: 1, seed: 3 })).toEqual(sampled);
    const [logits] = await model.logits(['a the']);
    expect(logits).toHaveLength(LLAMA.vocab);
    await model.addAdapter('default', { type: 'kron-lora', rank: 4, alpha: 8, targetModules: ['q_proj', 'v_proj'] });
    expect((await model.logits(['a the']))[0]).toEqual(logits);
  });

  it('keeps the event loop responsive during inference', async () => {
    const model = await api.loadModel(llamaFile);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const start = performance.now();
    await model.generate('a the', { maxTokens: 60 });
    for (let i = 0; i < 20; i++) await model.logits(['a the a the a the a the']);
    clearInterval(timer);
    const elapsed = performance.now() - start;
    // Work on the JS thread would starve the timer; off-thread it keeps firing.
    expect(ticks).toBeGreaterThan(Math.min(5, elapsed / 10));
  });

  it('gives documented errors for bad files, targets and arguments', async () => {
    await rejectsWith(api.loadModel('/nonexistent/model'), 'ERR_INVALID_MODEL', /no such file or directory/);
    await rejectsWith(api.loadModel(bertDir, { task: 'causal-lm' }), 'ERR_INVALID_OPTION', /BERT encoder has no causal-LM head/);
    await rejectsWith(api.loadModel(bertDir, { tsak: 'embedding' } as never), 'ERR_INVALID_OPTION', /unknown field `tsak`/);
    const model = await api.loadModel(bertDir);
    await rejectsWith(
      model.addAdapter('a', { type: 'kron-lora', rank: 4, alpha: 8, targetModules: ['q_proj'] }),
      'ERR_INVALID_OPTION',
      /matches no module of this model; its linear modules are named dense, key, query, value/,
    );
    await rejectsWith(
      model.addAdapter('a', { type: 'kron-lora', rank: 4, alpha: 8, kronOut: 3, targetModules: 'all-linear' }),
      'ERR_FACTORIZATION',
      /layer `encoder.layer.0.attention.self.query`: kronOut = 3 does not divide outFeatures = 16/,
    );
    await rejectsWith(
      model.addAdapter('a', { type: 'kron-lora', rank: 4, alpha: 8, targetModules: 'all-linear', rnak: 2 } as never),
      'ERR_INVALID_OPTION',
      /unknown field `rnak`/,
    );
    await rejectsWith(model.embed('text' as never), 'ERR_INVALID_ARG_TYPE', /array of strings/);
    await rejectsWith(model.embed([]), 'ERR_INVALID_OPTION', /texts is empty/);
    await rejectsWith(model.classify(texts), 'ERR_UNSUPPORTED', /no classification head/);
    await rejectsWith(model.generate('x'), 'ERR_UNSUPPORTED', /needs a causal LM/);
    // A truncated weights file is named, with the reason.
    const broken = mkdtempSync(join(tmpdir(), 'kronlora-broken-'));
    for (const f of ['config.json', 'tokenizer.json']) copyFileSync(join(bertDir, f), join(broken, f));
    const weights = readFileSync(join(bertDir, 'model.safetensors'));
    writeFileSync(join(broken, 'model.safetensors'), weights.subarray(0, weights.length >> 1));
    await rejectsWith(api.loadModel(broken), 'ERR_INVALID_MODEL', /model\.safetensors: not a valid safetensors file/);
  });
});

describe('models agree across backends', () => {
  it('native and WASM give the same embeddings and logits', async () => {
    const [n, w] = await Promise.all([on('native').loadModel(bertDir), on('wasm').loadModel(bertDir)]);
    const [a, b] = await Promise.all([n.embed(texts), w.embed(texts)]);
    for (let i = 0; i < a.length; i++) expect(maxRelError(b[i], a[i])).toBeLessThan(1e-5);
    const [ln, lw] = await Promise.all([on('native').loadModel(llamaFile), on('wasm').loadModel(llamaFile)]);
    expect(maxRelError((await lw.logits(['a the']))[0], (await ln.logits(['a the']))[0])).toBeLessThan(1e-5);
  });

  it('the WASM backend loads a model from file bytes (as in a browser)', async () => {
    const files = Object.fromEntries(
      ['config.json', 'model.safetensors', 'tokenizer.json'].map((f) => [f, new Uint8Array(readFileSync(join(bertDir, f)))]),
    );
    const fromBytes = await on('wasm').loadModel(files);
    const fromPath = await on('wasm').loadModel(bertDir);
    expect(await fromBytes.embed(texts)).toEqual(await fromPath.embed(texts));
    await rejectsWith(on('native').loadModel(files), 'ERR_UNSUPPORTED', /loads models from a path/);
  });
});
