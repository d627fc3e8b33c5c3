// The `kronlora` command end to end on tiny generated models: train, eval, info, generate,
// Ctrl-C and resume, `--json` fields, and one-line errors with their exit codes.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { rng } from './reference.js';
import { tinyBertDir, tinyLlamaGguf } from './tiny-models.js';

const bin = new URL('../packages/kronlora/bin/kronlora.js', import.meta.url).pathname;
const bert = tinyBertDir(5);
const llama = tinyLlamaGguf(6);
const dir = mkdtempSync(join(tmpdir(), 'kronlora-cli-'));

function reviewsFile(name: string, n: number, seed: number): string {
  const next = rng(seed);
  const lines = Array.from({ length: n }, (_, i) => {
    const positive = i % 2 === 0;
    const words = ['good', 'great', 'fun', 'bad', 'not', 'plot'].slice(positive ? 0 : 3, positive ? 3 : 6);
    const text = Array.from({ length: 3 + (i % 3) }, () => words[Math.floor(((next() + 1) / 2) * 3) % 3]).join(' ');
    return JSON.stringify({ text, label: positive ? 'pos' : 'neg' });
  });
  const file = join(dir, name);
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

const train = reviewsFile('train.jsonl', 48, 1);
const test = reviewsFile('test.jsonl', 16, 2);

function cli(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, KRONLORA_BACKEND: 'native', ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const json = (stdout: string) => JSON.parse(stdout.trim().split('\n').at(-1)!);

describe('kronlora CLI', () => {
  it('prints help with examples for every command', () => {
    for (const cmd of [[], ['train'], ['eval'], ['info'], ['generate']]) {
      const r = cli([...cmd, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/Examples:\n {2}kronlora /);
    }
  });

  it('describes a model and where an adapter goes', () => {
    const r = cli([
      'info',
      '--model',
      bert,
      '--task',
      'sequence-classification',
      '--adapter',
      'lora',
      '--rank',
      '4',
      '--targets',
      'query,value',
      '--json',
    ]);
    expect(r.code).toBe(0);
    const out = json(r.stdout);
    expect(out).toMatchObject({
      command: 'info',
      device: 'cpu',
      task: 'sequence-classification',
      linearModules: 12,
      adapter: { type: 'lora', rank: 4, alpha: 8 },
    });
    expect(out.adaptedModules).toEqual([
      'encoder.layer.0.attention.self.query',
      'encoder.layer.0.attention.self.value',
      'encoder.layer.1.attention.self.query',
      'encoder.layer.1.attention.self.value',
    ]);
    expect(out.trainableParameters.adapters.default).toBe(4 * 4 * (16 + 16));
    const human = cli(['info', '--model', bert]);
    expect(human.stdout).toMatch(/kron-lora \(rank 8, alpha 16, d_A1 2, d_A2 4\) on 12 modules: query, key, value, dense/);
    expect(human.stdout).toMatch(/\n {2}device {9}cpu \((native|wasm) backend\)\n/);
    expect(human.stdout).toMatch(/linear modules 12 \(12 F32\)/);
  });

  it('keeps a GGUF model quantised unless told --dequantize', () => {
    // 2 layers × 7 projections: all Q8_0 but ffn_down (48-wide rows are no whole 32-value block).
    const q8 = tinyLlamaGguf(6, undefined, { q8_0: true });
    const kept = json(cli(['info', '--model', q8, '--json']).stdout);
    expect(kept.weightTypes).toEqual({ Q8_0: 12, F32: 2 });
    const dequantised = json(cli(['info', '--model', q8, '--dequantize', '--json']).stdout);
    expect(dequantised.weightTypes).toEqual({ F32: 14 });
    // quantized: false is what a Hugging Face directory is anyway.
    expect(cli(['info', '--model', bert, '--dequantize']).code).toBe(0);
  });

  it('trains, evaluates the saved adapter, and prints plain progress lines off a terminal', () => {
    const out = join(dir, 'run');
    const r = cli([
      'train',
      '--model',
      bert,
      '--data',
      train,
      '--validation',
      test,
      '--epochs',
      '4',
      '--batch-size',
      '8',
      '--lr',
      '5e-3',
      '--out',
      out,
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/ {2}step 24\/24 · loss [\d.]+ · lr [\d.e+-]+ · [\d.]+ ex\/s · ETA 0s/);
    expect(r.stdout).toMatch(/completed after 24\/24 steps/);
    expect(r.stdout).toContain(`adapter: ${join(out, 'adapter')}`);
    const e = cli(['eval', '--model', bert, '--adapter', join(out, 'adapter'), '--data', test, '--json']);
    expect(e.code, e.stderr).toBe(0);
    const metrics = json(e.stdout).metrics;
    expect(metrics.examples).toBe(16);
    expect(metrics.accuracy).toBeGreaterThanOrEqual(0.5);
    // Merged into a Hugging Face directory: the model alone evaluates as base + adapter did.
    const merged = join(dir, 'run-merged');
    const m = cli(['merge', '--model', bert, '--adapter', join(out, 'adapter'), '--out', merged, '--json']);
    expect(m.code, m.stderr).toBe(0);
    const em = cli(['eval', '--model', merged, '--data', test, '--json']);
    expect(em.code, em.stderr).toBe(0);
    expect(json(em.stdout).metrics.loss).toBeCloseTo(metrics.loss, 5);
    // Several files: one row each (a forgetting table is one command), in the order given.
    const rows = cli(['eval', '--model', bert, '--adapter', join(out, 'adapter'), '--data', test, train]);
    expect(rows.code, rows.stderr).toBe(0);
    const lines = rows.stdout.trim().split('\n');
    expect(lines.map((l) => l.split(':')[0])).toEqual([test, train]);
    expect(lines[0]).toMatch(/16 examples · loss [\d.]+/);
    const both = json(cli(['eval', '--model', bert, '--adapter', join(out, 'adapter'), '--data', test, train, '--json']).stdout);
    expect(both.results.map((r: { data: string }) => r.data)).toEqual([test, train]);
    expect(both.results[0].metrics.loss).toBeCloseTo(metrics.loss, 5);
    const t = cli([
      'train',
      '--model',
      bert,
      '--data',
      train,
      '--validation',
      test,
      '--epochs',
      '4',
      '--batch-size',
      '8',
      '--lr',
      '5e-3',
      '--out',
      join(dir, 'run-json'),
      '--json',
    ]);
    const result = json(t.stdout);
    expect(result).toMatchObject({ command: 'train', task: 'classification', result: { reason: 'completed', step: 24 } });
    expect(result.result.metrics.loss).toBeCloseTo(metrics.loss, 5);
  });

  it('stops on Ctrl-C with a checkpoint, says how to resume, and resumes exactly', async () => {
    const args = [
      'train',
      '--model',
      bert,
      '--data',
      train,
      '--validation',
      test,
      '--epochs',
      '60',
      '--batch-size',
      '4',
      '--lr',
      '1e-3',
      '--json',
    ];
    const whole = json(cli([...args, '--out', join(dir, 'whole')]).stdout).result;
    const out = join(dir, 'interrupted');
    const child = spawn(process.execPath, [bin, ...args.filter((a) => a !== '--json'), '--out', out], {
      env: { ...process.env, KRONLORA_BACKEND: 'native' },
    });
    let stderr = '';
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    const code = await new Promise<number | null>((resolve) => {
      child.stderr.on('data', (d) => {
        stderr += d;
        if (/step \d+\/720/.test(stderr) && !child.killed) child.kill('SIGINT');
      });
      child.on('exit', (c) => resolve(c));
    });
    expect(code, stderr).toBe(130);
    expect(stderr).toMatch(/interrupted at step \d+; checkpoint .*checkpoint-\d{6}/);
    expect(stderr).toContain(`resume with the same command plus: --resume ${out}`);
    expect(stdout).toMatch(/cancelled after \d+\/720 steps/);
    const resumed = cli([...args, '--out', out, '--resume', out]);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(json(resumed.stdout).result.losses).toEqual(whole.losses);
  });

  it('generates with a causal LM', () => {
    const r = cli(['generate', '--model', llama, '--prompt', 'a the', '--max-tokens', '5', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(json(r.stdout)).toMatchObject({ command: 'generate', prompt: 'a the', promptTokens: 2 });
    const lm = join(dir, 'lm.jsonl');
    writeFileSync(lm, '{"prompt":"a","completion":" the b"}\n{"text":"c the c"}\n');
    const t = cli([
      'train',
      '--model',
      llama,
      '--data',
      lm,
      '--validation',
      lm,
      '--epochs',
      '2',
      '--batch-size',
      '2',
      '--out',
      join(dir, 'lm'),
      '--json',
    ]);
    expect(t.code, t.stderr).toBe(0);
    expect(json(t.stdout).result.metrics.perplexity).toBeGreaterThan(1);
    const g = cli(['generate', '--model', llama, '--adapter', join(dir, 'lm', 'adapter'), '--prompt', 'a', '--max-tokens', '3']);
    expect(g.code, g.stderr).toBe(0);
    expect(g.stdout.startsWith('a')).toBe(true);
    // The trained adapter served by others: merged into the GGUF, and as a GGUF LoRA file.
    const merged = join(dir, 'lm-merged.gguf');
    const m = cli(['merge', '--model', llama, '--adapter', join(dir, 'lm', 'adapter'), '--out', merged, '--json']);
    expect(m.code, m.stderr).toBe(0);
    expect(json(m.stdout)).toMatchObject({ command: 'merge', out: merged });
    const mg = cli(['generate', '--model', merged, '--prompt', 'a', '--max-tokens', '3']);
    expect(mg.stdout, 'the merged model generates what the adapted one does').toBe(g.stdout);
    const e = cli([
      'export',
      '--model',
      llama,
      '--adapter',
      join(dir, 'lm', 'adapter'),
      '--format',
      'gguf-lora',
      '--out',
      join(dir, 'lm.gguf'),
    ]);
    expect(e.code, e.stderr).toBe(0);
    expect(e.stdout).toMatch(/wrote .*lm\.gguf \(gguf-lora\)/);
    const bad = cli(['export', '--model', llama, '--adapter', join(dir, 'lm', 'adapter'), '--format', 'onnx', '--out', join(dir, 'x')]);
    expect([bad.code, bad.stderr]).toEqual([2, expect.stringMatching(/argument 'onnx' is invalid/)]);
  });

  it('fails with one line and a non-zero exit on bad arguments, files and data', () => {
    const cases: [string[], number, RegExp][] = [
      [['train', '--model', bert, '--data', train], 2, /required option '--out <dir>' not specified/],
      [['train', '--model', bert, '--data', train, '--out', dir, '--epoch', '2'], 2, /unknown option '--epoch'/],
      [
        ['train', '--model', bert, '--data', join(dir, 'nope.jsonl'), '--out', dir],
        1,
        /^kronlora: error \[ERR_INVALID_OPTION\]: --data .*nope.jsonl: no such file or directory$/,
      ],
      [['train', '--model', join(dir, 'nope'), '--data', train, '--out', dir], 1, /--model .*nope: no such file or directory/],
      [['train', '--model', bert, '--data', train, '--out', dir, '--rank', 'x'], 1, /--rank must be a positive integer, got "x"/],
      [['train', '--model', bert, '--data', train, '--out', dir, '--adapter', 'dora'], 2, /argument 'dora' is invalid/],
      [['info', '--model', bert, '--kron-out', '5'], 1, /\[ERR_FACTORIZATION\]: .*kronOut = 5 does not divide/],
      [['frobnicate'], 2, /unknown command 'frobnicate'/],
    ];
    const bad = join(dir, 'bad.jsonl');
    writeFileSync(bad, '{"text":"good","label":"pos"}\n{"text": "bad" "label":"neg"}\n');
    cases.push([
      ['train', '--model', bert, '--data', bad, '--out', join(dir, 'bad')],
      1,
      /^kronlora: error \[ERR_INVALID_DATA\]: .*bad.jsonl:2: invalid JSON/,
    ]);
    for (const [args, code, message] of cases) {
      const r = cli(args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(code);
      const lines = r.stderr.trim().split('\n');
      expect(
        lines.some((l) => message.test(l)),
        `${args.join(' ')}: ${r.stderr}`,
      ).toBe(true);
      expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    }
    const debug = cli(['train', '--model', bert, '--data', bad, '--out', join(dir, 'bad'), '--debug']);
    expect(debug.stderr).toMatch(/\n\s+at /);
    expect(existsSync(join(dir, 'bad', 'adapter'))).toBe(false);
  });
});
