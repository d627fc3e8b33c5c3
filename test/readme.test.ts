// The README's JavaScript examples run as written, and print what their `// → ` comments say.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { tinyBertDir, tinyLlamaGguf } from './tiny-models.js';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
// Examples that use the real models run here on tiny generated ones of the same formats.
const bert = tinyBertDir(3);
const llama = tinyLlamaGguf(4);
const blocks = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) =>
  m[1].replaceAll('.cache/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', llama).replaceAll('.cache/models/minilm', bert),
);

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
    const printed = out.trim().split('\n').map((l) => l.trim());
    expect(printed).toHaveLength(expected.length);
    expected.forEach((want, i) => want !== null && expect(printed[i]).toBe(want));
  });
});
