// Benchmark: median time of one forward+backward (`gradients()`) of KronLoraLinear (d_A1 = 2,
// d_A2 = 4, r = 8), LoraLinear (r = 16) and the frozen base alone, on every backend that loads.
// Prints a table and writes bench/results/layers.json. Usage: npm run bench [-- --quick]
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { withBackend } from 'kronlora';
import { randomArray } from './random.mjs';

const quick = process.argv.includes('--quick');
const ROWS = quick ? 256 : 2048;
const SIZES = quick ? [256] : [768, 4096];
const reps = (size, backend) => (quick ? 3 : size >= 4096 ? (backend === 'wasm' ? 3 : 9) : 41);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const results = [];
for (const name of ['native', 'wasm']) {
  let api;
  try {
    api = withBackend(name);
  } catch (error) {
    console.log(`skipping ${name}: ${error.message}`);
    continue;
  }
  for (const size of SIZES) {
    const weight = randomArray(size * size, 1, 0.1);
    const x = randomArray(ROWS * size, 2, 0.1);
    const g = randomArray(ROWS * size, 3, 0.1);
    const common = { inFeatures: size, outFeatures: size, alpha: 16, weight };
    const kron = new api.KronLoraLinear({ ...common, rank: 8, kronIn: 2, kronOut: 4 });
    const lora = new api.LoraLinear({ ...common, rank: 16 });
    // The frozen base alone: a merged layer computes x·W'ᵀ and only the input gradient.
    const base = new api.LoraLinear({ ...common, rank: 1 });
    base.merge();
    const variants = { 'kron-lora': kron, lora, base };
    const times = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
    for (const layer of Object.values(variants)) layer.gradients(x, ROWS, g); // warm-up
    // Interleave the variants so that machine noise hits all of them alike.
    for (let r = 0; r < reps(size, name); r++) {
      for (const [k, layer] of Object.entries(variants)) {
        const t0 = performance.now();
        layer.gradients(x, ROWS, g);
        times[k].push(performance.now() - t0);
      }
    }
    for (const [k, layer] of Object.entries(variants)) {
      results.push({
        backend: name,
        size,
        rows: ROWS,
        layer: k,
        medianMs: median(times[k]),
        samplesMs: times[k],
        trainableParameters: k === 'base' ? 0 : layer.numTrainableParameters,
      });
      layer.dispose();
    }
    console.error(`  done: ${name} ${size}×${size}`);
  }
}

const find = (b, s, l) => results.find((r) => r.backend === b && r.size === s && r.layer === l)?.medianMs;
const rowsOut = [];
for (const size of SIZES) {
  for (const b of ['native', 'wasm']) {
    const [k, l, base] = [find(b, size, 'kron-lora'), find(b, size, 'lora'), find(b, size, 'base')];
    if (k === undefined) continue;
    const wasmRatio = b === 'wasm' && find('native', size, 'kron-lora') ? (k / find('native', size, 'kron-lora')).toFixed(2) : '';
    rowsOut.push(
      `| ${size}×${size} | ${b} | ${base.toFixed(1)} | ${l.toFixed(1)} | ${k.toFixed(1)} | ${(k / l).toFixed(3)} | ${wasmRatio} |`,
    );
  }
}
const table = [
  `forward+backward, ${ROWS} rows, median ms (${cpus().length} CPUs: ${cpus()[0]?.model ?? '?'})`,
  '| layer | backend | frozen base | LoRA r=16 | Kron-LoRA (2,4,8) | Kron/LoRA | WASM/native (Kron) |',
  '|---|---|---|---|---|---|---|',
  ...rowsOut,
].join('\n');
console.log(table);

mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
const file = new URL(`./results/layers${quick ? '-quick' : ''}.json`, import.meta.url);
const tmp = new URL(`./results/.layers-${process.pid}.tmp`, import.meta.url);
writeFileSync(tmp, JSON.stringify({ date: new Date().toISOString(), node: process.version, cpus: cpus().length, results }, null, 2));
renameSync(tmp, file);
console.log(`saved ${file.pathname}`);
