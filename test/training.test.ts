import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KronLoraError, type TrainEvent, type TrainResult } from 'kronlora';
import { backends, on } from './backends.js';
import { reviews, tinyBertDir, tinyLlamaGguf } from './tiny-models.js';

const bertDir = tinyBertDir(3);
const llamaFile = tinyLlamaGguf(4);
const KRON = { type: 'kron-lora', rank: 4, alpha: 8, kronIn: 2, kronOut: 4, targetModules: 'all-linear' } as const;
const LORA = { type: 'lora', rank: 4, alpha: 8, targetModules: 'all-linear' } as const;

const tmp = () => mkdtempSync(join(tmpdir(), 'kronlora-train-'));

async function rejection(promise: Promise<unknown>): Promise<KronLoraError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, 'expected a rejection').toBeInstanceOf(KronLoraError);
  return error as KronLoraError;
}

describe.each(backends)('training on %s', (name) => {
  const api = on(name);
  const classifier = async (adapter: typeof KRON | typeof LORA = KRON) => {
    const model = await api.loadModel(bertDir, { task: 'sequence-classification', numLabels: 2, seed: 1 });
    await model.addAdapter('default', adapter);
    return model;
  };

  it('streams typed events while both adapters learn, and the event loop keeps running', async () => {
    for (const adapter of [KRON, LORA]) {
      const model = await classifier(adapter);
      let ticks = 0;
      const timer = setInterval(() => ticks++, 1);
      const started = performance.now();
      const run = model.train({
        data: reviews(64, 1),
        validationData: reviews(32, 2),
        epochs: 6,
        batchSize: 8,
        learningRate: 2e-2,
        seed: 3,
      });
      const events: TrainEvent[] = [];
      for await (const e of run) events.push(e);
      const result = await run.result;
      clearInterval(timer);
      const elapsed = performance.now() - started;
      expect(ticks, 'training blocked the JS thread').toBeGreaterThan(Math.min(5, elapsed / 10));
      expect(events[0]).toMatchObject({ type: 'start', task: 'classification', totalSteps: 48, trainExamples: 64, validationExamples: 32 });
      const steps = events.filter((e) => e.type === 'step');
      expect(steps).toHaveLength(48);
      for (const s of steps) {
        expect(s.loss).toBeGreaterThan(0);
        expect(s.examplesPerSecond).toBeGreaterThan(0);
        expect(s.tokensPerSecond).toBeGreaterThan(s.examplesPerSecond);
      }
      expect(events.filter((e) => e.type === 'eval')).toHaveLength(6);
      expect(events.at(-1)).toEqual({ type: 'done', ...result });
      const early = result.losses.slice(0, 5).reduce((a, b) => a + b) / 5;
      const late = result.losses.slice(-5).reduce((a, b) => a + b) / 5;
      expect(late).toBeLessThan(early * 0.6);
      expect(result.reason).toBe('completed');
      expect(result.metrics!.accuracy).toBeGreaterThanOrEqual(0.9);
      const metrics = await model.evaluate(reviews(32, 2));
      expect(metrics.loss).toBeCloseTo(result.metrics!.loss, 5);
    }
  });

  it('cancels through an AbortSignal into a checkpoint that resumes exactly', async () => {
    const out = tmp();
    const options = { data: reviews(40, 5), validationSplit: 0.2, epochs: 2, batchSize: 4, learningRate: 5e-3, seed: 8, evalEvery: 4 };
    const whole = await (await classifier()).train(options).result;

    const controller = new AbortController();
    const model = await classifier();
    const run = model.train({ ...options, outputDir: out, signal: controller.signal });
    for await (const e of run) if (e.type === 'step' && e.step === 3) controller.abort();
    const cut = await run.result;
    expect(cut.reason).toBe('cancelled');
    expect(cut.step).toBeGreaterThanOrEqual(3);
    expect(cut.step).toBeLessThan(whole.step);
    expect(cut.checkpoint).toBe(join(out, `checkpoint-${String(cut.step).padStart(6, '0')}`));
    for (const f of [
      'trainer_state.json',
      'trainable.safetensors',
      'optimizer.safetensors',
      'adapter_config.json',
      'adapter_model.safetensors',
    ]) {
      expect(existsSync(join(cut.checkpoint!, f)), f).toBe(true);
    }
    const resumed = await (await classifier()).train({ ...options, outputDir: out, resumeFrom: out }).result;
    expect(resumed.losses).toEqual(whole.losses);
    expect(resumed.metrics).toEqual(whole.metrics);
  });

  it('saves adapters in PEFT layout and reloads them to identical outputs', async () => {
    const dir = join(tmp(), 'adapter');
    const model = await classifier();
    await model.train({ data: reviews(32, 1), epochs: 2, batchSize: 8, learningRate: 5e-3 }).result;
    await model.saveAdapter(dir);
    const config = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({ peft_type: 'LOKR', r: 4, alpha: 8, task_type: 'SEQ_CLS', modules_to_save: ['pooler', 'classifier'] });
    expect(config.kronlora.labels).toEqual(['neg', 'pos']);
    const texts = ['good fun film', 'bad plot'];
    const fresh = await api.loadModel(bertDir, { task: 'sequence-classification', numLabels: 2, seed: 9 });
    expect(await fresh.classify(texts)).not.toEqual(await model.classify(texts));
    expect(await fresh.loadAdapter(dir)).toEqual({ modules: 12 });
    expect(await fresh.classify(texts)).toEqual(await model.classify(texts));
    expect(fresh.trainableParameters()).toEqual(model.trainableParameters());
  });

  it('reports bad data, bad options and a non-finite loss clearly', async () => {
    const model = await classifier(LORA);
    const file = join(tmp(), 'train.jsonl');
    writeFileSync(file, '{"text":"good","label":0}\n{"text":"bad","label":1}\n{"text":"fun" "label":0}\n');
    let e = await rejection(model.train({ data: file }).result);
    expect([e.code, e.message]).toEqual(['ERR_INVALID_DATA', expect.stringContaining('train.jsonl:3: invalid JSON')]);
    e = await rejection(model.train({ data: join(tmp(), 'missing.jsonl') }).result);
    expect(e.message).toMatch(/missing.jsonl: the training data file does not exist/);
    e = await rejection(model.train({ data: reviews(8, 1), epochs: 0 }).result);
    expect([e.code, e.message]).toEqual(['ERR_INVALID_OPTION', expect.stringContaining('`epochs` must be a positive integer')]);
    e = await rejection(model.train({ data: reviews(8, 1), learningRat: 1 } as never).result);
    expect(e.message).toMatch(/unknown field `learningRat`/);
    expect(() => model.train({ data: 5 } as never)).toThrow(/data must be a path to a .jsonl file or an array of records/);
    // Errors surface in iteration too, after the events that came before them.
    const run = model.train({
      data: reviews(16, 1),
      validationSplit: 0,
      learningRate: 1e30,
      warmupRatio: 0,
      maxGradNorm: null,
      batchSize: 4,
    });
    const seen: string[] = [];
    const iterated = (async () => {
      for await (const ev of run) seen.push(ev.type);
    })();
    e = await rejection(iterated);
    expect([e.code, e.message]).toEqual(['ERR_NON_FINITE', expect.stringMatching(/^step 2: the training loss is (NaN|inf)/)]);
    expect(seen).toEqual(['start', 'step']);
    e = await rejection(model.evaluate([{ text: 'good', label: 'meh' }]));
    expect(e.message).toMatch(/unknown label `meh`/);
  });

  it('trains a causal LM on completions and scores multiple choice', async () => {
    const model = await api.loadModel(llamaFile);
    await model.addAdapter('default', { type: 'kron-lora', rank: 2, alpha: 4, targetModules: 'all-linear' });
    const data = [{ prompt: 'a', completion: ' the b' }, { text: 'c the c the' }];
    const before = await model.evaluate(data);
    expect(before.perplexity).toBeCloseTo(Math.exp(before.loss), 6);
    const result = await model.train({ data, validationData: data, epochs: 15, batchSize: 2, learningRate: 2e-2, warmupRatio: 0 }).result;
    expect(result.metrics!.loss).toBeLessThan(before.loss * 0.7);
    const mc = [
      { question: 'a', choices: ['b', 'c'], answer: 1 },
      { question: 'b', choices: ['c', 'a'], answer: 0 },
    ];
    const trained = await model.train({
      task: 'multiple-choice',
      data: mc,
      validationData: mc,
      epochs: 15,
      batchSize: 2,
      learningRate: 2e-2,
      warmupRatio: 0,
    }).result;
    expect(trained.metrics!.accuracy).toBe(1);
  });

  it('gives the same losses with gradient checkpointing, for an encoder and a decoder', async () => {
    const encoder = async (gradientCheckpointing: boolean) => {
      const model = await classifier();
      const options = { data: reviews(16, 2), epochs: 2, batchSize: 8, learningRate: 5e-3, validationSplit: 0, gradientCheckpointing };
      return (await model.train(options).result).losses;
    };
    const decoder = async (gradientCheckpointing: boolean) => {
      const model = await api.loadModel(llamaFile);
      await model.addAdapter('default', { ...KRON, dropout: 0.1 });
      const data = [{ text: 'the cat sat on the mat' }, { text: 'a hat, the hat' }];
      return (await model.train({ data, epochs: 3, batchSize: 2, learningRate: 2e-2, validationSplit: 0, gradientCheckpointing }).result)
        .losses;
    };
    for (const run of [encoder, decoder]) {
      const [plain, checkpointed] = [await run(false), await run(true)];
      expect(checkpointed).toHaveLength(plain.length);
      for (const [i, l] of plain.entries()) expect(Math.abs(l - checkpointed[i])).toBeLessThan(1e-5 * Math.max(1, l));
    }
    const model = await classifier();
    const bad = model.train({ data: reviews(4, 1), gradientCheckpointing: 'yes' as never }).result;
    expect((await rejection(bad)).message).toMatch(/option `gradientCheckpointing` must be true or false/);
  });
});

