import { Worker } from 'node:worker_threads';
import type { ModelManifest } from '../model/manifest.js';
import type { DeviceSpec } from './execution-provider.js';
import type { GeneratorOptions } from './generator.js';
import type { GenerationBatchResult, GenerationRequest } from './generation-types.js';
import type { ThreadRequest, ThreadResponse } from './generator-thread-protocol.js';
import type { TextGenerationEngine } from './text-generation-engine.js';

const THREAD_ENTRY = new URL('./generator-thread.js', import.meta.url);

interface Pending {
  resolve: (r: GenerationBatchResult) => void;
  reject: (e: Error) => void;
}

export interface ThreadedGeneratorOptions extends Pick<GeneratorOptions, 'deviceLoopMaxBatch' | 'deviceLoopCudaGraph' | 'sharedKvBuffer'> {
  readonly device: DeviceSpec;
  readonly onWarning?: (message: string) => void;
}

/**
 * A Generator in a worker thread. If the thread dies (a native error), pending batches fail with the reason
 * and the next generate() starts a fresh thread, so one bad batch never takes the worker down with it.
 */
export class ThreadedGenerator implements TextGenerationEngine {
  private thread: Worker | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private closing = false;

  private constructor(
    private readonly modelDir: string,
    private readonly options: ThreadedGeneratorOptions,
    readonly manifest: ModelManifest,
    readonly device: string,
  ) {}

  static async open(modelDir: string, options: ThreadedGeneratorOptions): Promise<ThreadedGenerator> {
    const { manifest, device, thread } = await ThreadedGenerator.spawn(modelDir, options);
    const g = new ThreadedGenerator(modelDir, options, manifest, device);
    g.attach(thread);
    return g;
  }

  async generate(requests: readonly GenerationRequest[]): Promise<GenerationBatchResult> {
    if (this.closing) throw new Error('generator is closed');
    if (!this.thread) this.attach((await ThreadedGenerator.spawn(this.modelDir, this.options)).thread);
    const id = this.nextId++;
    const thread = this.thread!;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      const msg: ThreadRequest = { type: 'generate', id, requests: [...requests] };
      thread.postMessage(msg);
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    const thread = this.thread;
    if (!thread) return;
    const exited = new Promise<void>((resolve) => thread.once('exit', () => resolve()));
    thread.postMessage({ type: 'close' } satisfies ThreadRequest);
    await exited;
  }

  private static spawn(
    modelDir: string,
    options: ThreadedGeneratorOptions,
  ): Promise<{ manifest: ModelManifest; device: string; thread: Worker }> {
    return new Promise((resolve, reject) => {
      const { onWarning: _, ...generatorOptions } = options;
      const thread = new Worker(THREAD_ENTRY, { workerData: { modelDir, options: generatorOptions } });
      const onMessage = (msg: ThreadResponse): void => {
        if (msg.type === 'warning') options.onWarning?.(msg.message);
        else if (msg.type === 'ready') {
          thread.off('message', onMessage);
          thread.off('error', onError);
          resolve({ manifest: msg.manifest, device: msg.device, thread });
        } else if (msg.type === 'failed') {
          void thread.terminate();
          reject(new Error(msg.message));
        }
      };
      const onError = (e: Error): void => reject(e);
      thread.on('message', onMessage);
      thread.once('error', onError);
    });
  }

  private attach(thread: Worker): void {
    this.thread = thread;
    thread.on('message', (msg: ThreadResponse) => {
      if (msg.type === 'warning') this.options.onWarning?.(msg.message);
      if (msg.type !== 'result' && msg.type !== 'error') return;
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.type === 'result') p.resolve(msg.result);
      else p.reject(new Error(msg.message));
    });
    const fail = (reason: string): void => {
      if (this.thread === thread) this.thread = undefined;
      for (const p of this.pending.values()) p.reject(new Error(reason));
      this.pending.clear();
    };
    thread.on('error', (e) => fail(`generator thread crashed: ${e.message}`));
    thread.on('exit', (code) => {
      if (!this.closing) fail(`generator thread exited with code ${code}`);
    });
  }
}
