import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { backend } from 'kronlora';
import { tinyBertDir } from './tiny-models.js';

/** Run a snippet in a fresh Node process with KRONLORA_BACKEND set (or unset). */
function runWith(value: string | undefined, code: string, nodeFlags: string[] = []): string {
  const env = { ...process.env };
  if (value === undefined) delete env.KRONLORA_BACKEND;
  else env.KRONLORA_BACKEND = value;
  return execFileSync(process.execPath, [...nodeFlags, '--input-type=module', '-e', code], { env, encoding: 'utf8' }).trim();
}

/** Run a snippet with `env` added (and KRONLORA_* unset unless given); stdout and stderr. */
function runEnv(env: Record<string, string>, code: string): { out: string; err: string } {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('KRONLORA_')));
  const run = spawnSync(process.execPath, ['--input-type=module', '-e', code], { env: { ...base, ...env }, encoding: 'utf8' });
  expect(run.status, run.stderr).toBe(0);
  return { out: run.stdout.trim(), err: run.stderr };
}

/** Where the CPU addon lies (`native/kronlora.<triple>.node` in the package). */
function cpuAddon(): string {
  const pkg = join(dirname(fileURLToPath(import.meta.url)), '..', 'packages', 'kronlora');
  const triple = `${process.platform}-${process.arch}-gnu`;
  return join(pkg, 'native', `kronlora.${triple}.node`);
}

/** Load the tiny model on `device` and print where it landed. */
const onDevice = (dir: string, device: string) => `import { loadModel, backend } from 'kronlora';
  const m = await loadModel(${JSON.stringify(dir)}, { device: ${JSON.stringify(device)} });
  const [v] = await m.embed(['the movie']);
  console.log(m.backend, m.device, v.length, backend());`;

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
    expect(out).toBe('ERR_BACKEND: KRONLORA_BACKEND must be "native", "cuda" or "wasm", got "gpu"');
  });

  it("loading the native addon turns off candle's busy-waiting pool threads, unless the user set it", () => {
    const code = `import { loadModel } from 'kronlora';
      const before = process.env.CANDLE_BARRIER_POOL_SPIN_LIMIT;
      const m = await loadModel(${JSON.stringify(tinyBertDir())});
      await m.embed(['the movie']);
      console.log(m.backend, before, process.env.CANDLE_BARRIER_POOL_SPIN_LIMIT);`;
    // This test process has loaded the addon too: start the children without its setting.
    const { CANDLE_BARRIER_POOL_SPIN_LIMIT: _, ...env } = process.env;
    const run = (extra: Record<string, string>) =>
      execFileSync(process.execPath, ['--input-type=module', '-e', code], {
        env: { ...env, KRONLORA_BACKEND: 'native', ...extra },
        encoding: 'utf8',
      }).trim();
    expect(run({})).toBe('native undefined 0');
    expect(run({ CANDLE_BARRIER_POOL_SPIN_LIMIT: '500' })).toBe('native 500 500');
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

  it('WASM models load under Node flags a worker refuses (V8 and process-wide: --max-old-space-size, --expose-gc, --title)', () => {
    const dir = tinyBertDir(5);
    const code = `import { loadModel } from 'kronlora';
      const m = await loadModel(${JSON.stringify(dir)});
      const [v] = await m.embed(['the movie']);
      console.log(m.backend, v.length)`;
    for (const flag of ['--max-old-space-size=2048', '--expose-gc', '--stack-size=2000', '--title=kronlora-test']) {
      expect(runWith('wasm', code, [flag]), flag).toBe('wasm 16');
    }
  });
});

