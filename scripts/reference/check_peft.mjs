// Check that adapters saved by kronlora load in Hugging Face PEFT and give kronlora's logits:
// runs scripts/reference/peft_logits.py (Python with torch, transformers, peft) and kronlora on
// the same texts and prints the largest difference.
//
//   node scripts/reference/check_peft.mjs <python> <model dir> <adapter dir> [num labels]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from 'kronlora';

const [python, modelDir, adapterDir, numLabels = '2'] = process.argv.slice(2);
const texts = [
  'A wonderful, moving film with a great cast.',
  'Dull plot, wooden acting; I left halfway through.',
  'It was fine. Nothing special.',
];
const file = join(mkdtempSync(join(tmpdir(), 'kronlora-peft-')), 'texts.json');
writeFileSync(file, JSON.stringify(texts));
const peft = JSON.parse(
  execFileSync(python, [new URL('./peft_logits.py', import.meta.url).pathname, modelDir, adapterDir, numLabels, file], { encoding: 'utf8' })
    .trim()
    .split('\n')
    .pop(),
);
const model = await loadModel(modelDir, { task: 'sequence-classification', numLabels: Number(numLabels) });
await model.loadAdapter(adapterDir);
const ours = await model.logits(texts);
let max = 0;
for (const [i, row] of ours.entries()) for (const [j, v] of row.entries()) max = Math.max(max, Math.abs(v - peft.logits[i][j]));
console.log(JSON.stringify({ adapterDir, peft: peft.logits, kronlora: ours.map((r) => [...r]), maxAbsDiff: max }));
