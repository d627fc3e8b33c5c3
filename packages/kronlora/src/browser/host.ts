/**
 * The page's side of the browser's Web Worker (Node's counterpart: wasm-host.ts): one worker
 * per page, started on first use.
 */
import { KronLoraError } from '../errors.js';
import { WorkerChannel } from '../wasm-client.js';
import type { Reply, Request } from '../wasm-models.js';

export class WebWorkerHost extends WorkerChannel {
  private worker?: Worker;

  private start(): Worker {
    if (this.worker) return this.worker;
    // This exact form lets bundlers (Vite, webpack, esbuild) find and emit the worker.
    const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    worker.onmessage = (event: MessageEvent<Reply>) => void this.router.settle(event.data);
    worker.onerror = (event) => {
      event.preventDefault();
      this.terminate(new KronLoraError('ERR_BACKEND', `the WASM worker failed: ${event.message || 'it could not be started'}`));
    };
    this.worker = worker;
    return worker;
  }

  protected post(message: Request, transfer: Transferable[]): void {
    this.start().postMessage(message, transfer);
  }

  /** End the worker and every model in it; pending requests reject with `reason`. */
  override terminate(reason: Error): void {
    this.worker?.terminate();
    this.worker = undefined;
    this.router.failAll(reason);
  }
}