describe('device selection (no GPU here: every path below must end on the CPU, or say why not)', () => {
  const dir = tinyBertDir(6);
  // A CUDA addon that cannot load: what a machine without the driver or CUDA libraries sees
  // (dlopen fails the same way on a missing libcuda.so.1 as on a file that is no ELF object).
  const broken = join(mkdtempSync(join(tmpdir(), 'kronlora-cuda-')), 'kronlora.cuda.node');
  writeFileSync(broken, 'not a shared object');

  it('auto without a CUDA addon runs on the CPU addon, silently', () => {
    const { out, err } = runEnv({ KRONLORA_CUDA_ADDON: join(dirname(broken), 'absent.node') }, onDevice(dir, 'auto'));
    expect(out).toBe('native cpu 16 native');
    expect(err).not.toMatch(/warning/i);
  });

  it('auto with a CUDA addon that cannot load falls back to the CPU with one warning', () => {
    const code = `${onDevice(dir, 'auto')}
      const again = await (await import('kronlora')).loadModel(${JSON.stringify(dir)}, { device: 'auto' });
      console.log(again.device);`;
    const { out, err } = runEnv({ KRONLORA_CUDA_ADDON: broken }, code);
    expect(out).toBe('native cpu 16 native\ncpu');
    const warnings = err.split('\n').filter((l) => l.includes('KRONLORA_NO_CUDA'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('device "auto" runs on the CPU: the CUDA addon cannot be used');
    expect(warnings[0]).toContain(broken);
  });

  it('auto with a CUDA addon that loads but sees no GPU falls back to the CPU', () => {
    // The CPU addon stands in for a CUDA build on a machine without a GPU: it counts 0 devices.
    const { out, err } = runEnv({ KRONLORA_CUDA_ADDON: cpuAddon() }, onDevice(dir, 'auto'));
    expect(out).toBe('native cpu 16 native');
    expect(err).toContain('sees no GPU');
  });

  it('an explicit cuda device says why it cannot be used', () => {
    const code = `import { loadModel } from 'kronlora';
      for (const device of ['cuda', 'cuda:1']) {
        try { await loadModel(${JSON.stringify(dir)}, { device }); console.log('loaded'); }
        catch (e) { console.log(e.code + ' ' + e.message); }
      }`;
    const { out } = runEnv({ KRONLORA_CUDA_ADDON: broken }, code);
    const lines = out.split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^ERR_UNSUPPORTED device "cuda" needs the CUDA addon, which cannot be used: /);
    expect(lines[0]).toContain(broken);
    expect(lines[1]).toMatch(/^ERR_UNSUPPORTED device "cuda:1" needs the CUDA addon/);
  });

  it('KRONLORA_DEVICE overrides the option, and a bad value is a clear error', () => {
    const forced = runEnv({ KRONLORA_DEVICE: 'cpu', KRONLORA_CUDA_ADDON: broken }, onDevice(dir, 'cuda'));
    expect(forced.out).toBe('native cpu 16 native');
    const auto = runEnv({ KRONLORA_DEVICE: 'auto', KRONLORA_CUDA_ADDON: broken }, onDevice(dir, 'cpu'));
    expect(auto.out).toBe('native cpu 16 native');
    expect(auto.err).toContain('KRONLORA_NO_CUDA');
    const bad = runEnv(
      { KRONLORA_DEVICE: 'gpu0' },
      `import { loadModel } from 'kronlora';
      try { await loadModel(${JSON.stringify(dir)}); } catch (e) { console.log(e.code + ': ' + e.message) }`,
    );
    expect(bad.out).toBe('ERR_INVALID_OPTION: KRONLORA_DEVICE must be "cpu", "cuda", "cuda:N" or "auto", got "gpu0"');
  });

  it('the CPU addon itself counts no GPU and runs "auto" on the CPU', () => {
    const { out } = runEnv(
      { KRONLORA_BACKEND: 'native' },
      `import { withBackend } from 'kronlora';
      const m = await withBackend('native').loadModel(${JSON.stringify(dir)}, { device: 'auto' });
      console.log(m.device);
      try { await withBackend('native').loadModel(${JSON.stringify(dir)}, { device: 'cuda' }) } catch (e) { console.log(e.code) }`,
    );
    expect(out).toBe('cpu\nERR_UNSUPPORTED');
  });
});
