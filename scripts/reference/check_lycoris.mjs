// Check that a LyCORIS file kronlora wrote means the same in the LyCORIS library: runs
// scripts/reference/lycoris_logits.py (Python with torch, transformers, gguf, lycoris-lora) and
// kronlora (loadAdapter of the same file) on the same texts, and prints the adapter's effect on
// the next-token logits (adapted minus base) in each and their largest difference.
//
//   node scripts/reference/check_lycoris.mjs <python> <model.gguf> <file.safetensors>
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from 'kronlora';

const [python, gguf, file] = process.argv.slice(2);
const texts = ['The capital of France is', 'def fibonacci(n):'];
const textsFile = join(mkdtempSync(join(tmpdir(), 'kronlora-lycoris-')), 'texts.json');
writeFileSync(textsFile, JSON.stringify(texts));
const script = new URL('./lycoris_logits.py', import.meta.url).pathname;
const theirs = JSON.parse(
  execFileSync(python, [script, gguf, file, textsFile], { encoding: 'utf8', maxBuffer: 256 << 20 })
    .trim()
    .split('\n')
    .pop(),
);
const model = await loadModel(gguf);
const base = await model.logits(texts);
const { modules } = await model.loadAdapter(file);
const adapted = await model.logits(texts);
let effect = 0;
let diff = 0;
let baseDiff = 0;
for (const [i, row] of adapted.entries()) {
  for (const [j, v] of row.entries()) {
    const ours = v - base[i][j];
    const lycoris = theirs.adapted[i][j] - theirs.base[i][j];
    effect = Math.max(effect, Math.abs(ours));
    diff = Math.max(diff, Math.abs(ours - lycoris));
    baseDiff = Math.max(baseDiff, Math.abs(base[i][j] - theirs.base[i][j]));
  }
}
console.log(
  JSON.stringify({
    file,
    modules,
    lycorisModules: theirs.modules,
    lycorisKinds: theirs.kinds,
    largestEffect: effect,
    effectMaxAbsDiff: diff,
    baseMaxAbsDiff: baseDiff,
  }),
);