describe('training across backends', () => {
  it('gives the same losses on native and WASM', async () => {
    const results: TrainResult[] = [];
    for (const name of backends) {
      const model = await on(name).loadModel(bertDir, { task: 'sequence-classification', numLabels: 2, seed: 1 });
      await model.addAdapter('default', KRON);
      results.push(await model.train({ data: reviews(32, 1), epochs: 2, batchSize: 8, learningRate: 5e-3, validationSplit: 0 }).result);
    }
    const [native, wasm] = results;
    expect(native.losses).toHaveLength(wasm.losses.length);
    for (const [i, l] of native.losses.entries()) expect(Math.abs(l - wasm.losses[i])).toBeLessThan(1e-4);
  });

  it('trains on a quantised GGUF base as on its dequantised weights, on both backends', async () => {
    // Q8_0 projections and embeddings; ffn_down stays F32 (mixed types, as llama.cpp files have).
    const file = tinyLlamaGguf(4, undefined, { q8_0: true });
    const data = [{ text: 'the cat sat on the mat and the hat' }, { text: 'a hat, the hat, that cat there' }];
    const losses: number[][] = [];
    for (const name of backends) {
      for (const quantized of [true, false]) {
        const model = await on(name).loadModel(file, { quantized });
        const types = model.modules().map((m) => `${m.name.split('.').at(-1)}:${m.weightType}`);
        expect(types).toContain(quantized ? 'q_proj:Q8_0' : 'q_proj:F32');
        expect(types).toContain('down_proj:F32');
        await model.addAdapter('default', KRON);
        losses.push((await model.train({ data, epochs: 3, batchSize: 2, learningRate: 2e-2, validationSplit: 0 }).result).losses);
      }
    }
    // Many rows per product (2 × 10 tokens): the quantised path multiplies dequantised blocks
    // in f32, so every run has the dequantised run's losses.
    for (const run of losses) for (const [i, l] of losses[1].entries()) expect(Math.abs(run[i] - l)).toBeLessThan(1e-4 * Math.max(1, l));
    const defaults = await on('native').loadModel(file);
    expect(defaults.modules().find((m) => m.name.endsWith('q_proj'))?.weightType).toBe('Q8_0');
    const e = await rejection(on('wasm').loadModel(bertDir, { quantized: true }));
    expect(e.code).toBe('ERR_INVALID_OPTION');
    expect(e.message).toMatch(/`quantized` applies to \.gguf models/);
  });

  it('refuses other calls on a model while it trains (native)', async () => {
    const model = await on('native').loadModel(bertDir, { task: 'sequence-classification', numLabels: 2 });
    await model.addAdapter('default', LORA);
    const run = model.train({ data: reviews(64, 1), epochs: 3, batchSize: 4 });
    const e = await rejection(model.classify(['good']));
    expect(e.code).toBe('ERR_INVALID_STATE');
    expect(e.message).toMatch(/busy \(training/);
    await run.result;
    expect(await model.classify(['good'])).toHaveLength(1);
  });
});
