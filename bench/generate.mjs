// Greedy generation side by side: kronlora (native) against llama.cpp through node-llama-cpp,
// on the same GGUF (SmolLM2-135M-Instruct Q4_1, fetched by `npm run fetch-models`), the same
// prompt and thread count. Rounds are interleaved, each system in a fresh Node process per
// round, so background load hits both alike.
//   npm run bench:generate -- --llama-cpp /path/to/dir [--rounds 3] [--threads 2] [--tokens 64]
// `--llama-cpp` names a directory whose node_modules holds node-llama-cpp (installed outside the
// repository: `npm install node-llama-cpp@3.22.1`; its prebuilt binaries need no compiler).
// Without it only kronlora runs. Writes bench/results/generate.json.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { fetchModel } from '../scripts/fetch-models.mjs';

const { values: args } = parseArgs({
  options: {
    'llama-cpp': { type: 'string' },
    rounds: { type: 'string', default: '3' },
    threads: { type: 'string', default: '2' },
    tokens: { type: 'string', default: '64' },
  },
});
const rounds = Number(args.rounds);
const GGUF = `${await fetchModel('smollm2')}/SmolLM2-135M-Instruct.Q4_1.gguf`;
const PROMPT = 'Once upon a time, in a small village by the sea,';

// Each child prints one JSON line: tokens generated and seconds (prompt included), best of 3
// after a warm-up, and the process's peak RSS.
const peak = `const peakMiB = () => parseInt(readFileSync('/proc/self/status', 'utf8').split(String.fromCharCode(10)).find((l) => l.startsWith('VmHWM:')).slice(6)) / 1024;`;
const kronloraChild = `
import { readFileSync } from 'node:fs';
import { withBackend } from 'kronlora';
${peak}
const { GEN_PATH: path, GEN_PROMPT: prompt, GEN_TOKENS: tokens } = process.env;
const model = await withBackend('native').loadModel(path);
await model.generate('Hi', { maxTokens: 4 });
const runs = [];
for (let i = 0; i < 3; i++) {
  const t0 = performance.now();
  const g = await model.generate(prompt, { maxTokens: Number(tokens) });
  runs.push({ tokens: g.generatedTokens, seconds: (performance.now() - t0) / 1000 });
}
console.log(JSON.stringify({ runs, peakMiB: peakMiB() }));
`;
const llamaCppChild = `
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
${peak}
const { GEN_PATH: path, GEN_PROMPT: prompt, GEN_TOKENS: tokens, GEN_THREADS: threads, GEN_LLAMA_CPP: dir } = process.env;
const { getLlama } = await import(createRequire(dir + '/').resolve('node-llama-cpp'));
const llama = await getLlama({ gpu: false, build: 'never' });
const model = await llama.loadModel({ modelPath: path });
const context = await model.createContext({ contextSize: 512, threads: Number(threads) });
async function generate(text, max) {
  const sequence = context.getSequence();
  let n = 0;
  for await (const token of sequence.evaluate(model.tokenize(text), { temperature: 0 })) {
    if (model.isSpecialToken(token) || ++n >= max) break;
  }
  sequence.dispose();
  return n;
}
await generate('Hi', 4);
const runs = [];
for (let i = 0; i < 3; i++) {
  const t0 = performance.now();
  const n = await generate(prompt, Number(tokens));
  runs.push({ tokens: n, seconds: (performance.now() - t0) / 1000 });
}
console.log(JSON.stringify({ runs, peakMiB: peakMiB() }));
await context.dispose();
await model.dispose();
`;

const systems = [{ name: 'kronlora (native, f32 weights)', args: ['--input-type=module', '-e', kronloraChild] }];
let scratch; // the directory this run creates for the llama.cpp child, removed at the end
if (args['llama-cpp']) {
  // A file, not `-e`: node-llama-cpp tests its binary in a forked process, which inherits
  // `execArgv` and would run the `-e` script again instead of its test.
  scratch = mkdtempSync(join(tmpdir(), 'kronlora-bench-'));
  const file = join(scratch, 'llama-cpp.mjs');
  writeFileSync(file, llamaCppChild);
  systems.push({ name: 'llama.cpp (node-llama-cpp)', args: [file] });
}

const env = {
  ...process.env,
  GEN_PATH: GGUF,
  GEN_PROMPT: PROMPT,
  GEN_TOKENS: args.tokens,
  GEN_THREADS: args.threads,
  GEN_LLAMA_CPP: args['llama-cpp'] ?? '',
  RAYON_NUM_THREADS: args.threads,
};
const samples = new Map(systems.map((s) => [s.name, []]));
try {
  for (let round = 0; round < rounds; round++) {
    for (const system of systems) {
      const stdout = execFileSync(process.execPath, system.args, { encoding: 'utf8', env });
      const result = JSON.parse(stdout.trim().split('\n').pop());
      samples.get(system.name).push(result);
      const best = Math.max(...result.runs.map((r) => r.tokens / r.seconds));
      console.error(`  round ${round + 1}: ${system.name} ${best.toFixed(1)} tokens/s`);
    }
  }
} finally {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const isa = readFileSync('/proc/cpuinfo', 'utf8').includes(' avx512f') ? 'AVX-512' : 'AVX2';
const summary = systems.map(({ name }) => {
  const rounds = samples.get(name);
  return {
    name,
    tokensPerSecond: median(rounds.map((r) => Math.max(...r.runs.map((x) => x.tokens / x.seconds)))),
    tokensGenerated: rounds[0].runs[0].tokens,
    peakMiB: median(rounds.map((r) => r.peakMiB)),
  };
});
console.log(`CPU: ${cpus()[0].model} (${isa}), ${args.threads} threads, ${rounds} interleaved rounds`);
console.log('| system | tokens/s (median of rounds) | tokens | peak RSS (MiB) |');
console.log('|---|---|---|---|');
for (const s of summary) {
  console.log(`| ${s.name} | ${s.tokensPerSecond.toFixed(1)} | ${s.tokensGenerated} | ${s.peakMiB.toFixed(0)} |`);
}
if (summary.length === 2) {
  console.log(`kronlora / llama.cpp: ${(summary[0].tokensPerSecond / summary[1].tokensPerSecond).toFixed(2)}`);
}

const out = fileURLToPath(new URL('./results/', import.meta.url));
mkdirSync(out, { recursive: true });
const file = `${out}generate.json`;
writeFileSync(
  `${file}.tmp`,
  JSON.stringify({ cpu: cpus()[0].model, isa, args, prompt: PROMPT, summary, samples: Object.fromEntries(samples) }, null, 2),
);
renameSync(`${file}.tmp`, file);
