/**
 * The browser demo (examples/browser) in a real browser: Debian's Chromium, headless, driven by
 * playwright-core, the page served by Vite as `npm run browser-demo` serves it. A tiny BERT is
 * picked as files, trained for a few steps in the page's Web Worker (kronlora/browser, the WASM
 * core), tried, downloaded as a zip, and loaded back in Node: the same logits. A second run is
 * stopped with the Stop button (AbortSignal through SharedArrayBuffer). A screenshot goes to
 * test-results/browser-demo.png.
 */
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { unzipSync } from 'fflate';
import { withBackend } from 'kronlora';
import { type Browser, type BrowserContextOptions, chromium, type Page } from 'playwright-core';
import { build, createServer, preview, type ViteDevServer } from 'vite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reviews, tinyBertDir, tinyLlamaGguf } from './tiny-models.js';

const root = join(import.meta.dirname, '..');
/** Debian's package (scripts/setup.sh installs it); KRONLORA_CHROMIUM names another. */
const chromiumPath = [process.env.KRONLORA_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => p && existsSync(p));

/** The page's settings for a tiny model: rank 4 on every linear, batches of 8 × 32 tokens, no validation split. */
const TINY_RUN = {
  rank: '4',
  alpha: '8',
  targets: 'all-linear',
  'batch-size': '8',
  'learning-rate': '0.02',
  'validation-split': '0',
  'max-length': '32',
};

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** A JSONL file of `records` in a new temporary folder: [folder, file]. */
function jsonl(name: string, records: object[]): [string, string] {
  const work = mkdtempSync(join(tmpdir(), 'kronlora-browser-'));
  writeFileSync(join(work, name), `${records.map((r) => JSON.stringify(r)).join('\n')}\n`);
  return [work, join(work, name)];
}

/** The demo's fields set by id: `<select>`s chosen, `<input>`s filled. */
async function setFields(page: Page, fields: Record<string, string>): Promise<void> {
  for (const [id, value] of Object.entries(fields)) {
    if ((await page.locator(`#${id}`).evaluate((el) => el.tagName)) === 'SELECT') await page.selectOption(`#${id}`, value);
    else await page.fill(`#${id}`, value);
  }
}

/** Wait for the run to end: the status line. */
async function runEnd(page: Page, timeout = 120_000): Promise<string | null> {
  await page.waitForSelector('#status[data-state="done"], #status[data-state="error"]', { timeout });
  return page.textContent('#status');
}

/** Press Train and wait for the run to end: the status line. */
async function train(page: Page, timeout = 120_000): Promise<string | null> {
  await page.click('#train');
  return runEnd(page, timeout);
}

/** A field of the page's `window.demo` state (examples/browser/main.js). */
function demoState<T>(page: Page, key: 'losses' | 'outputs'): Promise<T> {
  return page.evaluate((k) => (window as unknown as { demo: Record<string, unknown> }).demo[k], key) as Promise<T>;
}

/** Run the probe texts; what the page computed for them. */
async function probe<T>(page: Page, texts: string[]): Promise<T> {
  await page.fill('#probe', texts.join('\n'));
  await page.click('#run-probe');
  await page.waitForFunction(() => (window as unknown as { demo: { outputs: unknown } }).demo.outputs);
  return demoState<T>(page, 'outputs');
}

/** Download the adapter in `format`: the file's name and bytes. */
async function download(page: Page, format: string): Promise<[string, Buffer]> {
  await page.selectOption('#format', format);
  const [d] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
  return [d.suggestedFilename(), readFileSync((await d.path())!)];
}

