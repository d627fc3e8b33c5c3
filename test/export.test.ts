// Adapters served by other tools: a kronlora-trained adapter exported as a GGUF LoRA file is
// applied by llama.cpp itself (node-llama-cpp's prebuilt binary, in a child process) to the GGUF
// base, and the model merged into one GGUF file is served alone: llama.cpp's logits and greedy
// text must be kronlora's; a Kron-LoRA adapter exported
// as a PEFT LoRA directory loads back as a plain LoRA with the same logits.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KronLoraError, type Model } from 'kronlora';
import { backends, on } from './backends.js';
import { maxRelError } from './reference.js';
import { tinyBertDir, tinyLlamaGguf } from './tiny-models.js';

const llamaFile = tinyLlamaGguf(9);
const prompts = ['the the cat', 'a the'];
const records = ['the cat sat on the mat', 'a hat, the hat', 'that the cat is there'].map((text) => ({ text }));

interface LlamaCppView {
  rows: { tokens: number[]; logits: number[] }[];
  generated: string[];
}

function llamaCpp(lora: string | null, generate = 6, model = llamaFile): LlamaCppView {
  const script = new URL('./llama-cpp-logits.mjs', import.meta.url).pathname;
  const args = JSON.stringify({ model, lora, texts: prompts, generate });
  return JSON.parse(
    execFileSync(process.execPath, [script, args], { encoding: 'utf8', timeout: 60_000, maxBuffer: 256 << 20 })
      .trim()
      .split('\n')
      .at(-1)!,
  );
}

/** Train `model`'s adapter a few steps, so that it is far from its neutral start. */
async function trainBriefly(model: Model): Promise<void> {
  const run = model.train({ data: records, task: 'causal-lm', epochs: 4, batchSize: 3, learningRate: 0.05, validationSplit: 0, seed: 1 });
  await run.result;
}

/**
 * llama.cpp's next-token logits and greedy text equal kronlora's. On the bare tiny base its
 * arithmetic differs from kronlora's (and transformers') by ~5e-4 of the largest logit (1.5e-3
 * on a single token, where attention is the identity), so the adapter's effect, adapted minus
 * base in each system, is compared too: there the base's rounding cancels.
 */
async function expectLlamaCppAgrees(
  model: Model,
  lora: string | null,
  base?: { ours: Float32Array[]; theirs: LlamaCppView },
  file = llamaFile,
) {
  const ours = await model.logits(prompts);
  const theirs = llamaCpp(lora, 6, file);
  for (const [i, row] of theirs.rows.entries()) {
    expect(maxRelError(ours[i], row.logits), `"${prompts[i]}": kronlora vs llama.cpp logits`).toBeLessThan(2e-3);
    if (!base) continue;
    const effect = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a, (v, j) => v - b[j]);
    const ourEffect = effect(ours[i], base.ours[i]);
    const theirEffect = effect(row.logits, base.theirs.rows[i].logits);
    expect(Math.max(...ourEffect.map(Math.abs)), 'the adapter moves the logits').toBeGreaterThan(0.1);
    // Measured: ≤ 9.2e-4 of the largest change (5–8 logits); a 1 % error in any pair's scale
    // would exceed this.
    expect(maxRelError(theirEffect, ourEffect), `"${prompts[i]}": the adapter's effect`).toBeLessThan(3e-3);
  }
  for (const [i, text] of theirs.generated.entries()) {
    const g = await model.generate(prompts[i], { maxTokens: 6 });
    expect(g.text, `"${prompts[i]}": greedy continuation`).toBe(text);
  }
}

describe('GGUF LoRA export, served by llama.cpp (node-llama-cpp)', () => {
  const theirs = llamaCpp(null);

  it('reads the tiny base as kronlora does', async () => {
    const model = await on('native').loadModel(llamaFile);
    await expectLlamaCppAgrees(model, null);
  });

  for (const [kind, config] of [
    ['kron-lora', { type: 'kron-lora', rank: 2, alpha: 8, targetModules: 'all-linear', kronInPattern: { k_proj: 4 } }],
    ['lora', { type: 'lora', rank: 4, alpha: 4, targetModules: 'all-linear', rankPattern: { v_proj: 2 } }],
  ] as const) {
    it(`applies a trained ${kind} adapter as kronlora does: same logits, same greedy text`, async () => {
      const model = await on('native').loadModel(llamaFile);
      const base = { ours: await model.logits(prompts), theirs };
      await model.addAdapter('chat', config);
      await trainBriefly(model);
      const file = join(mkdtempSync(join(tmpdir(), 'kronlora-gguf-lora-')), `${kind}.gguf`);
      await model.exportAdapter(file, { format: 'gguf-lora' });
      await expectLlamaCppAgrees(model, file, base);
      // Merged into a GGUF model: llama.cpp serves it with no adapter at all.
      const merged = file.replace(/\.gguf$/, '-merged.gguf');
      await model.saveMerged(merged);
      await expectLlamaCppAgrees(model, null, base, merged);
    });
  }
});

