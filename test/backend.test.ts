import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { backend } from 'kronlora';
import { tinyBertDir } from './tiny-models.js';

/** Run a snippet in a fresh Node process with KRONLORA_BACKEND set (or unset). */
function runWith(value: string | undefined, code: string): string {
  const env = { ...process.env };
  if (value === undefined) delete env.KRONLORA_BACKEND;
  else env.KRONLORA_BACKEND = value;
  return execFileSync(process.execPath, ['--input-type=module', '-e', code], { env, encoding: 'utf8' }).trim();
}

describe('backend selection', () => {
  it('prefers the native addon', () => {
    expect(runWith(undefined, "import { backend } from 'kronlora'; console.log(backend())")).toBe('native');
    expect(['native', 'wasm']).toContain(backend());
  });

  it('KRONLORA_BACKEND forces one', () => {
    for (const name of ['native', 'wasm']) {
      const out = runWith(
        name,
        `import { backend, KronLoraLinear } from 'kronlora';
        const l = new KronLoraLinear({ inFeatures: 4, outFeatures: 4, rank: 1, alpha: 1 });
        console.log(backend(), l.backend)`,
      );
      expect(out).toBe(`${name} ${name}`);
    }
  });

  it('an unknown KRONLORA_BACKEND is a clear error', () => {
    const out = runWith(
      'gpu',
      `import { backend } from 'kronlora';
      try { backend(); } catch (e) { console.log(e.code + ': ' + e.message) }`,
    );
    expect(out).toBe('ERR_BACKEND: KRONLORA_BACKEND must be "native" or "wasm", got "gpu"');
  });

  it('WASM models load in a process started with --input-type=module -e (worker flags are filtered)', () => {
    const dir = tinyBertDir(5);
    const out = runWith(
      'wasm',
      `import { loadModel } from 'kronlora';
      const m = await loadModel(${JSON.stringify(dir)});
      const [v] = await m.embed(['the movie']);
      console.log(m.backend, v.length)`,
    );
    expect(out).toBe('wasm 16');
  });
});
