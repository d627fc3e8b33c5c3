// `npm run demo`: a Kron-LoRA and a LoRA layer of a transformer-sized projection (768×768, as
// in DistilBERT / MiniLM attention) on every backend that loads; their trainable-parameter
// counts, and how closely the native and WASM backends agree on the same parameters.
import { KronLoraLinear, LoraLinear, backend, withBackend } from 'kronlora';
import { randomArray } from './random.mjs';

const SIZE = 768;
const ROWS = 64;

const maxAbsDiff = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

console.log(`kronlora demo — default backend: ${backend()}\n`);

const weight = randomArray(SIZE * SIZE, 1);
const kronOptions = { inFeatures: SIZE, outFeatures: SIZE, rank: 8, alpha: 16, kronIn: 2, kronOut: 4, seed: 7, weight };
const loraOptions = { inFeatures: SIZE, outFeatures: SIZE, rank: 16, alpha: 32, seed: 7, weight };
const kron = new KronLoraLinear(kronOptions);
const lora = new LoraLinear(loraOptions);
console.log(`Trainable parameters of one ${SIZE}×${SIZE} projection (frozen weight: ${(SIZE * SIZE).toLocaleString('en')}):`);
console.log(`  Kron-LoRA  d_A1=2 d_A2=4 r=8 : ${kron.numTrainableParameters.toLocaleString('en')}   (2·4 + 8·(384 + 192))`);
console.log(`  LoRA       r=16              : ${lora.numTrainableParameters.toLocaleString('en')}   (16·(768 + 768))`);
console.log(`  ratio LoRA / Kron-LoRA       : ${(lora.numTrainableParameters / kron.numTrainableParameters).toFixed(2)}×\n`);

// Give the zero-initialised factors values, so that the update is not trivially zero.
const b1 = { shape: [SIZE / 4, 8], data: randomArray((SIZE / 4) * 8, 3) };
const loraB = { shape: [SIZE, 16], data: randomArray(SIZE * 16, 4) };
const x = randomArray(ROWS * SIZE, 5);
const g = randomArray(ROWS * SIZE, 6);

const runs = {};
for (const name of ['native', 'wasm']) {
  let api;
  try {
    api = withBackend(name);
  } catch (error) {
    console.log(`${name} backend unavailable: ${error.message}`);
    continue;
  }
  const k = new api.KronLoraLinear(kronOptions);
  k.setParameters({ B1: b1 });
  const l = new api.LoraLinear(loraOptions);
  l.setParameters({ lora_B: loraB });
  const { loraA, loraB: exportedB, rank, alpha } = k.toLora();
  const asLora = new api.LoraLinear({ inFeatures: SIZE, outFeatures: SIZE, rank, alpha, weight });
  asLora.setParameters({ lora_A: loraA, lora_B: exportedB });
  runs[name] = {
    kron: k.forward(x, ROWS),
    kronGrad: k.gradients(x, ROWS, g),
    lora: l.forward(x, ROWS),
    exportError: maxAbsDiff(asLora.forward(x, ROWS), k.forward(x, ROWS)),
  };
  console.log(`${name}: Kron-LoRA forward+backward on ${ROWS}×${SIZE} ok; toLora() (rank ${rank}) reproduces it to ${runs[name].exportError.toExponential(1)}`);
}

if (runs.native && runs.wasm) {
  const { native: n, wasm: w } = runs;
  console.log('\nNative vs WASM, same parameters (max |difference|):');
  console.log(`  Kron-LoRA output   : ${maxAbsDiff(n.kron, w.kron).toExponential(2)}`);
  for (const p of ['A', 'B1', 'B2', 'x']) {
    console.log(`  Kron-LoRA grad ${p.padEnd(3)} : ${maxAbsDiff(n.kronGrad[p].data, w.kronGrad[p].data).toExponential(2)}`);
  }
  console.log(`  LoRA output        : ${maxAbsDiff(n.lora, w.lora).toExponential(2)}`);
}
