/**
 * `kronlora/browser`: train and run Kron-LoRA / LoRA adapters in a web page. The WASM core runs
 * in a Web Worker (one per page), so the page stays responsive; the `Model` and `TrainingRun`
 * API is the Node package's. Files live in the worker's memory: `storeFile(s)` puts a picked
 * file there (a path for `train({ data })`, `loadAdapter`), `adapterBlob` gives an adapter back
 * as a download.
 *
 * Cancelling a run (`run.cancel()`, an `AbortSignal`) stops it after the current step when the
 * page is cross-origin isolated (COOP/COEP headers, so that SharedArrayBuffer exists); elsewhere
 * it ends the worker, and the models in it with it.
 */
import { zipSync } from 'fflate';
import type { Binding, RawModel } from '../binding.js';
import { KronLoraError } from '../errors.js';
import { type ExportFormat, type LoadModelOptions, Model } from '../model.js';
import { wasmRawModel } from '../wasm-client.js';
import { WebWorkerHost } from './host.js';
import { type BrowserFile, type BrowserModelSource, type Gathered, gather, modelFiles } from './sources.js';

export * from '../model-api.js';
export type { BrowserFile, BrowserModelSource } from './sources.js';

const host = new WebWorkerHost();

function unsupported(what: string): never {
  throw new KronLoraError('ERR_UNSUPPORTED', `${what} is not available in kronlora/browser`);
}

/** The WASM core in the page's worker, as the backend `Model` drives, loading `files`. */
function workerBinding({ files, transfer }: Gathered): Binding {
  return {
    name: 'wasm',
    loadModel: async (_files, optionsJson): Promise<RawModel> =>
      wasmRawModel(host, await host.request<number>({ op: 'load', files, optionsJson }, transfer)),
    createLayer: () => unsupported('a standalone layer'),
    factorization: () => unsupported('factorization'),
    savedAdapter: () => unsupported('savedAdapter'),
    trainingSetup: () => unsupported('trainingSetup'),
    cudaDeviceCount: () => 0,
  };
}

/** The backend models run on here: always the WASM core. */
export function backend(): 'wasm' {
  return 'wasm';
}

/**
 * Load a model: a Hugging Face folder (picked files, or its URL ending in `/`) or a `.gguf`
 * file (a `File` or URL); see `BrowserModelSource`. Options as in Node (`device` must be `cpu`).
 */
export async function loadModel(source: BrowserModelSource, options?: LoadModelOptions): Promise<Model> {
  const gathered = await modelFiles(source);
  return Model.create(workerBinding(gathered), gathered.files, options);
}

let stored = 0;

function checkName(name: string): string {
  if (typeof name !== 'string' || !/^[^/\\]+$/.test(name) || name === '.' || name === '..') {
    throw new KronLoraError('ERR_INVALID_ARG_TYPE', `"${name}" is not a file name (no slashes)`);
  }
  return name;
}

/**
 * Put files into a new directory of the worker's memory and return its path: e.g. an adapter's
 * `adapter_config.json` and `adapter_model.safetensors` for `model.loadAdapter(dir)`.
 */
export async function storeFiles(files: Record<string, BrowserFile>): Promise<string> {
  if (typeof files !== 'object' || files === null) throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'storeFiles expects files by name');
  for (const name of Object.keys(files)) checkName(name);
  const gathered = await gather(files);
  const dir = `/files/${++stored}`;
  await host.request({ op: 'putFiles', dir, files: gathered.files }, gathered.transfer);
  return dir;
}

/**
 * Put one file into the worker's memory and return its path: e.g. a picked `.jsonl` for
 * `model.train({ data: path })` (read and checked by the core, as a file on disk is in Node).
 */
export async function storeFile(file: BrowserFile, name = file instanceof File ? file.name : 'data.jsonl'): Promise<string> {
  return `${await storeFiles({ [checkName(name)]: file })}/${name}`;
}

/** The files directly in `dir` of the worker's memory (e.g. a `saveAdapter` directory), by name. */
export function readFiles(dir: string): Promise<Record<string, Uint8Array>> {
  if (typeof dir !== 'string' || dir === '') throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'readFiles expects a directory path');
  return host.request({ op: 'readFiles', dir });
}

/** `adapterBlob`'s options: which adapter, in which layout. */
export interface AdapterBlobOptions {
  /** The adapter (default: the only one). */
  name?: string;
  /**
   * `kronlora` (default): `saveAdapter`'s PEFT layout, which kronlora loads back and trains on;
   * or an `exportAdapter` format (`peft-lora`: a PEFT LoRA folder for transformers;
   * `lycoris`, `gguf-lora`: one file).
   */
  format?: 'kronlora' | ExportFormat;
}

const SINGLE_FILE: Partial<Record<ExportFormat, string>> = { lycoris: 'adapter.safetensors', 'gguf-lora': 'adapter.gguf' };

/**
 * An adapter as a download: a folder layout as a zip (`adapter_config.json` +
 * `adapter_model.safetensors` at its root, `application/zip`), a one-file format as that file.
 */
export async function adapterBlob(model: Model, options: AdapterBlobOptions = {}): Promise<Blob> {
  if (!(model instanceof Model)) throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'adapterBlob expects a Model');
  if (typeof options !== 'object' || options === null)
    throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'options must be an object like { name, format }');
  const { name, format = 'kronlora', ...unknown } = options;
  if (Object.keys(unknown).length)
    throw new KronLoraError('ERR_INVALID_OPTION', `unknown option(s) ${Object.keys(unknown).join(', ')}; use name, format`);
  const dir = `/downloads/${++stored}`;
  const single = format === 'kronlora' ? undefined : SINGLE_FILE[format];
  if (format === 'kronlora') await model.saveAdapter(dir, name === undefined ? {} : { name });
  else await model.exportAdapter(single ? `${dir}/${single}` : dir, { format, ...(name === undefined ? {} : { name }) });
  const files = await host.request<Record<string, Uint8Array>>({ op: 'readFiles', dir, remove: true });
  if (single) return new Blob([files[single] as BlobPart], { type: 'application/octet-stream' });
  return new Blob([zipSync(files, { level: 6 }) as BlobPart], { type: 'application/zip' });
}
