/**
 * The main-thread side of the WASM backend, shared by Node (wasm-host.ts, a worker thread) and
 * the browser (browser/host.ts, a Web Worker): requests matched to replies by id, and the
 * worker's models as `RawModel`s.
 */
import type * as Wasm from '../wasm/kronlora_wasm.js';
import type { RawModel, RawTraining } from './binding.js';
import { fromBackendError } from './errors.js';
import type { Reply, Request, WasmArgs, WasmMethod } from './wasm-models.js';

/** A request as sent: the worker's `Request` less the id the channel adds. */
type RequestBody = Request extends infer R ? (R extends unknown ? Omit<R, 'id'> : never) : never;

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  onEvent?: (e: unknown) => void;
}

/** Replies to requests by id; each host posts the messages its own way. */
class ReplyRouter {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  get size(): number {
    return this.pending.size;
  }

  /** Register a request: its id, and the promise of its reply. */
  open<T>(onEvent?: (e: unknown) => void): [number, Promise<T>] {
    const id = this.nextId++;
    const promise = new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, onEvent });
    });
    return [id, promise];
  }

  /** Route a worker's message; true when it ended a request. */
  settle(reply: Reply): boolean {
    const p = this.pending.get(reply.id);
    if (!p) return false;
    if ('event' in reply) {
      p.onEvent?.(reply.event);
      return false;
    }
    this.pending.delete(reply.id);
    if (reply.ok) p.resolve(reply.value);
    else {
      const error = reply.runtime ? new WebAssembly.RuntimeError(reply.message) : new Error(reply.message);
      p.reject(fromBackendError(error));
    }
    return true;
  }

  failAll(error: unknown): void {
    for (const p of this.pending.values()) p.reject(fromBackendError(error));
    this.pending.clear();
  }
}

/**
 * A host's side of its worker: requests get an id and a promise of the reply; `post` sends them
 * the host's way (Node's worker_threads, or a browser's Worker), `settle` routes what comes back.
 */
export abstract class WorkerChannel {
  protected readonly router = new ReplyRouter();

  /** Send one request (with its id) to the worker, starting it if needed. */
  protected abstract post(message: Request, transfer: Transferable[]): void;

  /**
   * Stop a training run whose cancellation flag the worker cannot see (no SharedArrayBuffer: a
   * page that is not cross-origin isolated) by ending the worker. Absent where flags are shared.
   */
  terminate?(reason: Error): void;

  request<T>(message: RequestBody, transfer: Transferable[] = []): Promise<T> {
    return this.stream<T>(message, undefined, transfer);
  }

  /** A request whose worker side posts `{ id, event }` messages before its reply. */
  stream<T>(message: RequestBody, onEvent?: (e: unknown) => void, transfer: Transferable[] = []): Promise<T> {
    const [id, reply] = this.router.open<T>(onEvent);
    try {
      this.post({ id, ...message } as Request, transfer);
    } catch (error) {
      this.router.settle({ id, ok: false, message: error instanceof Error ? error.message : String(error) });
    }
    return reply;
  }
}

/** Model `id` of the worker behind `channel`, as the raw interface `Model` drives. */
export function wasmRawModel(channel: WorkerChannel, model: number): RawModel {
  // `WasmModel`'s methods by name, with their declared arguments (less the storage, which the
  // worker adds) and results.
  const call = <M extends WasmMethod>(method: M, ...args: WasmArgs<M>) =>
    channel.request<ReturnType<Wasm.WasmModel[M]>>({ op: 'call', model, method, args });
  return {
    describe: () => call('describe'),
    addAdapter: (name, json) => call('addAdapter', name, json),
    embed: (texts, json) => call('embed', texts, json),
    logits: (texts, json) => call('logits', texts, json),
    classify: (texts, json) => call('classify', texts, json),
    generate: (prompt, json) => call('generate', prompt, json),
    train: async (optionsJson) => wasmTraining(channel, model, optionsJson),
    evaluate: (data, json) => call('evaluate', data, json),
    saveAdapter: (dir, name) => call('saveAdapter', dir, name ?? null),
    exportAdapter: (path, json) => call('exportAdapter', path, json),
    saveMerged: (path) => call('saveMerged', path),
    loadAdapter: (dir, json) => call('loadAdapter', dir, json),
    setActiveAdapters: (json) => call('setActiveAdapters', json),
    deleteAdapter: (name) => call('deleteAdapter', name),
    mergeAdapters: () => call('mergeAdapters'),
    unmergeAdapters: () => call('unmergeAdapters'),
    dispose: () => void channel.request({ op: 'free', model }).catch(() => {}),
  };
}

/**
 * Training in the worker: it trains synchronously, so events arrive as messages while it runs
 * and cancellation goes through a shared flag it reads before each record of the data and after
 * every step. Without SharedArrayBuffer (a browser page that is not cross-origin isolated) the
 * worker cannot see the flag, so cancelling ends the worker instead (its models with it).
 */
function wasmTraining(channel: WorkerChannel, model: number, optionsJson: string): RawTraining {
  const shared = typeof SharedArrayBuffer === 'function' && (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated !== false;
  const flag = new Int32Array(shared ? new SharedArrayBuffer(4) : new ArrayBuffer(4));
  const queue: (string | null)[] = [];
  const waiting: ((e: string | null) => void)[] = [];
  const push = (e: string | null) => {
    const w = waiting.shift();
    if (w) w(e);
    else queue.push(e);
  };
  const done = channel.stream<string>({ op: 'train', model, optionsJson, flag }, (event) => push(event as string));
  const finished = done.finally(() => push(null));
  finished.catch(() => {});
  return {
    next: () => (queue.length ? Promise.resolve(queue.shift()!) : new Promise((resolve) => waiting.push(resolve))),
    finish: () => done,
    cancel: () => {
      if (shared) Atomics.store(flag, 0, 1);
      else
        channel.terminate?.(
          new Error(
            '[ERR_ABORTED] training was cancelled by ending the WASM worker (this page is not cross-origin isolated, so the worker cannot be told to stop after a step); load the model again',
          ),
        );
    },
  };
}
