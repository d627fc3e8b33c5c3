/**
 * The WASM backend's worker thread as seen from Node's main thread: one worker per process,
 * started on first use, that does not keep the process alive when idle.
 */
import { Worker } from 'node:worker_threads';
import { KronLoraError } from './errors.js';
import { WorkerChannel } from './wasm-client.js';
import type { Reply, Request } from './wasm-models.js';

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

export class WasmHost extends WorkerChannel {
  private worker?: Worker;

  constructor(private readonly modulePath: string) {
    super();
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const url = new URL('./wasm-worker.js', import.meta.url);
    const workerData = { modulePath: this.modulePath };
    let worker: Worker;
    try {
      worker = new Worker(url, { workerData, execArgv: workerExecArgv(process.execArgv) });
    } catch (error) {
      if ((error as { code?: string }).code !== 'ERR_WORKER_INVALID_EXEC_ARGV') throw error;
      // A worker refuses V8 and process-wide flags (`node --max-old-space-size=8192 app.js`,
      // --expose-gc, --title); V8's apply to every thread of the process anyway.
      worker = new Worker(url, { workerData, execArgv: [] });
    }
    worker.on('message', (reply: Reply) => {
      if (this.router.settle(reply) && this.router.size === 0) worker.unref();
    });
    worker.on('error', (error) => this.router.failAll(error));
    worker.on('exit', (code) => {
      this.worker = undefined;
      this.router.failAll(new KronLoraError('ERR_INTERNAL', `the WASM worker exited (code ${code})`));
    });
    worker.unref();
    this.worker = worker;
    return worker;
  }

  protected post(message: Request, transfer: Transferable[]): void {
    const worker = this.start();
    // Kept alive while a request is pending; unref'd again when the last reply arrives.
    worker.ref();
    worker.postMessage(message, transfer as ArrayBuffer[]);
  }
}
