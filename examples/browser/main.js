// The browser demo: pick a model and a JSONL file, train a Kron-LoRA or LoRA adapter in a Web
// Worker (kronlora/browser), watch the loss, evaluate, try it, download the adapter.
// `window.demo` holds the page's state for test/browser.test.ts to read.
import { adapterBlob, loadModel, storeFile } from 'kronlora/browser';

const $ = (id) => document.getElementById(id);
const state = {
  source: null,
  family: null,
  records: null,
  dataFile: null,
  evalFile: null,
  model: null,
  losses: [],
  result: null,
  eval: null,
  outputs: null,
  task: null,
};
window.demo = state;

const ENCODERS = ['bert', 'roberta', 'distilbert', 'xlm-roberta', 'camembert'];
const mib = (n) => (n < 2 ** 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 2 ** 20).toFixed(1)} MiB`);

function setStatus(text, kind = 'busy') {
  $('status').textContent = text;
  $('status').dataset.state = kind;
}

function fail(error) {
  setStatus(error.code ? `${error.code}: ${error.message}` : String(error.message ?? error), 'error');
  console.error(error);
}

function refreshButtons() {
  const training = $('status').dataset.state === 'training';
  $('train').disabled = training || !state.source || !state.records;
  $('stop').disabled = !training;
  for (const id of ['evaluate', 'run-probe', 'download']) $(id).disabled = training || !state.model;
  for (const el of document.querySelectorAll('.kron')) el.hidden = $('adapter-type').value !== 'kron-lora';
}

// ── 1. Model ─────────────────────────────────────────────────────────────────────────────────
function chooseModel(source, family, description) {
  state.source = source;
  state.family = family;
  $('model-info').textContent = description;
  $('targets').placeholder = family === 'encoder' ? 'query, value' : 'q_proj, v_proj';
  for (const b of document.querySelectorAll('#model-section .button')) b.classList.remove('chosen');
  refreshButtons();
}

function familyOf(config) {
  return ENCODERS.includes(config.model_type) ? 'encoder' : 'decoder';
}

async function describeFiles(files) {
  const gguf = files.find((f) => f.name.endsWith('.gguf'));
  if (gguf) return chooseModel(gguf, 'decoder', `${gguf.name} (${mib(gguf.size)}): a llama.cpp GGUF model`);
  const configFile = files.find((f) => f.name === 'config.json');
  if (!configFile) throw new Error('the files chosen hold no config.json and no .gguf file');
  const config = JSON.parse(await configFile.text());
  const bytes = files.reduce((n, f) => n + f.size, 0);
  chooseModel(
    files,
    familyOf(config),
    `${config.model_type} · ${config.num_hidden_layers} layers · hidden ${config.hidden_size} · ${files.length} files, ${mib(bytes)}`,
  );
}

for (const id of ['model-folder', 'model-files']) {
  $(id).addEventListener('change', (e) => {
    const files = Array.from(e.target.files);
    describeFiles(files)
      .then(() => e.target.parentElement.classList.add('chosen'))
      .catch(fail);
  });
}

async function listCachedModels() {
  // Only the demo's own server lists models; a static copy of the page has none to offer.
  const response = await fetch('/models/index.json').catch(() => null);
  if (!response?.ok || !response.headers.get('content-type')?.includes('json')) return;
  for (const m of await response.json()) {
    const button = document.createElement('button');
    button.className = 'secondary';
    button.textContent = `Use cached ${m.name}`;
    button.addEventListener('click', async () => {
      try {
        if (m.kind === 'gguf') return chooseModel(m.url, 'decoder', `${m.name}: a llama.cpp GGUF model, served from .cache/models`);
        const config = await (await fetch(`${m.url}config.json`)).json();
        chooseModel(
          m.url,
          familyOf(config),
          `${m.name} · ${config.model_type} · ${config.num_hidden_layers} layers · hidden ${config.hidden_size} (from .cache/models)`,
        );
      } catch (error) {
        fail(error);
      }
    });
    $('cached-models').append(button);
  }
}

// ── 2. Data ──────────────────────────────────────────────────────────────────────────────────
/** The records of a JSONL file (or a JSON array), to count labels and show a summary. */
async function readRecords(file) {
  const text = (await file.text()).trim();
  if (text.startsWith('[')) return JSON.parse(text);
  return text.split('\n').flatMap((line, i) => {
    if (!line.trim()) return [];
    try {
      return [JSON.parse(line)];
    } catch {
      throw new Error(`${file.name} line ${i + 1} is not JSON`);
    }
  });
}

/**
 * What the page trains on these records, and the classifier's size. The rule is the core's
 * (`LabelSummary::of` in crates/kronlora-core/src/data/labels.rs, which `kronlora train` uses
 * through `trainingSetup`): named labels count once each, index labels give the largest + 1,
 * and never fewer than 2. kronlora/browser does not offer that function yet, hence this copy;
 * the core still checks every label when training starts.
 */
function dataKind(records) {
  if (records.every((r) => 'text' in r && 'label' in r)) {
    const labels = [...new Set(records.map((r) => r.label))];
    const names = labels.filter((l) => typeof l !== 'number');
    const numLabels = Math.max(names.length ? names.length : Math.max(1, ...labels) + 1, 2);
    return { task: 'classification', numLabels, summary: `classification, ${labels.length} labels (${labels.slice(0, 6).join(', ')})` };
  }
  return { task: 'causal-lm', summary: 'language modelling (text, prompt/completion or chat records)' };
}

$('data-file').addEventListener('change', async (e) => {
  const file = e.target.files[0];
  if (!file) return;
  try {
    state.records = await readRecords(file);
    state.dataFile = file;
    $('data-info').textContent = `${file.name}: ${state.records.length} records; ${dataKind(state.records).summary}`;
    e.target.parentElement.classList.add('chosen');
    if (!$('probe').value) {
      $('probe').value = state.records
        .slice(0, 3)
        .map((r) => r.text ?? r.prompt ?? '')
        .join('\n');
    }
  } catch (error) {
    fail(error);
  }
  refreshButtons();
});

$('eval-file').addEventListener('change', (e) => {
  state.evalFile = e.target.files[0] ?? null;
  if (state.evalFile) e.target.parentElement.classList.add('chosen');
});

// ── 3. Train ─────────────────────────────────────────────────────────────────────────────────
function number(id) {
  const v = $(id).value.trim();
  return v === '' ? undefined : Number(v);
}

function drawLoss() {
  const svg = $('loss-chart');
  const losses = state.losses;
  if (!losses.length) return void svg.replaceChildren();
  const [w, h, left, bottom] = [Math.max(svg.clientWidth, 300), 200, 44, 22];
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  const max = Math.max(...losses);
  const min = Math.min(...losses);
  const span = max - min || 1;
  const x = (i) => left + (losses.length === 1 ? 0 : (i / (losses.length - 1)) * (w - left - 10));
  const y = (v) => 10 + (1 - (v - min) / span) * (h - bottom - 10);
  const points = losses.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
  svg.innerHTML = `
    <line class="axis" x1="${left}" y1="${h - bottom}" x2="${w - 5}" y2="${h - bottom}" />
    <line class="axis" x1="${left}" y1="5" x2="${left}" y2="${h - bottom}" />
    <text x="4" y="16">${max.toFixed(3)}</text><text x="4" y="${h - bottom}">${min.toFixed(3)}</text>
    <text x="${left}" y="${h - 6}">step 1</text><text x="${w - 70}" y="${h - 6}">step ${losses.length}</text>
    <polyline points="${points}" />`;
}

function adapterConfig() {
  const type = $('adapter-type').value;
  const targets = ($('targets').value.trim() || $('targets').placeholder)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  // `all-linear` (or a regular expression) is one string; module names are a list.
  const targetModules = targets.length === 1 && (targets[0] === 'all-linear' || /[\\^$*+?()[\]|]/.test(targets[0])) ? targets[0] : targets;
  const config = { type, rank: number('rank'), alpha: number('alpha'), targetModules, seed: 0 };
  if (type === 'kron-lora') Object.assign(config, { kronIn: number('kron-in'), kronOut: number('kron-out') });
  return config;
}

let controller = null;

$('train').addEventListener('click', async () => {
  const kind = dataKind(state.records);
  if (state.family === 'encoder' && kind.task !== 'classification') {
    return fail(new Error('an encoder (BERT family) trains a classifier here: give it {"text", "label"} records'));
  }
  state.losses = [];
  state.result = null;
  state.outputs = null;
  drawLoss();
  $('result-info').textContent = '';
  $('progress').value = 0;
  setStatus('Loading the model…', 'training');
  refreshButtons();
  controller = new AbortController();
  try {
    state.model?.dispose();
    state.model = null;
    state.task = kind.task;
    const model = await loadModel(
      state.source,
      kind.task === 'classification' ? { task: 'sequence-classification', numLabels: kind.numLabels } : { task: 'causal-lm' },
    );
    state.model = model;
    const { modules } = await model.addAdapter('demo', adapterConfig());
    const p = model.trainableParameters();
    $('params-info').textContent =
      `${model.architecture}: adapter on ${modules} modules, ${p.adapters.demo.toLocaleString()} adapter parameters (+ ${p.head.toLocaleString()} head), ${p.percentage.toFixed(3)} % of ${p.total.toLocaleString()}`;
    state.dataPath = await storeFile(state.dataFile);
    state.evalPath = state.evalFile ? await storeFile(state.evalFile) : null;
    setStatus('Reading the data…', 'training');
    const run = model.train({
      data: state.dataPath,
      task: kind.task,
      epochs: number('epochs'),
      maxSteps: number('max-steps'),
      batchSize: number('batch-size'),
      learningRate: number('learning-rate'),
      maxLength: number('max-length'),
      validationSplit: number('validation-split'),
      signal: controller.signal,
    });
    let total = 1;
    for await (const event of run) {
      if (event.type === 'start') total = event.totalSteps;
      if (event.type === 'step') {
        state.losses.push(event.loss);
        $('progress').value = event.step / total;
        setStatus(
          `step ${event.step} / ${total} · loss ${event.loss.toFixed(4)} · ${event.examplesPerSecond.toFixed(1)} examples/s`,
          'training',
        );
        drawLoss();
      }
      if (event.type === 'eval') {
        const m = event.metrics;
        $('result-info').textContent =
          `validation at step ${event.step}: loss ${m.loss.toFixed(4)}${m.accuracy !== undefined ? ` · accuracy ${(100 * m.accuracy).toFixed(1)} %` : ''}${m.perplexity !== undefined ? ` · perplexity ${m.perplexity.toFixed(2)}` : ''}`;
      }
    }
    const result = await run.result;
    state.result = result;
    $('progress').value = result.step / Math.max(result.totalSteps, 1);
    setStatus(
      `${result.reason} after ${result.step} steps in ${result.seconds.toFixed(1)} s (${result.examplesPerSecond.toFixed(1)} examples/s)`,
      'done',
    );
  } catch (error) {
    fail(error);
  }
  controller = null;
  refreshButtons();
});

$('stop').addEventListener('click', () => controller?.abort());
$('adapter-type').addEventListener('change', refreshButtons);

// ── 4. Evaluate and try ──────────────────────────────────────────────────────────────────────
$('evaluate').addEventListener('click', async () => {
  try {
    $('eval-info').textContent = 'Evaluating…';
    const m = await state.model.evaluate(state.evalPath ?? state.dataPath, { task: state.task });
    state.eval = m;
    const what = state.evalPath ? state.evalFile.name : `${state.dataFile.name} (the training data)`;
    $('eval-info').textContent =
      `${what}: ${m.examples} examples · loss ${m.loss.toFixed(4)}${m.accuracy !== undefined ? ` · accuracy ${(100 * m.accuracy).toFixed(1)} %` : ''}${m.perplexity !== undefined ? ` · perplexity ${m.perplexity.toFixed(2)}` : ''}`;
  } catch (error) {
    $('eval-info').textContent = '';
    fail(error);
  }
});

function cell(row, text, tag = 'td') {
  const el = document.createElement(tag);
  el.textContent = text;
  row.append(el);
}

$('run-probe').addEventListener('click', async () => {
  const texts = $('probe')
    .value.split('\n')
    .filter((t) => t.trim());
  if (!texts.length) return;
  state.outputs = null;
  try {
    const table = $('probe-output');
    table.replaceChildren();
    const head = table.insertRow();
    if (state.task === 'classification') {
      const logits = await state.model.logits(texts);
      const classes = await state.model.classify(texts);
      const names = state.model.labels();
      state.outputs = logits.map((l) => Array.from(l));
      for (const h of ['text', 'label', 'probabilities']) cell(head, h, 'th');
      classes.forEach((c, i) => {
        const row = table.insertRow();
        cell(row, texts[i]);
        cell(row, names[c.label] ?? String(c.label));
        cell(row, c.scores.map((s) => s.toFixed(3)).join(' · '));
      });
    } else {
      const generated = [];
      for (const h of ['prompt', 'continuation']) cell(head, h, 'th');
      for (const text of texts) {
        const g = await state.model.generate(text, { maxTokens: 32 });
        generated.push(g.text);
        const row = table.insertRow();
        cell(row, text);
        cell(row, g.text);
      }
      // Set once all are done: a reader of window.demo sees every output or none.
      state.outputs = generated;
    }
  } catch (error) {
    fail(error);
  }
});

// ── 5. Download ──────────────────────────────────────────────────────────────────────────────
$('download').addEventListener('click', async () => {
  try {
    const format = $('format').value;
    const blob = await adapterBlob(state.model, { format });
    const ext = { kronlora: 'zip', 'peft-lora': 'zip', lycoris: 'safetensors', 'gguf-lora': 'gguf' }[format];
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = `kronlora-adapter-${format}.${ext}`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  } catch (error) {
    fail(error);
  }
});

refreshButtons();
listCachedModels();
