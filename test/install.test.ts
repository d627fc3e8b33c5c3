/**
 * Installing the packed packages (`npm run pack`, which scripts/test.sh runs first) the way a
 * user does: in an empty directory, an empty npm cache, and a PATH with node and npm but no
 * cargo or rustc. With the platform package the native addon runs; without it (as on a platform
 * no addon is published for) the WASM core does, with a one-line notice. Each install trains a
 * tiny model through the API and runs the CLI.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { missingCpuFeatures } from '../packages/kronlora/src/cpu-support.js';
import { tinyBertDir } from './tiny-models.js';

const root = join(import.meta.dirname, '..');
const packed = join(root, '.packed');
const version = JSON.parse(readFileSync(join(root, 'packages/kronlora/package.json'), 'utf8')).version as string;
const mainTarball = join(packed, `kronlora-${version}.tgz`);
const nativeTarball = join(packed, `kronlora-linux-x64-gnu-${version}.tgz`);
const modelDir = tinyBertDir(9);

/** A bin directory with node, npm, npx and sh only: Debian keeps cargo and rustc beside node in /usr/bin. */
function bareBin(): string {
  const bin = mkdtempSync(join(tmpdir(), 'kronlora-bin-'));
  const which = (cmd: string) => realpathSync(spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).stdout.trim());
  for (const cmd of ['node', 'npm', 'npx', 'sh']) symlinkSync(which(cmd), join(bin, cmd));
  return bin;
}

/** What the installed package is asked to do: the API (a few training steps) as JSON on stdout. */
const CHECK = `
import { backend, loadModel } from 'kronlora';
const model = await loadModel(process.argv[2], { task: 'sequence-classification', numLabels: 2 });
await model.addAdapter('a', { type: 'kron-lora', rank: 4, alpha: 8, kronIn: 2, kronOut: 4, targetModules: 'all-linear' });
const data = Array.from({ length: 32 }, (_, i) => ({ text: i % 2 ? 'bad not plot' : 'great fun film', label: i % 2 }));
const { losses } = await model.train({ data, epochs: 4, batchSize: 8, learningRate: 0.02, maxLength: 32, validationSplit: 0 }).result;
console.log(JSON.stringify({ backend: backend(), modelBackend: model.backend, losses }));
`;

function install(tarballs: string[]) {
  const dir = mkdtempSync(join(tmpdir(), 'kronlora-install-'));
  writeFileSync(join(dir, 'package.json'), '{ "name": "install-check", "private": true, "type": "module" }\n');
  writeFileSync(join(dir, 'check.mjs'), CHECK);
  mkdirSync(join(dir, 'npm-cache'));
  // Nothing from this machine's setup: no inherited variables, no npm config, an empty cache.
  const env = {
    HOME: dir,
    PATH: bareBin(),
    npm_config_cache: join(dir, 'npm-cache'),
    npm_config_userconfig: join(dir, 'npmrc'),
    npm_config_audit: 'false',
    npm_config_fund: 'false',
    npm_config_update_notifier: 'false',
  };
  const run = (cmd: string, args: string[], extra: Record<string, string> = {}) =>
    spawnSync(cmd, args, { cwd: dir, env: { ...env, ...extra }, encoding: 'utf8', timeout: 240_000 });
  const npm = run('npm', ['install', ...tarballs]);
  expect(npm.status, `npm install failed:\n${npm.stdout}\n${npm.stderr}`).toBe(0);
  return { dir, run };
}

function checkApi(run: ReturnType<typeof install>['run'], extra: Record<string, string> = {}) {
  const result = run('node', ['check.mjs', modelDir], extra);
  expect(result.status, result.stderr).toBe(0);
  return { ...(JSON.parse(result.stdout) as { backend: string; modelBackend: string; losses: number[] }), stderr: result.stderr };
}

const notices = (stderr: string) => stderr.split('\n').filter((l) => l.includes('KRONLORA_WASM_FALLBACK'));