describe('the browser demo in Chromium', () => {
  let server: ViteDevServer;
  let browser: Browser;

  // The page's "Use cached …" buttons list this folder (its server's /models/), as .cache/models.
  const servedModels = mkdtempSync(join(tmpdir(), 'kronlora-served-'));

  beforeAll(async () => {
    expect(chromiumPath, "Chromium is missing: scripts/setup.sh installs Debian's `chromium` package").toBeDefined();
    mkdirSync(join(servedModels, 'tiny-llama'));
    copyFileSync(tinyLlamaGguf(8), join(servedModels, 'tiny-llama/model.gguf'));
    mkdirSync(join(servedModels, 'tiny-bert'));
    const bert = tinyBertDir(7);
    for (const f of ['config.json', 'tokenizer.json', 'model.safetensors']) copyFileSync(join(bert, f), join(servedModels, 'tiny-bert', f));
    process.env.KRONLORA_DEMO_MODELS = servedModels;
    server = await createServer({ configFile: join(root, 'examples/browser/vite.config.mjs'), server: { host: '127.0.0.1', port: 0 } });
    await server.listen();
    // Root in a container: Chromium's sandbox needs user namespaces it may not have.
    browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox'] });
  }, 60_000);

  /** The demo in a new tab; uncaught page errors are collected. */
  async function openDemo(options: BrowserContextOptions = {}): Promise<{ page: Page; errors: string[] }> {
    const page = await browser.newPage(options);
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(server.resolvedUrls!.local[0]);
    return { page, errors };
  }

  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  it('trains a tiny model, downloads its adapter, which gives the same logits in Node', async () => {
    const modelDir = tinyBertDir(7);
    const [work, dataFile] = jsonl('reviews.jsonl', reviews(64, 11));
    const probes = ['great fun film', 'not a good plot', 'very bad movie'];

    const { page, errors } = await openDemo({ acceptDownloads: true, viewport: { width: 1100, height: 1400 } });
    expect(await page.evaluate(() => crossOriginIsolated), 'the page is cross-origin isolated').toBe(true);

    await page.setInputFiles(
      '#model-files',
      ['config.json', 'tokenizer.json', 'model.safetensors'].map((f) => join(modelDir, f)),
    );
    await page.locator('#model-info', { hasText: 'bert' }).waitFor();
    await page.setInputFiles('#data-file', dataFile);
    await page.locator('#data-info', { hasText: '64 records' }).waitFor();
    await setFields(page, { ...TINY_RUN, 'kron-in': '2', 'kron-out': '4', epochs: '6' });
    expect(await train(page)).toMatch(/^completed after 48 steps/);
    const losses = await demoState<number[]>(page, 'losses');
    expect(losses).toHaveLength(48);
    expect(mean(losses.slice(-8)), `losses ${losses.map((l) => l.toFixed(3)).join(' ')}`).toBeLessThan(mean(losses.slice(0, 8)) * 0.8);

    await page.click('#evaluate');
    await page.locator('#eval-info', { hasText: 'accuracy' }).waitFor();
    const browserLogits = await probe<number[][]>(page, probes);

    const [name, zip] = await download(page, 'kronlora');
    expect(name).toBe('kronlora-adapter-kronlora.zip');
    const files = unzipSync(zip);
    expect(Object.keys(files).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    const adapterDir = join(work, 'adapter');
    mkdirSync(adapterDir);
    for (const [name, bytes] of Object.entries(files)) writeFileSync(join(adapterDir, name), bytes);

    mkdirSync(join(root, 'test-results'), { recursive: true });
    await page.screenshot({ path: join(root, 'test-results/browser-demo.png'), fullPage: true });

    // Node's native backend, the adapter from the browser: the same logits (WASM vs native: 1e-4).
    const model = await withBackend('native').loadModel(modelDir, { task: 'sequence-classification', numLabels: 2 });
    await model.loadAdapter(adapterDir);
    expect(model.labels()).toEqual(['neg', 'pos']);
    const nodeLogits = (await model.logits(probes)).map((l) => Array.from(l));
    for (let i = 0; i < probes.length; i++) {
      for (let j = 0; j < 2; j++) expect(nodeLogits[i][j]).toBeCloseTo(browserLogits[i][j], 4);
    }
    // And not the untrained model's: the adapter carried what was learnt.
    const base = await withBackend('native').loadModel(modelDir, { task: 'sequence-classification', numLabels: 2 });
    const baseLogits = (await base.logits(probes)).map((l) => Array.from(l));
    expect(Math.max(...baseLogits.flat().map((v, k) => Math.abs(v - nodeLogits.flat()[k])))).toBeGreaterThan(1e-2);

    // Stop: a long run ends after the step in progress, as `cancelled`.
    await page.fill('#epochs', '500');
    await page.click('#train');
    await page.waitForFunction(() => (window as unknown as { demo: { losses: number[] } }).demo.losses.length >= 2, null, {
      timeout: 60_000,
    });
    await page.click('#stop');
    expect(await runEnd(page, 60_000)).toMatch(/^cancelled after \d+ steps/);
    expect(errors).toEqual([]);
    await page.close();
  }, 240_000);

  it('runs as a production build too (vite build, then vite preview)', async () => {
    const outDir = mkdtempSync(join(tmpdir(), 'kronlora-demo-build-'));
    const configFile = join(root, 'examples/browser/vite.config.mjs');
    await build({ configFile, logLevel: 'warn', build: { outDir, emptyOutDir: true } });
    // One bundle: the page, kronlora/browser's worker and the WASM module as assets.
    const assets = readdirSync(join(outDir, 'assets'));
    expect(
      assets.some((f) => /^kronlora_wasm_bg-.*\.wasm$/.test(f)),
      assets.join(' '),
    ).toBe(true);
    const site = await preview({ configFile, logLevel: 'warn', build: { outDir }, preview: { host: '127.0.0.1', port: 0 } });
    try {
      const [, dataFile] = jsonl('reviews.jsonl', reviews(32, 6));
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.goto(site.resolvedUrls!.local[0]);
      expect(await page.evaluate(() => crossOriginIsolated)).toBe(true);
      await page.click('text=Use cached tiny-bert');
      await page.locator('#model-info', { hasText: 'hidden 16' }).waitFor();
      await page.setInputFiles('#data-file', dataFile);
      await setFields(page, { ...TINY_RUN, epochs: '2' });
      expect(await train(page, 60_000)).toMatch(/^completed after 8 steps/);
      expect(errors).toEqual([]);
      await page.close();
    } finally {
      await site.close();
    }
  }, 120_000);

  it('kronlora/browser by itself: files by name, storeFile, adapterBlob formats, clear errors for bad input', async () => {
    const { page, errors } = await openDemo();
    const bert = join(servedModels, 'tiny-bert');
    const files = Object.fromEntries(
      ['config.json', 'tokenizer.json', 'model.safetensors'].map((f) => [f, Array.from(readFileSync(join(bert, f)))]),
    );
    const records = reviews(16, 3);
    const result = await page.evaluate(
      async ({ module, files, records }) => {
        // Not `import(module)`: vitest would rewrite it for Node before the page sees it.
        const k = await new Function('m', 'return import(m)')(module);
        const codeOf = (p: Promise<unknown>) =>
          p.then(
            () => 'resolved',
            (e: { code?: string }) => e.code,
          );
        // Bytes by file name (ArrayBuffers; the caller's buffers stay usable: they are copied).
        const buffers = Object.fromEntries(Object.entries(files).map(([n, b]) => [n, new Uint8Array(b as number[]).buffer]));
        const model = await k.loadModel(buffers, { task: 'sequence-classification', numLabels: 2 });
        const intact = Object.values(buffers).every((b) => (b as ArrayBuffer).byteLength > 0);
        await model.addAdapter('a', { type: 'kron-lora', rank: 4, alpha: 8, targetModules: 'all-linear' });
        const jsonl = new Blob([records.map((r: object) => JSON.stringify(r)).join('\n')]);
        const data = await k.storeFile(jsonl, 'train.jsonl');
        const run = await model.train({ data, epochs: 1, batchSize: 8, maxLength: 32, validationSplit: 0 }).result;
        const blobs: Record<string, [string, number]> = {};
        for (const format of ['kronlora', 'peft-lora']) {
          const blob = await k.adapterBlob(model, { format });
          blobs[format] = [blob.type, blob.size];
        }
        return {
          intact,
          steps: run.step,
          data,
          blobs,
          noSource: await codeOf(k.loadModel(undefined)),
          badUrl: await codeOf(k.loadModel('/models/nope/')),
          badName: await codeOf(k.storeFiles({ '../x': new Uint8Array(1) })),
          notBytes: await codeOf(k.storeFile(42, 'x.jsonl')),
          missingDir: await codeOf(k.readFiles('/nope')),
          badFormat: await codeOf(k.adapterBlob(model, { format: 'onnx' })),
          unknownOption: await codeOf(k.adapterBlob(model, { fromat: 'peft-lora' })),
          headlessFormat: await codeOf(k.adapterBlob(model, { format: 'lycoris' })),
          badData: await codeOf(model.train({ data: await k.storeFile(new Blob(['{ not json']), 'bad.jsonl') }).result),
        };
      },
      { module: `/@fs${join(root, 'packages/kronlora/dist/browser/index.js')}`, files, records },
    );
    expect(result).toMatchObject({
      intact: true,
      steps: 2,
      data: expect.stringMatching(/^\/files\/\d+\/train\.jsonl$/),
      noSource: 'ERR_INVALID_ARG_TYPE',
      badUrl: 'ERR_IO',
      badName: 'ERR_INVALID_ARG_TYPE',
      notBytes: 'ERR_INVALID_ARG_TYPE',
      missingDir: 'ERR_IO',
      badFormat: 'ERR_INVALID_OPTION',
      unknownOption: 'ERR_INVALID_OPTION',
      headlessFormat: 'ERR_UNSUPPORTED',
      badData: 'ERR_INVALID_DATA',
    });
    expect(result.blobs.kronlora[0]).toBe('application/zip');
    expect(result.blobs['peft-lora'][0]).toBe('application/zip');
    for (const [, size] of Object.values(result.blobs)) expect(size).toBeGreaterThan(100);
    expect(errors).toEqual([]);
    await page.close();
  }, 120_000);

  it('loads a model folder by URL (config, tokenizer, weights fetched; optional files absent)', async () => {
    const [, dataFile] = jsonl('reviews.jsonl', reviews(32, 5));
    const { page, errors } = await openDemo();
    await page.click('text=Use cached tiny-bert');
    await page.locator('#model-info', { hasText: 'bert · 2 layers · hidden 16 (from .cache/models)' }).waitFor();
    await page.setInputFiles('#data-file', dataFile);
    await setFields(page, { 'max-steps': '2', 'batch-size': '8', 'validation-split': '0', 'max-length': '32' });
    expect(await train(page, 60_000)).toMatch(/^max-steps after 2 steps/);
    expect(await page.textContent('#params-info')).toMatch(/^bert \(2 layers, hidden 16\): adapter on 4 modules/);
    expect(errors).toEqual([]);
    await page.close();
  }, 120_000);

  it('fine-tunes a GGUF causal LM given by URL and downloads a llama.cpp LoRA that generates the same in Node', async () => {
    const modelFile = join(servedModels, 'tiny-llama/model.gguf');
    const records = Array.from({ length: 48 }, (_, i) =>
      i % 2 ? { prompt: 'a', completion: ' the b' } : { prompt: 'c', completion: ' the c' },
    );
    const [work, dataFile] = jsonl('completions.jsonl', records);
    const prompts = ['a', 'c'];

    const { page, errors } = await openDemo({ acceptDownloads: true });
    // By URL this time: the server's model list, as `npm run fetch-models`' cache would be offered.
    await page.click('text=Use cached tiny-llama/model.gguf');
    await page.locator('#model-info', { hasText: 'GGUF' }).waitFor();
    await page.setInputFiles('#data-file', dataFile);
    await page.locator('#data-info', { hasText: 'language modelling' }).waitFor();
    await setFields(page, {
      ...TINY_RUN,
      'adapter-type': 'lora',
      epochs: '3',
    });
    expect(await train(page)).toMatch(/^completed after 18 steps/);
    const losses = await demoState<number[]>(page, 'losses');
    expect(mean(losses.slice(-3))).toBeLessThan(mean(losses.slice(0, 3)) * 0.8);

    const generated = await probe<string[]>(page, prompts);
    // What it was trained to complete them with, before anything else.
    expect(generated[0].startsWith(' the b'), JSON.stringify(generated)).toBe(true);
    expect(generated[1].startsWith(' the c'), JSON.stringify(generated)).toBe(true);

    const [name, gguf] = await download(page, 'gguf-lora');
    expect(name).toBe('kronlora-adapter-gguf-lora.gguf');
    const adapterFile = join(work, 'adapter.gguf');
    writeFileSync(adapterFile, gguf);
    expect(readFileSync(adapterFile).subarray(0, 4).toString('latin1')).toBe('GGUF');

    // Node's native backend with the llama.cpp LoRA from the browser: the same greedy text.
    const model = await withBackend('native').loadModel(modelFile);
    await model.loadAdapter(adapterFile);
    for (const [i, prompt] of prompts.entries()) expect((await model.generate(prompt, { maxTokens: 32 })).text).toBe(generated[i]);
    expect(errors).toEqual([]);
    await page.close();
  }, 240_000);
});
