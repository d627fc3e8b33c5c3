/**
 * The main-thread side of the WASM backend's worker: one worker per process, started on first
 * use, with requests matched to replies by id. It does not keep the process alive when idle.
 */
import { Worker } from 'node:worker_threads';
import { KronLoraError, fromBackendError } from './errors.js';
import type { Request } from './wasm-worker.js';

/** A request as sent: the worker's `Request` less the id added here. */
type RequestBody = Request extends infer R ? (R extends unknown ? Omit<R, 'id'> : never) : never;

interface Reply {
  id: number;
  /** A progress message of a streaming request (not its end). */
  event?: unknown;
  ok: boolean;
  value?: unknown;
  message?: string;
  runtime?: boolean;
}

/**
 * The parent's Node flags minus those that only make sense for the main script: a worker
 * started with `--input-type` or `--eval` fails (e.g. under `node --input-type=module -e ...`).
 */
export function workerExecArgv(execArgv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < execArgv.length; i++) {
    const a = execArgv[i];
    if (a.startsWith('--input-type')) continue;
    if (['-e', '--eval', '-p', '--print'].includes(a)) {
      i++; // and its code
      continue;
    }
    if (/^(--eval|--print)=/.test(a)) continue;
    out.push(a);
  }
  return out;
}

export class WasmHost {
  private worker?: Worker;
  private nextId = 1;
  private pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void; onEvent?: (e: unknown) => void }>();

  constructor(private readonly modulePath: string) {}

  private start(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(new URL('./wasm-worker.js', import.meta.url), {
      workerData: { modulePath: this.modulePath },
      execArgv: workerExecArgv(process.execArgv),
    });
    worker.on('message', (reply: Reply) => {
      const p = this.pending.get(reply.id);
      if (!p) return;
      if ('event' in reply) {
        p.onEvent?.(reply.event);
        return;
      }
      this.pending.delete(reply.id);
      if (this.pending.size === 0) worker.unref();
      if (reply.ok) p.resolve(reply.value);
      else {
        const error = reply.runtime ? new WebAssembly.RuntimeError(reply.message) : new Error(reply.message);
        p.reject(fromBackendError(error));
      }
    });
    worker.on('error', (error) => this.failAll(error));
    worker.on('exit', (code) => {
      this.worker = undefined;
      this.failAll(new KronLoraError('ERR_INTERNAL', `the WASM worker exited (code ${code})`));
    });
    worker.unref();
    this.worker = worker;
    return worker;
  }

  private failAll(error: unknown): void {
    for (const p of this.pending.values()) p.reject(fromBackendError(error));
    this.pending.clear();
  }

  request<T>(message: RequestBody, transfer: ArrayBuffer[] = []): Promise<T> {
    return this.stream<T>(message, undefined, transfer);
  }

  /** A request whose worker side posts `{ id, event }` messages before its reply. */
  stream<T>(message: RequestBody, onEvent?: (e: unknown) => void, transfer: ArrayBuffer[] = []): Promise<T> {
    const worker = this.start();
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, onEvent });
      worker.ref();
      worker.postMessage({ id, ...message }, transfer);
    });
  }
}