describe.each(backends)('exportAdapter on %s', (name) => {
  const api = on(name);

  it('writes a Kron-LoRA adapter as the plain LoRA it is (PEFT layout), which loads back with the same logits', async () => {
    const dir = tinyBertDir(4);
    const model = await api.loadModel(dir, { task: 'sequence-classification', numLabels: 2 });
    await model.addAdapter('k', { type: 'kron-lora', rank: 2, alpha: 4, targetModules: 'all-linear' });
    await model.train({
      data: [
        { text: 'great film', label: 1 },
        { text: 'bad plot', label: 0 },
      ],
      epochs: 3,
      batchSize: 2,
      learningRate: 0.05,
      validationSplit: 0,
    }).result;
    const out = join(mkdtempSync(join(tmpdir(), 'kronlora-peft-lora-')), 'peft');
    await model.exportAdapter(out, { format: 'peft-lora' });
    const config = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect([config.peft_type, config.r, config.lora_alpha, config.use_rslora]).toEqual(['LORA', 4, 4, false]);
    const back = await api.loadModel(dir, { task: 'sequence-classification', numLabels: 2 });
    expect(await back.loadAdapter(out)).toEqual({ modules: 12 });
    const [want, got] = [await model.logits(['great film', 'bad plot']), await back.logits(['great film', 'bad plot'])];
    for (const [i, row] of got.entries()) expect(maxRelError(row, want[i])).toBeLessThan(1e-5);
  });

  it('merges a classifier into a Hugging Face directory that loads with no adapter and the same logits', async () => {
    const dir = tinyBertDir(4);
    const model = await api.loadModel(dir, { task: 'sequence-classification', numLabels: 2 });
    await model.addAdapter('k', { type: 'kron-lora', rank: 2, alpha: 4, targetModules: 'all-linear' });
    const data = [
      { text: 'great film', label: 'pos' },
      { text: 'bad plot', label: 'neg' },
    ];
    await model.train({
      data,
      epochs: 3,
      batchSize: 2,
      learningRate: 0.05,
      validationSplit: 0,
    }).result;
    const out = join(mkdtempSync(join(tmpdir(), 'kronlora-merged-hf-')), 'merged');
    await model.saveMerged(out);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect([config.architectures, config.id2label, config.kronlora.merged_adapters]).toEqual([
      ['BertForSequenceClassification'],
      { 0: 'neg', 1: 'pos' },
      [{ name: 'k', weight: 1 }],
    ]);
    const merged = await api.loadModel(out, { task: 'sequence-classification', numLabels: 2 });
    expect(merged.activeAdapters()).toEqual([]);
    const [want, got] = [await model.logits(['great film', 'bad plot']), await merged.logits(['great film', 'bad plot'])];
    for (const [i, row] of got.entries()) expect(maxRelError(row, want[i])).toBeLessThan(1e-5);
    // Its class names came back from config.json: string-labelled data evaluates as before.
    expect((await merged.evaluate(data)).loss).toBeCloseTo((await model.evaluate(data)).loss, 5);
    // The base directory is never a target: refused, and left as it was.
    const weights = readFileSync(join(dir, 'model.safetensors'));
    await expect(model.saveMerged(dir)).rejects.toMatchObject({ code: 'ERR_WOULD_OVERWRITE' });
    expect(readFileSync(join(dir, 'model.safetensors')).equals(weights)).toBe(true);
  });

  it('writes LyCORIS and GGUF LoRA files that loadAdapter reads back as the same adapter', async () => {
    const model = await api.loadModel(llamaFile);
    await model.addAdapter('k', { type: 'kron-lora', rank: 2, alpha: 8, targetModules: 'all-linear' });
    await trainBriefly(model);
    const want = await model.logits(prompts);
    const dir = mkdtempSync(join(tmpdir(), 'kronlora-roundtrip-'));
    for (const [format, file] of [
      ['lycoris', join(dir, 'k.safetensors')],
      ['gguf-lora', join(dir, 'k.gguf')],
    ] as const) {
      await model.exportAdapter(file, { format });
      const back = await api.loadModel(llamaFile);
      expect(await back.loadAdapter(file)).toEqual({ modules: 14 });
      const got = await back.logits(prompts);
      for (const [i, row] of got.entries()) expect(maxRelError(row, want[i]), format).toBeLessThan(1e-5);
    }
  });

  it('refuses bad options and paths it does not own, touching nothing', async () => {
    const model = await api.loadModel(llamaFile);
    await model.addAdapter('a', { type: 'lora', rank: 2, alpha: 4, targetModules: ['q_proj'] });
    const dir = mkdtempSync(join(tmpdir(), 'kronlora-export-'));
    const theirs = join(dir, 'theirs.gguf');
    writeFileSync(theirs, 'not kronlora');
    const rejects = async (p: Promise<unknown>, code: string, message: RegExp) => {
      const e = await p.then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e).toBeInstanceOf(KronLoraError);
      expect([(e as KronLoraError).code, (e as KronLoraError).message]).toEqual([code, expect.stringMatching(message)]);
    };
    await rejects(model.exportAdapter(theirs, { format: 'gguf-lora' }), 'ERR_WOULD_OVERWRITE', /not a GGUF LoRA file kronlora wrote/);
    expect(readFileSync(theirs, 'utf8')).toBe('not kronlora');
    await rejects(model.exportAdapter(join(dir, 'x'), { format: 'onnx' as never }), 'ERR_INVALID_OPTION', /"peft-lora" or "gguf-lora"/);
    await rejects(
      model.exportAdapter(join(dir, 'x'), { format: 'gguf-lora', nmae: 'a' } as never),
      'ERR_INVALID_OPTION',
      /unknown field `nmae`/,
    );
    await rejects(model.exportAdapter('', { format: 'gguf-lora' }), 'ERR_INVALID_ARG_TYPE', /expects a path/);
    expect(existsSync(join(dir, 'x'))).toBe(false);
    // Its own file is replaced in place, atomically.
    await model.exportAdapter(join(dir, 'ours.gguf'), { format: 'gguf-lora' });
    await model.exportAdapter(join(dir, 'ours.gguf'), { format: 'gguf-lora' });
  });
});

