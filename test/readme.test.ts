// The README's JavaScript examples run as written, and print what their `// → ` comments say.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tinyBertDir, tinyLlamaGguf } from './tiny-models.js';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
// Examples that use the real models run here on tiny generated ones of the same formats.
const bert = tinyBertDir(3);
const llama = tinyLlamaGguf(4);
const blocks = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) =>
  m[1].replaceAll('.cache/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', llama).replaceAll('.cache/models/minilm', bert),
);

// Shell examples: every `npx kronlora` line runs, with the real models swapped for tiny ones,
// `data/` for small JSONL files and `runs/` for a temporary directory.
const work = mkdtempSync(join(tmpdir(), 'kronlora-readme-'));
const records = (n: number) =>
  Array.from({ length: n }, (_, i) =>
    JSON.stringify({ text: i % 2 ? 'a bad plot' : 'a great film', label: i % 2 ? 'negative' : 'positive' }),
  ).join('\n');
writeFileSync(join(work, 'train.jsonl'), records(16));
writeFileSync(join(work, 'test.jsonl'), records(8));
const commands = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)]
  .flatMap((m) => m[1].split('\n'))
  .filter((line) => line.startsWith('npx kronlora '))
  .map((line) =>
    line
      .replaceAll('.cache/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', llama)
      .replaceAll('.cache/models/minilm', bert)
      .replaceAll('data/', `${work}/`)
      .replaceAll('runs/', `${work}/runs/`),
  );
const bin = new URL('../packages/kronlora/bin/kronlora.js', import.meta.url).pathname;

describe('README shell examples', () => {
  it('has CLI examples', () => expect(commands.length).toBeGreaterThanOrEqual(5));

  it('runs every CLI example in order', () => {
    for (const line of commands) {
      // The examples quote only whole arguments: split on spaces outside double quotes.
      const args = [...line.slice('npx kronlora '.length).matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]);
      const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, KRONLORA_BACKEND: 'native' } });
      expect(r.status, `${line}\n${r.stderr}`).toBe(0);
    }
  });
});

describe('README examples', () => {
  it('has examples', () => expect(blocks.length).toBeGreaterThan(0));

  it.each(blocks.map((code, i) => [i, code]))('example %i runs and prints what its comments say', (_i, code) => {
    // One output line per console.log; a `// → text` comment says what it must print.
    const expected = code
      .split('\n')
      .filter((line) => line.includes('console.log('))
      .map((line) => /\/\/ → (.*?)(?:\s{2,}\(.*\))?$/.exec(line)?.[1].trim() ?? null);
    const env = { ...process.env, KRONLORA_BACKEND: 'native' };
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', env });
    const printed = out
      .trim()
      .split('\n')
      .map((l) => l.trim());
    expect(printed).toHaveLength(expected.length);
    for (const [i, want] of expected.entries()) if (want !== null) expect(printed[i]).toBe(want);
  });
});
