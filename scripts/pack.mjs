#!/usr/bin/env node
// `npm run pack`: the npm packages of this build, in napi-rs' layout, into .packed/:
//   kronlora-<v>.tgz                    TypeScript (dist/), the CLI, the WASM core (Node and web glue)
//   kronlora-linux-x64-gnu-<v>.tgz      @kronlora/linux-x64-gnu: the native addon, stripped
//   kronlora-linux-x64-gnu-cuda-<v>.tgz @kronlora/linux-x64-gnu-cuda, only when `npm run build:cuda` built it
// kronlora names the CPU platform packages as optionalDependencies, so npm installs the one whose
// os / cpu / libc match and skips the others; without one, kronlora runs on WASM. The CUDA package
// is installed by name, beside them, where a GPU is. The addon is
// built for x86-64-v3 (.cargo/config.toml), not for this CPU, so the package runs on any
// x86-64-v3 machine; the loader checks the CPU first. Sizes are printed and saved to
// .packed/sizes.json. Needs the build (scripts/build.sh, which `npm run pack` runs first).
import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkgDir = join(root, 'packages/kronlora');
const outDir = join(root, '.packed');
const stage = join(outDir, 'stage');
const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
const { version } = pkg;

/** The pnpm catalog's versions (pnpm-workspace.yaml), which `catalog:` in package.json refers to. */
function catalog() {
  const text = readFileSync(join(root, 'pnpm-workspace.yaml'), 'utf8');
  const block = /^catalog:\n((?:[ \t]+.*\n)+)/m.exec(text);
  if (!block) throw new Error('pnpm-workspace.yaml has no catalog block');
  return Object.fromEntries(
    block[1]
      .split('\n')
      .map((l) => /^\s+"?([^":]+)"?:\s*(\S+)/.exec(l))
      .filter(Boolean)
      .map((m) => [m[1], m[2]]),
  );
}

function resolveCatalog(deps) {
  const versions = catalog();
  return Object.fromEntries(
    Object.entries(deps ?? {}).map(([name, spec]) => {
      if (spec !== 'catalog:') return [name, spec];
      if (!versions[name]) throw new Error(`${name} is catalog: but not in pnpm-workspace.yaml's catalog`);
      return [name, versions[name]];
    }),
  );
}

function need(path, how) {
  if (!existsSync(path)) throw new Error(`${path} is missing: ${how}`);
  return path;
}

/** `npm pack` a staged folder into .packed/; the tarball's path. */
function npmPack(dir) {
  const out = execFileSync('npm', ['pack', '--json', '--pack-destination', outDir], { cwd: dir, encoding: 'utf8' });
  const [info] = JSON.parse(out);
  return { file: info.filename, size: info.size, unpackedSize: info.unpackedSize, entries: info.entryCount };
}

const platforms = [
  // [package suffix, addon file, what it is]
  ['linux-x64-gnu', 'kronlora.linux-x64-gnu.node', 'native addon (CPU)'],
  ['linux-x64-gnu-cuda', 'kronlora.linux-x64-gnu.cuda.node', 'native addon built with CUDA'],
];

// Only what this script writes is replaced: its staging folder and its own tarballs.
mkdirSync(outDir, { recursive: true });
rmSync(stage, { recursive: true, force: true });
for (const f of readdirSync(outDir)) if (/^kronlora-.*\.tgz$/.test(f)) rmSync(join(outDir, f));
mkdirSync(stage);
const sizes = { version, packages: [] };

// Platform packages first: kronlora lists the ones built here.
const optional = {};
for (const [suffix, addon, what] of platforms) {
  const built = join(pkgDir, 'native', addon);
  if (!existsSync(built)) {
    if (suffix === 'linux-x64-gnu') need(built, 'run `npm run build` first');
    continue;
  }
  const dir = join(stage, suffix);
  mkdirSync(dir);
  copyFileSync(built, join(dir, addon));
  // Symbols only help a debugger; the dynamic ones Node needs stay.
  execFileSync('strip', ['--strip-unneeded', join(dir, addon)]);
  const name = `@kronlora/${suffix}`;
  writeFileSync(
    join(dir, 'package.json'),
    `${JSON.stringify(
      {
        name,
        version,
        description: `kronlora's ${what} for Linux x86-64 (glibc), built for x86-64-v3 (AVX2, FMA)`,
        license: pkg.license,
        repository: pkg.repository,
        main: addon,
        files: [addon],
        os: ['linux'],
        cpu: ['x64'],
        libc: ['glibc'],
        engines: pkg.engines,
      },
      null,
      2,
    )}\n`,
  );
  // The CPU addon installs with kronlora wherever it fits; the CUDA one (large, useless without
  // a GPU) only when asked for: `npm install @kronlora/linux-x64-gnu-cuda`.
  if (!suffix.endsWith('-cuda')) optional[name] = version;
  const packed = npmPack(dir);
  sizes.packages.push({ name, addonBytes: statSync(built).size, strippedBytes: statSync(join(dir, addon)).size, ...packed });
}

// kronlora itself: what package.json's `files` names, less the addons (they are above).
const main = join(stage, 'kronlora');
mkdirSync(main);
need(join(pkgDir, 'dist/index.js'), 'run `npm run build` first');
for (const entry of pkg.files.filter((f) => f !== 'native'))
  cpSync(need(join(pkgDir, entry), 'run `npm run build` first'), join(main, entry), { recursive: true });
copyFileSync(join(root, 'README.md'), join(main, 'README.md'));
const { devDependencies: _dev, scripts: _scripts, ...published } = pkg;
writeFileSync(
  join(main, 'package.json'),
  `${JSON.stringify(
    {
      ...published,
      files: pkg.files.filter((f) => f !== 'native'),
      dependencies: resolveCatalog(pkg.dependencies),
      optionalDependencies: optional,
    },
    null,
    2,
  )}\n`,
);
const packedMain = npmPack(main);
sizes.packages.unshift({ name: 'kronlora', wasmBytes: statSync(join(main, 'wasm-web/kronlora_wasm_bg.wasm')).size, ...packedMain });

rmSync(stage, { recursive: true, force: true });
const tmp = join(outDir, 'sizes.json.tmp');
writeFileSync(tmp, `${JSON.stringify(sizes, null, 2)}\n`);
renameSync(tmp, join(outDir, 'sizes.json'));

const mib = (n) => (n === undefined ? '' : `${(n / 2 ** 20).toFixed(1)} MiB`);
console.log(`packed kronlora ${version} into ${outDir}:`);
for (const p of sizes.packages) {
  const extra = p.strippedBytes
    ? `; addon ${mib(p.addonBytes)} → ${mib(p.strippedBytes)} stripped`
    : p.wasmBytes
      ? `; WASM ${mib(p.wasmBytes)} (one module, Node and web glue)`
      : '';
  console.log(`  ${p.file.padEnd(40)} ${mib(p.size).padStart(9)} packed, ${mib(p.unpackedSize).padStart(9)} unpacked${extra}`);
}
