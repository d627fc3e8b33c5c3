// What the experiments share: the machine they ran on, progress lines with an estimate of the
// time left, mean ± sd, a plain-text table, and atomic JSON / SVG output.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as vega from 'vega';
import { compile } from 'vega-lite';

/** `{ cpu, isa, threads, node }` of this machine. */
export function machine() {
  const cpu = cpus()[0]?.model ?? 'unknown';
  let isa = 'unknown';
  try {
    isa = /avx512f/.test(readFileSync('/proc/cpuinfo', 'utf8')) ? 'AVX-512' : 'AVX2';
  } catch {}
  return { cpu, isa, threads: cpus().length, node: process.version };
}

/** Progress over `total` units: `tick(what)` prints `[i/total] what (elapsed, ~left)`. */
export function progress(total) {
  const start = performance.now();
  let done = 0;
  const fmt = (s) => (s >= 90 ? `${(s / 60).toFixed(1)} min` : `${s.toFixed(0)} s`);
  return {
    tick(what) {
      done++;
      const elapsed = (performance.now() - start) / 1000;
      const left = (elapsed / done) * (total - done);
      console.log(`[${done}/${total}] ${what}  (${fmt(elapsed)} elapsed${done < total ? `, ~${fmt(left)} left` : ''})`);
    },
    seconds: () => (performance.now() - start) / 1000,
  };
}

export function meanSd(xs) {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const sd = xs.length > 1 ? Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (xs.length - 1)) : 0;
  return { mean, sd, n: xs.length };
}

/** A Markdown table of `rows` (arrays of cells) under `header`. */
export function markdownTable(header, rows) {
  const line = (cells) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

export function writeAtomically(path, text) {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

/** Write `result.json` (with machine and duration) and any `svgs` ({ name: text }) into `dir`. */
export function writeOutputs(dir, result, svgs = {}) {
  mkdirSync(dir, { recursive: true });
  writeAtomically(join(dir, 'result.json'), `${JSON.stringify(result, null, 2)}\n`);
  for (const [name, svg] of Object.entries(svgs)) writeAtomically(join(dir, name), svg);
  console.log(`written: ${[join(dir, 'result.json'), ...Object.keys(svgs).map((n) => join(dir, n))].join(', ')}`);
}

/** A Vega-Lite spec rendered to SVG in Node (no browser). */
export async function svgOf(spec) {
  const view = new vega.View(vega.parse(compile({ config: { background: 'white' }, ...spec }).spec), { renderer: 'none' });
  return view.toSVG();
}

/**
 * The options every experiment takes (`--quick`, `--train N`, `--test N`, `--batch-size N`,
 * `--lr X`, with these defaults) and its own `extra` ones, parsed from `argv`.
 */
export function experimentArgs(argv, { batchSize, lr }, extra = {}) {
  return parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      train: { type: 'string' },
      test: { type: 'string' },
      'batch-size': { type: 'string', default: batchSize },
      lr: { type: 'string', default: lr },
      ...extra,
    },
  }).values;
}

/** `model.train` options from an experiment's settings: no validation split, the run's seed. */
export function trainOptions(settings, seed) {
  const { epochs, batchSize, maxLength, learningRate } = settings;
  return { epochs, batchSize, maxLength, learningRate, validationSplit: 0, seed };
}
