// The README's JavaScript examples run as written, and print what their `// → ` comments say.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
const blocks = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);

describe('README examples', () => {
  it('has examples', () => expect(blocks.length).toBeGreaterThan(0));

  it.each(blocks.map((code, i) => [i, code]))('example %i runs and prints what it says', (_i, code) => {
    const expected = code
      .split('\n')
      .map((line) => /\/\/ → (.*?)(?:\s{2,}\(.*\))?$/.exec(line)?.[1].trim())
      .filter((v): v is string => v !== undefined);
    const env = { ...process.env, KRONLORA_BACKEND: 'native' };
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', env });
    expect(out.trim().split('\n').map((l) => l.trim())).toEqual(expected);
  });
});
