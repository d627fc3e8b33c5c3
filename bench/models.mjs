// Figures for the real models (fetched by `npm run fetch-models`): load time and resident
// memory of all-MiniLM-L6-v2 and SmolLM2-135M, trainable parameters of Kron-LoRA and LoRA on
// all linear layers of MiniLM, and SmolLM2 generation speed, on native and WASM.
// Each measurement runs in a fresh Node process so memory figures are not shared.
//   npm run bench:models        → prints a table, writes bench/results/models.json
import { execFileSync } from 'node:child_process';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { fetchModel } from '../scripts/fetch-models.mjs';

const MINILM = await fetchModel('minilm');
const SMOLLM = `${await fetchModel('smollm2')}/SmolLM2-135M-Instruct.Q4_1.gguf`;

const child = `
import { readFileSync } from 'node:fs';
import { withBackend } from 'kronlora';
const { BENCH_BACKEND: backend, BENCH_WHAT: what, BENCH_PATH: path } = process.env;
const api = withBackend(backend);
const kib = (key) => parseInt(readFileSync('/proc/self/status', 'utf8').split(String.fromCharCode(10)).find((l) => l.startsWith(key + ':')).slice(key.length + 1));
const rssBefore = kib('VmRSS');
let t0 = performance.now();
const model = await api.loadModel(path, what === 'minilm' ? { task: 'embedding' } : {});
const loadMs = performance.now() - t0;
const out = { backend, what, loadMs, rssMiB: kib('VmRSS') / 1024, anonMiB: kib('RssAnon') / 1024, peakMiB: kib('VmHWM') / 1024, rssBeforeMiB: rssBefore / 1024 };
if (what === 'minilm') {
  const kron = await api.loadModel(path);
  await kron.addAdapter('kron', { type: 'kron-lora', rank: 8, alpha: 16, kronIn: 2, kronOut: 4, targetModules: 'all-linear' });
  const lora = await api.loadModel(path);
  await lora.addAdapter('lora', { type: 'lora', rank: 16, alpha: 32, targetModules: 'all-linear' });
  out.kron = kron.trainableParameters();
  out.lora = lora.trainableParameters();
} else {
  await model.generate('Hi', { maxTokens: 4 });
  const rates = [];
  for (let i = 0; i < 3; i++) {
    t0 = performance.now();
    const g = await model.generate('Once upon a time, in a small village by the sea,', { maxTokens: 64 });
    out.generatedTokens = g.generatedTokens;
    rates.push(g.generatedTokens / ((performance.now() - t0) / 1000));
  }
  rates.sort((a, b) => a - b);
  out.tokensPerSecond = rates[1];
}
console.log(JSON.stringify(out));
`;

const results = [];
for (const backend of ['native', 'wasm']) {
  for (const [what, path] of [
    ['minilm', MINILM],
    ['smollm2', SMOLLM],
  ]) {
    const stdout = execFileSync(process.execPath, ['--input-type=module', '-e', child], {
      encoding: 'utf8',
      env: { ...process.env, BENCH_BACKEND: backend, BENCH_WHAT: what, BENCH_PATH: path },
    });
    results.push(JSON.parse(stdout.trim().split('\n').pop()));
    console.error(`  done: ${backend} ${what}`);
  }
}

const r = (b, w) => results.find((x) => x.backend === b && x.what === w);
const lines = [
  '| model | backend | load (s) | RSS before (MiB) | RSS after load (MiB) | of it anonymous (MiB) | peak RSS (MiB) | generate (tokens/s) |',
  '|---|---|---|---|---|---|---|---|',
];
for (const w of ['minilm', 'smollm2']) {
  for (const b of ['native', 'wasm']) {
    const x = r(b, w);
    lines.push(
      `| ${w === 'minilm' ? 'all-MiniLM-L6-v2' : 'SmolLM2-135M (GGUF Q4_1 → f32)'} | ${b} | ${(x.loadMs / 1000).toFixed(2)} | ${x.rssBeforeMiB.toFixed(0)} | ${x.rssMiB.toFixed(0)} | ${x.anonMiB.toFixed(0)} | ${x.peakMiB.toFixed(0)} | ${x.tokensPerSecond ? x.tokensPerSecond.toFixed(1) : '–'} |`,
    );
  }
}
const m = r('native', 'minilm');
lines.push('', '| adapter on all linear layers of MiniLM | trainable | of total | % |', '|---|---|---|---|');
lines.push(
  `| Kron-LoRA d_A1=2 d_A2=4 r=8 | ${m.kron.trainable.toLocaleString('en')} | ${m.kron.total.toLocaleString('en')} | ${m.kron.percentage.toFixed(3)} |`,
);
lines.push(
  `| LoRA r=16 | ${m.lora.trainable.toLocaleString('en')} | ${m.lora.total.toLocaleString('en')} | ${m.lora.percentage.toFixed(3)} |`,
);
console.log(lines.join('\n'));

const dir = fileURLToPath(new URL('./results/', import.meta.url));
mkdirSync(dir, { recursive: true });
writeFileSync(`${dir}.models.tmp`, JSON.stringify({ date: new Date().toISOString(), results }, null, 2));
renameSync(`${dir}.models.tmp`, `${dir}models.json`);
console.log(`saved ${dir}models.json`);
