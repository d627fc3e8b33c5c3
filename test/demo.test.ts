// `npm run demo`'s code path (examples/demo.mjs) on a tiny generated model and small JSONL
// files: both runs train, the table holds every documented row, and the output folder holds
// the adapters, the results and an SVG loss chart.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { tinyBertDir } from './tiny-models.js';

it('the demo compares Kron-LoRA and LoRA and writes adapters, results and a chart', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kronlora-demo-'));
  const records = (n: number) =>
    Array.from({ length: n }, (_, i) =>
      JSON.stringify({ text: i % 2 ? 'bad plot , not fun' : 'a great , good film', label: i % 2 ? 'negative' : 'positive' }),
    ).join('\n');
  writeFileSync(join(dir, 'train.jsonl'), records(32));
  writeFileSync(join(dir, 'test.jsonl'), records(8));
  const out = join(dir, 'out');
  const stdout = execFileSync(
    process.execPath,
    [
      'examples/demo.mjs',
      '--model',
      tinyBertDir(7),
      '--train-file',
      join(dir, 'train.jsonl'),
      '--test-file',
      join(dir, 'test.jsonl'),
      '--out',
      out,
      '--batch-size',
      '8',
      '--epochs',
      '2',
    ],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
  );
  for (const row of [
    'trainable parameters (adapter + head)',
    'of them adapter',
    'test accuracy',
    'training examples/s',
    'peak memory (RSS, MiB)',
    'adapter files (KiB)',
  ]) {
    expect(stdout).toMatch(new RegExp(`\\|\\s+${row.replace(/[()+]/g, '\\$&')} \\| [\\d.,]+ \\| [\\d.,]+ \\| [+-]?[\\d.]+ \\|`));
  }
  expect(stdout).toContain(`output folder: ${out}`);
  const svg = readFileSync(join(out, 'loss.svg'), 'utf8');
  expect(svg).toMatch(/^<svg/);
  expect(svg).toContain('Kron-LoRA');
  expect(svg).toContain('training loss');
  const { results } = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
  expect(results.map((r: { label: string }) => r.label)).toEqual(['Kron-LoRA', 'LoRA']);
  for (const r of results) {
    expect(r.steps).toHaveLength(8);
    expect(r.trainable).toBeGreaterThan(0);
    expect(existsSync(join(r.adapterDir, 'adapter_model.safetensors'))).toBe(true);
  }
  expect(results[0].adapterParameters).toBeLessThan(results[1].adapterParameters);
});