// SmolLM2-135M (Q4_1), when `npm run fetch-models` has cached it. llama.cpp multiplies Q4_1
// weights by 8-bit-quantised activations, so its base logits differ from kronlora's (f32) by ~1
// (of ~20-30), and an adapter's effect in the two systems carries that noise: a weak effect
// (a few logits) is swamped by it, so the adapter is trained until it moves the logits by ~10-20.
// Measured (2026-12-05, Zen 3): effect cosine 0.9997 / 0.986, norm ratio 1.03 / 0.95, the same
// 8-token greedy text as kronlora's, unlike llama.cpp's base text.
const smollm2 = new URL('../.cache/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', import.meta.url).pathname;
describe.skipIf(!existsSync(smollm2))('GGUF LoRA export on SmolLM2-135M (cached), served by llama.cpp', () => {
  it('moves llama.cpp the way it moves kronlora: same direction and size, same greedy text', async () => {
    const texts = ['The capital of France is', 'Kron-LoRA trains adapters'];
    const view = (lora: string | null): LlamaCppView => {
      const script = new URL('./llama-cpp-logits.mjs', import.meta.url).pathname;
      const args = JSON.stringify({ model: smollm2, lora, texts, generate: 6 });
      const out = execFileSync(process.execPath, [script, args], { encoding: 'utf8', timeout: 120_000, maxBuffer: 256 << 20 });
      return JSON.parse(out.trim().split('\n').at(-1)!);
    };
    const model = await on('native').loadModel(smollm2);
    const base = { ours: await model.logits(texts), theirs: view(null) };
    await model.addAdapter('chat', { type: 'kron-lora', rank: 8, alpha: 16, targetModules: 'all-linear' });
    const data = [{ text: 'The capital of France is Kronville, a city of adapters.' }, { text: 'Kron-LoRA trains adapters from Node.' }];
    await model.train({ data, epochs: 4, batchSize: 2, learningRate: 1e-2, validationSplit: 0, seed: 1 }).result;
    const file = join(mkdtempSync(join(tmpdir(), 'kronlora-smollm2-lora-')), 'chat.gguf');
    await model.exportAdapter(file, { format: 'gguf-lora' });
    const ours = await model.logits(texts);
    const theirs = view(file);
    for (const [i, text] of texts.entries()) {
      const ourEffect = Array.from(ours[i], (v, j) => v - base.ours[i][j]);
      const theirEffect = theirs.rows[i].logits.map((v, j) => v - base.theirs.rows[i].logits[j]);
      const dot = (a: number[], b: number[]) => a.reduce((s, v, j) => s + v * b[j], 0);
      const [ab, aa, bb] = [dot(ourEffect, theirEffect), dot(ourEffect, ourEffect), dot(theirEffect, theirEffect)];
      expect(Math.max(...ourEffect.map(Math.abs)), 'the adapter moves the logits well past the noise').toBeGreaterThan(5);
      expect(ab / Math.sqrt(aa * bb), `"${text}": cosine of the two effects`).toBeGreaterThan(0.97);
      expect(Math.sqrt(bb / aa), `"${text}": llama.cpp's effect over kronlora's`).toBeGreaterThan(0.85);
      expect(Math.sqrt(bb / aa), `"${text}": llama.cpp's effect over kronlora's`).toBeLessThan(1.15);
      const g = await model.generate(text, { maxTokens: 6 });
      expect(theirs.generated[i], `"${text}": greedy continuation`).toBe(g.text);
      expect(theirs.generated[i], 'the adapter changes what llama.cpp writes').not.toBe(base.theirs.generated[i]);
    }
  });
});
