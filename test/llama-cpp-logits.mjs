// llama.cpp's view of a GGUF model, optionally with a GGUF LoRA adapter, through node-llama-cpp
// (its prebuilt CPU binary; nothing is built or downloaded). Run as a child process by
// test/export.test.ts, so a llama.cpp abort cannot take the test runner down:
//   node test/llama-cpp-logits.mjs '{"model": "...", "lora": "..." | null, "texts": [...], "generate": 8}'
// Prints {"rows": [{ "tokens": [...], "logits": [...] }], "generated": ["..."]}: the raw
// next-token logits after each text (every vocabulary entry, by token id) and its greedy
// continuation of `generate` tokens (stopping at end-of-sequence).
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';

const { model: modelPath, lora, texts, generate } = JSON.parse(process.argv[2]);
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath });
const context = await model.createContext({
  contextSize: 64,
  threads: 1,
  // F32 like kronlora. (Measured: on the tiny model this changed none of llama.cpp's logits;
  // its ~5e-4 gap to kronlora comes from elsewhere in its CPU path.)
  experimentalKvCacheKeyType: 'F32',
  experimentalKvCacheValueType: 'F32',
  ...(lora ? { lora: { adapters: [{ filePath: lora, scale: 1 }] } } : {}),
});
const sequence = context.getSequence();

/** Evaluate `tokens` after what the sequence holds; the next-token logits as a dense array. */
async function next(tokens) {
  const input = tokens.map((t, i) => (i === tokens.length - 1 ? [t, { generateNext: { logits: true } }] : t));
  const out = await sequence.controlledEvaluate(input);
  const logits = out.at(-1).next.logits;
  const dense = new Array(logits.size).fill(0);
  for (const [t, l] of logits) dense[t] = l;
  return dense;
}

const argmax = (v) => v.reduce((best, x, i) => (x > v[best] ? i : best), 0);
const rows = [];
const generated = [];
for (const text of texts) {
  await sequence.clearHistory();
  const tokens = [...model.tokenize(text)];
  let logits = await next(tokens);
  rows.push({ tokens, logits });
  const continuation = [];
  for (let i = 0; i < generate; i++) {
    const token = argmax(logits);
    if (token === model.tokens.eos) break;
    continuation.push(token);
    logits = await next([token]);
  }
  generated.push(model.detokenize(continuation));
}
console.log(JSON.stringify({ rows, generated }));
await context.dispose();
await model.dispose();
await llama.dispose();
