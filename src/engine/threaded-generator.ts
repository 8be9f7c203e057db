import type { Worker } from 'node:worker_threads';
import { ThreadRespawn, startEngineThread } from './engine-thread.js';
import type { ModelManifest } from '../model/manifest.js';
import { type DeviceSpec, preferFullFp32OnCuda } from './execution-provider.js';
import type { GeneratorOptions } from './generator.js';
import type { GenerationBatchResult, GenerationRequest } from './generation-types.js';
import type { ThreadRequest, ThreadResponse } from './generator-thread-protocol.js';
import type { TextGenerationEngine } from './text-generation-engine.js';

const THREAD_ENTRY = new URL('./generator-thread.js', import.meta.url);

/** A call made after close(), or still pending when close() was called. */
export class GeneratorClosedError extends Error {
  override name = 'GeneratorClosedError';
  constructor() {
    super('generator is closed');
  }
}

interface Pending {
  readonly thread: Worker;
  resolve: (r: GenerationBatchResult) => void;
  reject: (e: Error) => void;
}

export interface ThreadedGeneratorOptions extends Pick<GeneratorOptions, 'deviceLoopMaxBatch' | 'deviceLoopCudaGraph' | 'sharedKvBuffer'> {
  readonly device: DeviceSpec;
  readonly onWarning?: (message: string) => void;
  /** The thread's entry module (default generator-thread.js); tests substitute one that fails on purpose. */
  readonly threadEntry?: URL;
}

/**
 * A Generator in a worker thread. If the thread dies (a native error), the batches it held fail with the reason
 * and the next generate() starts one fresh thread (shared by concurrent calls), so one bad batch never takes
 * the worker down with it. close() fails the calls still pending and stops the thread.
 */
export class ThreadedGenerator implements TextGenerationEngine {
  private thread: Worker | undefined;
  /** The fresh thread started after a crash, shared by every call that needs it. */
  private readonly respawn = new ThreadRespawn(
    async () => (await spawnThread(this.modelDir, this.options)).thread,
    () => this.closed !== undefined,
    () => new GeneratorClosedError(),
    (thread) => this.attach(thread),
  );
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private closed: Promise<void> | undefined;

  private constructor(
    private readonly modelDir: string,
    private readonly options: ThreadedGeneratorOptions,
    readonly manifest: ModelManifest,
    readonly device: string,
  ) {}

  static async open(modelDir: string, options: ThreadedGeneratorOptions): Promise<ThreadedGenerator> {
    preferFullFp32OnCuda(options.device);
    const { manifest, device, thread } = await spawnThread(modelDir, options);
    const g = new ThreadedGenerator(modelDir, options, manifest, device);
    g.attach(thread);
    return g;
  }

  async generate(requests: readonly GenerationRequest[]): Promise<GenerationBatchResult> {
    if (this.closed) throw new GeneratorClosedError();
    const thread = this.thread ?? (await this.respawn.get());
    if (this.closed) throw new GeneratorClosedError();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { thread, resolve, reject });
      thread.postMessage({ type: 'generate', id, requests: [...requests] } satisfies ThreadRequest);
    });
  }

  /** Fails every pending call with GeneratorClosedError and stops the thread; idempotent. */
  close(): Promise<void> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  private async shutdown(): Promise<void> {
    for (const p of this.pending.values()) p.reject(new GeneratorClosedError());
    this.pending.clear();
    // A thread still starting is stopped by the respawn once it is up (it sees `closed`).
    await this.respawn.settled();
    const thread = this.thread;
    this.thread = undefined;
    if (!thread) return;
    const exited = new Promise<void>((resolve) => thread.once('exit', () => resolve()));
    if (thread.threadId === -1) return; // exited already
    thread.postMessage({ type: 'close' } satisfies ThreadRequest);
    await exited;
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
    // Only the calls this thread held fail; a replacement's calls are not its business.
    const fail = (reason: string): void => {
      if (this.thread === thread) this.thread = undefined;
      for (const [id, p] of this.pending) {
        if (p.thread !== thread) continue;
        this.pending.delete(id);
        p.reject(new Error(reason));
      }
    };
    thread.on('error', (e) => {
      fail(`generator thread crashed: ${e.message}`);
      void thread.terminate();
    });
    thread.on('exit', (code) => fail(`generator thread exited with code ${code}`));
  }
}

/** Starts a thread and waits for its Generator to open; rejects if the thread fails or ends before that. */
async function spawnThread(modelDir: string, options: ThreadedGeneratorOptions): Promise<{ manifest: ModelManifest; device: string; thread: Worker }> {
  const { onWarning, threadEntry, ...generatorOptions } = options;
  type Ready = Extract<ThreadResponse, { type: 'ready' }>;
  const { thread, ready } = await startEngineThread<Ready>(threadEntry ?? THREAD_ENTRY, { modelDir, options: generatorOptions }, 'generator thread', onWarning);
  return { manifest: ready.manifest, device: ready.device, thread };
}
