/**
 * What a page hands kronlora (a `File` from a picker, a `Blob`, bytes, a URL) as the bytes the
 * worker takes. Bytes kronlora read itself are transferred to the worker, not copied; bytes the
 * caller passed are copied, so the caller's buffers stay usable.
 */
import { KronLoraError } from '../errors.js';

/** One file: a `File` / `Blob`, its bytes, or a URL to fetch it from. */
export type BrowserFile = Blob | ArrayBuffer | ArrayBufferView | string | URL;

/**
 * A model: a `.gguf` file (a `File`, or its URL); a model folder's files (a `FileList` from
 * `<input type="file" webkitdirectory>` or `multiple`, or `File[]`); a folder's URL ending in `/`
 * (config.json, tokenizer.json, model.safetensors or its shards are fetched); or the files by name.
 */
export type BrowserModelSource = string | URL | Blob | FileList | Blob[] | Record<string, BrowserFile>;

/** Files by name, and the buffers that may be transferred to the worker. */
export interface Gathered {
  files: Record<string, Uint8Array>;
  transfer: ArrayBuffer[];
}

async function fetchBytes(url: string | URL, optional = false): Promise<ArrayBuffer | undefined> {
  let response: Response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new KronLoraError('ERR_IO', `${url}: cannot fetch: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (response.status === 404 && optional) return undefined;
  if (!response.ok) throw new KronLoraError('ERR_IO', `${url}: the server answered ${response.status} ${response.statusText}`);
  return response.arrayBuffer();
}

/** The bytes of one file, and whether kronlora owns them (may transfer them). */
export async function bytesOf(file: BrowserFile, what: string): Promise<[Uint8Array, boolean]> {
  if (typeof file === 'string' || file instanceof URL) return [new Uint8Array((await fetchBytes(file))!), true];
  if (file instanceof Blob) return [new Uint8Array(await file.arrayBuffer()), true];
  if (file instanceof ArrayBuffer) return [new Uint8Array(file), false];
  if (ArrayBuffer.isView(file)) return [new Uint8Array(file.buffer, file.byteOffset, file.byteLength), false];
  throw new KronLoraError('ERR_INVALID_ARG_TYPE', `${what} must be a File, Blob, ArrayBuffer, typed array or URL`);
}

/** Collect named files, keeping track of what may be transferred. */
export async function gather(named: Record<string, BrowserFile>): Promise<Gathered> {
  const out: Gathered = { files: {}, transfer: [] };
  for (const [name, file] of Object.entries(named)) {
    const [bytes, owned] = await bytesOf(file, name);
    out.files[name] = bytes;
    if (owned) out.transfer.push(bytes.buffer as ArrayBuffer);
  }
  return out;
}

/** Optional files of a Hugging Face model folder (the required ones are fetched first). */
const OPTIONAL_FILES = ['tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];

/** A model folder's files from its URL: config, tokenizer, then the weights or their shards. */
async function fetchFolder(base: string): Promise<Gathered> {
  const out: Gathered = { files: {}, transfer: [] };
  const add = (name: string, buffer: ArrayBuffer | undefined) => {
    if (!buffer) return;
    out.files[name] = new Uint8Array(buffer);
    out.transfer.push(buffer);
  };
  for (const name of ['config.json', 'tokenizer.json']) add(name, await fetchBytes(new URL(name, base)));
  for (const name of OPTIONAL_FILES) add(name, await fetchBytes(new URL(name, base), true));
  const single = await fetchBytes(new URL('model.safetensors', base), true);
  if (single) {
    add('model.safetensors', single);
    return out;
  }
  const indexBytes = await fetchBytes(new URL('model.safetensors.index.json', base), true);
  if (!indexBytes) {
    throw new KronLoraError('ERR_INVALID_MODEL', `${base}: neither model.safetensors nor model.safetensors.index.json is there`);
  }
  add('model.safetensors.index.json', indexBytes);
  const index = JSON.parse(new TextDecoder().decode(indexBytes)) as { weight_map?: Record<string, string> };
  for (const shard of new Set(Object.values(index.weight_map ?? {}))) add(shard, await fetchBytes(new URL(shard, base)));
  return out;
}

/** The model files of any `BrowserModelSource`. */
export async function modelFiles(source: BrowserModelSource): Promise<Gathered> {
  if (typeof source === 'string' || source instanceof URL) {
    const url = new URL(source, globalThis.location?.href);
    if (url.pathname.endsWith('/')) return fetchFolder(url.href);
    const name = decodeURIComponent(url.pathname.split('/').pop()!);
    return gather({ [name]: url });
  }
  const list = typeof FileList === 'function' && source instanceof FileList ? Array.from(source) : source;
  if (list instanceof Blob) return gather({ [(list as File).name ?? 'model.gguf']: list });
  if (Array.isArray(list)) {
    // A folder picked whole also holds files kronlora does not read (README.md, *.bin, ...).
    const named: Record<string, Blob> = {};
    for (const file of list) {
      const name = (file as File).name;
      if (typeof name !== 'string')
        throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'a model given as a list must be File objects (they carry names)');
      if (/\.(json|safetensors|gguf)$/i.test(name)) named[name] = file;
    }
    if (!Object.keys(named).length) {
      throw new KronLoraError(
        'ERR_INVALID_MODEL',
        'none of the files picked is a model file (.gguf, or config.json, tokenizer.json and .safetensors)',
      );
    }
    return gather(named);
  }
  if (typeof list === 'object' && list !== null) return gather(list as Record<string, BrowserFile>);
  throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'loadModel expects a URL, a File, a FileList / File[], or files by name');
}
