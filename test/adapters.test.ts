// Several adapters on one model through the package, on each backend: the active set with
// weights, per-call choices, merge / unmerge, delete, hot-swap, and training the active ones.
// The core's tests (multi_adapter.rs) hold the semantics to references; here every call must
// reach it and refresh what the model describes.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KronLoraError, type TrainEvent } from 'kronlora';
import { backends, on } from './backends.js';
import { maxRelError } from './reference.js';
import { tinyLlamaGguf } from './tiny-models.js';

const llama = tinyLlamaGguf(12);
const prompts = ['the cat', 'a the'];
const records = ['the cat sat on the mat', 'that hat', 'the the the cat'].map((text) => ({ text }));

async function rejects(p: Promise<unknown>, code: string, message: RegExp) {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(KronLoraError);
  expect([(e as KronLoraError).code, (e as KronLoraError).message]).toEqual([code, expect.stringMatching(message)]);
}

describe.each(backends)('several adapters on %s', (name) => {
  const api = on(name);

  it('chooses, weighs, merges, deletes and hot-swaps adapters', async () => {
    const model = await api.loadModel(llama);
    const base = await model.logits(prompts);
    await model.addAdapter('a', { type: 'kron-lora', rank: 2, alpha: 8, targetModules: 'all-linear' });
    await model.addAdapter('b', { type: 'lora', rank: 2, alpha: 4, targetModules: ['q_proj', 'v_proj'] });
    expect(model.activeAdapters()).toEqual([
      { name: 'a', weight: 1 },
      { name: 'b', weight: 1 },
    ]);
    // Train each alone so that both move the logits.
    for (const trained of ['a', 'b']) {
      await model.setActiveAdapters([trained]);
      const run = model.train({ data: records, task: 'causal-lm', epochs: 3, batchSize: 3, learningRate: 0.05, validationSplit: 0 });
      let start: TrainEvent | undefined;
      for await (const e of run) if (e.type === 'start') start = e;
      await run.result;
      expect(start).toMatchObject({ type: 'start', adapters: [trained] });
    }
    const dir = mkdtempSync(join(tmpdir(), 'kronlora-adapters-'));
    await model.saveAdapter(join(dir, 'b'), { name: 'b' });
    const onlyB = await model.logits(prompts);
    await model.setActiveAdapters(['a']);
    const onlyA = await model.logits(prompts);
    expect(maxRelError(onlyA[0], base[0])).toBeGreaterThan(1e-3);
    expect(maxRelError(onlyB[0], base[0])).toBeGreaterThan(1e-3);

    // Per call: the chosen adapter, and the model's own choice unchanged.
    expect(await model.logits(prompts, { adapter: 'b' })).toEqual(onlyB);
    expect(await model.logits(prompts, { adapter: [] })).toEqual(base);
    expect(model.activeAdapters()).toEqual([{ name: 'a', weight: 1 }]);
    const greedy = await model.generate(prompts[0], { maxTokens: 4, adapter: 'b' });
    await model.setActiveAdapters(['b']);
    expect(await model.generate(prompts[0], { maxTokens: 4 })).toEqual(greedy);
    const metrics = await model.evaluate(records, { task: 'causal-lm', adapter: 'a' });
    await model.setActiveAdapters(['a']);
    expect(await model.evaluate(records, { task: 'causal-lm' })).toEqual(metrics);

    // Weighted, then merged: the same logits without adapter passes; unmerged exactly back.
    await model.setActiveAdapters(['a', 'b'], { weights: [0.5, 2] });
    const weighted = await model.logits(prompts);
    expect(await model.mergeAdapters()).toEqual({ modules: 14 });
    expect(model.merged).toBe(true);
    const merged = await model.logits(prompts);
    for (const [i, row] of merged.entries()) expect(maxRelError(row, weighted[i])).toBeLessThan(1e-5);
    await rejects(model.logits(prompts, { adapter: 'a' }), 'ERR_INVALID_STATE', /unmergeAdapters\(\) before choosing/);
    await rejects(model.setActiveAdapters(['a']), 'ERR_INVALID_STATE', /unmergeAdapters\(\) before changing/);
    expect(await model.unmergeAdapters()).toEqual({ modules: 14 });
    expect(model.merged).toBe(false);
    expect(await model.logits(prompts)).toEqual(weighted);
    // One adapter by name: it alone becomes active, then merged.
    expect(await model.mergeAdapters('b')).toEqual({ modules: 4 });
    expect(model.activeAdapters()).toEqual([{ name: 'b', weight: 1 }]);
    const mergedB = await model.logits(prompts);
    for (const [i, row] of mergedB.entries()) expect(maxRelError(row, onlyB[i])).toBeLessThan(1e-5);
    await rejects(model.mergeAdapters('a'), 'ERR_INVALID_STATE', /unmergeAdapters\(\) before changing/);
    await model.unmergeAdapters();
    await model.setActiveAdapters(['a', 'b'], { weights: [0.5, 2] });

    // Hot swap: train `b` further, then swap its saved copy back in while the model stays loaded.
    await model.setActiveAdapters(['b']);
    await model.train({ data: records, task: 'causal-lm', epochs: 1, batchSize: 3, learningRate: 0.05, validationSplit: 0 }).result;
    expect(await model.logits(prompts)).not.toEqual(onlyB);
    await rejects(model.loadAdapter(join(dir, 'b'), { name: 'b' }), 'ERR_INVALID_OPTION', /replace: true/);
    expect(await model.loadAdapter(join(dir, 'b'), { name: 'b', replace: true })).toEqual({ modules: 4 });
    expect(model.activeAdapters()).toEqual([{ name: 'b', weight: 1 }]);
    const swapped = await model.logits(prompts);
    for (const [i, row] of swapped.entries()) expect(maxRelError(row, onlyB[i])).toBeLessThan(1e-6);

    await model.disableAdapters();
    expect(await model.logits(prompts)).toEqual(base);
    await model.deleteAdapter('a');
    expect(model.modules().every((m) => !m.adapters.includes('a'))).toBe(true);
    await rejects(model.setActiveAdapters(['a']), 'ERR_INVALID_OPTION', /no adapter named `a`; it has b/);
    await rejects(model.classify(['x'], { adaptor: 'b' } as never), 'ERR_INVALID_OPTION', /unknown field `adaptor`/);
    await rejects(model.setActiveAdapters(['b'], { weights: [Number.NaN] }), 'ERR_INVALID_OPTION', /not a finite number/);
  });
});