/** `npx kronlora --help` and `info --json` from the installed bin: the info's stderr. */
function checkCli(run: ReturnType<typeof install>['run'], backend: string): string {
  const help = run('npx', ['kronlora', '--help']);
  expect(help.status, help.stderr).toBe(0);
  expect(help.stdout).toMatch(/Usage: kronlora/);
  const info = run('npx', ['kronlora', 'info', '--model', modelDir, '--json']);
  expect(info.status, info.stderr).toBe(0);
  expect(JSON.parse(info.stdout)).toMatchObject({ architecture: 'bert (2 layers, hidden 16)', backend });
  return info.stderr;
}

describe('the packed packages, installed without a Rust toolchain', () => {
  it('npm run pack wrote both tarballs', () => {
    for (const t of [mainTarball, nativeTarball]) expect(existsSync(t), `${t} is missing: run \`npm run pack\``).toBe(true);
  });

  let nativeLosses: number[] = [];

  it('with the platform package: the native addon, the API and the CLI', () => {
    const { dir, run } = install([mainTarball, nativeTarball]);
    expect(run('sh', ['-c', 'command -v cargo || command -v rustc']).status, 'cargo or rustc is on the bare PATH').not.toBe(0);
    expect(existsSync(join(dir, 'node_modules/@kronlora/linux-x64-gnu/kronlora.linux-x64-gnu.node'))).toBe(true);
    // kronlora's own files carry no addon: it comes from the platform package.
    expect(existsSync(join(dir, 'node_modules/kronlora/native'))).toBe(false);
    const api = checkApi(run);
    expect(api).toMatchObject({ backend: 'native', modelBackend: 'native' });
    expect(notices(api.stderr)).toEqual([]);
    expect(api.losses).toHaveLength(16);
    expect(api.losses.at(-1)!).toBeLessThan(api.losses[0] * 0.5);
    nativeLosses = api.losses;

    expect(notices(checkCli(run, 'native'))).toEqual([]);
  }, 300_000);

  it('without it: the WASM core, the same losses, and one notice', () => {
    const { dir, run } = install([mainTarball]);
    expect(existsSync(join(dir, 'node_modules/@kronlora'))).toBe(false);
    const api = checkApi(run);
    expect(api).toMatchObject({ backend: 'wasm', modelBackend: 'wasm' });
    expect(notices(api.stderr)).toHaveLength(1);
    expect(notices(api.stderr)[0]).toMatch(/runs on the WASM backend.*@kronlora\/linux-x64-gnu is not installed.*KRONLORA_BACKEND=wasm/);
    for (let i = 0; i < api.losses.length; i++) expect(api.losses[i]).toBeCloseTo(nativeLosses[i], 4);
    // Chosen on purpose: quiet.
    expect(notices(checkApi(run, { KRONLORA_BACKEND: 'wasm' }).stderr)).toEqual([]);

    expect(notices(checkCli(run, 'wasm'))).toHaveLength(1);
  }, 300_000);
});

describe('the CPU check before the native addon loads', () => {
  const flags = (list: string) => `processor\t: 0\nflags\t\t: ${list}\n`;
  it('names the x86-64-v3 features a CPU lacks', () => {
    // An x86-64-v2 CPU (Nehalem-era flags).
    expect(missingCpuFeatures(flags('fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt cx16'))).toEqual([
      'avx',
      'avx2',
      'fma',
      'f16c',
      'bmi1',
      'bmi2',
      'movbe',
      'abm',
      'xsave',
    ]);
    // Sandy Bridge: AVX without AVX2.
    expect(missingCpuFeatures(flags('sse4_2 popcnt avx xsave'))).toEqual(['avx2', 'fma', 'f16c', 'bmi1', 'bmi2', 'movbe', 'abm']);
  });
  it('passes a v3 CPU and anything it cannot read', () => {
    expect(missingCpuFeatures(flags('sse4_2 avx avx2 fma f16c bmi1 bmi2 movbe abm xsave avx512f'))).toEqual([]);
    expect(missingCpuFeatures('no flags here')).toEqual([]);
    // This machine runs the tests' native backend, so it must pass.
    expect(missingCpuFeatures()).toEqual([]);
  });
});
