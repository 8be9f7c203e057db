import type { Worker } from 'node:worker_threads';
import { ThreadRespawn, startEngineThread } from './engine-thread.js';
import { preferFullFp32OnCuda } from './execution-provider.js';
import type { SlotEngineOptions } from './slot-engine.js';
import { SlotEngineClosedError, SlotLoopError } from './slot-errors.js';
import type { SlotThreadInit, SlotThreadRequest, SlotThreadResponse } from './slot-thread-protocol.js';
import {
  type SlotCallbacks,
  type SlotEngineLimits,
  type SlotGenerationEngine,
  type SlotHandle,
  type SlotRequest,
  type SlotResult,
  type SlotStats,
  generateThrough,
  resolveSlotRequest,
} from './slot-types.js';

const THREAD_ENTRY = new URL('./slot-thread.js', import.meta.url);

export interface ThreadedSlotEngineOptions extends SlotEngineOptions {
  /** The thread's entry module (default slot-thread.js); tests substitute one that fails on purpose. */
  readonly threadEntry?: URL;
}

interface Started {
  readonly thread: Worker;
  readonly limits: SlotEngineLimits;
  readonly device: string;
}

interface Pending {
  readonly callbacks: SlotCallbacks;
  readonly promptTokens: number;
  /** The thread it was sent to (undefined: still in the outbox). */
  thread: Worker | undefined;
}

/** The error a request gets, rebuilt from its name and message on this side of the thread boundary. */
function rebuild(error: { name: string; message: string }): Error {
  if (error.name === 'SlotEngineClosedError') return new SlotEngineClosedError(error.message);
  if (error.name === 'SlotLoopError') return new SlotLoopError(error.message);
  const e = new Error(error.message);
  e.name = error.name;
  return e;
}

/**
 * A SlotEngine in a worker thread, with the same interface: requests are checked here (a bad one throws at
 * submit() and never reaches the thread), events come back as one message per chunk boundary. If the thread dies
 * (a native error), the requests it held fail with the reason and the next request starts one fresh thread.
 */
export class ThreadedSlotEngine implements SlotGenerationEngine {
  private thread: Worker | undefined;
  /** The fresh thread started after a crash, shared by everything that needs it. */
  private readonly respawn = new ThreadRespawn(
    async () => (await spawnThread(this.modelDir, this.options)).thread,
    () => this.closed !== undefined,
    () => new SlotEngineClosedError(),
    (thread) => this.attach(thread),
  );
  private readonly pending = new Map<number, Pending>();
  private readonly statsCalls = new Map<number, { thread: Worker; resolve: (s: SlotStats) => void; reject: (e: Error) => void }>();
  private outbox: { id: number; request: SlotRequest }[] = [];
  private nextId = 0;
  private closed: Promise<void> | undefined;

  private constructor(
    private readonly modelDir: string,
    private readonly options: ThreadedSlotEngineOptions,
    readonly limits: SlotEngineLimits,
    readonly device: string,
  ) {}

  static async open(modelDir: string, options: ThreadedSlotEngineOptions): Promise<ThreadedSlotEngine> {
    preferFullFp32OnCuda(options.device);
    const started = await spawnThread(modelDir, options);
    const engine = new ThreadedSlotEngine(modelDir, options, started.limits, started.device);
    engine.attach(started.thread);
    return engine;
  }

  submit(request: SlotRequest, callbacks: SlotCallbacks): SlotHandle {
    if (this.closed) throw new SlotEngineClosedError();
    resolveSlotRequest(request, this.limits);
    const id = this.nextId++;
    this.pending.set(id, { callbacks, promptTokens: request.promptIds.length, thread: undefined });
    // Requests submitted in one turn of the event loop travel as one message.
    if (this.outbox.length === 0) queueMicrotask(() => this.flushOutbox());
    this.outbox.push({ id, request });
    return {
      id,
      finish: () => this.end(id, 'stop'),
      cancel: () => this.end(id, 'cancelled'),
    };
  }

  /** submit() as a promise of the result. */
  generate(request: SlotRequest, onTokens?: (tokens: readonly number[]) => void): Promise<SlotResult> {
    return generateThrough(this, request, onTokens);
  }

  async stats(): Promise<SlotStats> {
    if (this.closed) throw new SlotEngineClosedError();
    const thread = await this.running();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.statsCalls.set(id, { thread, resolve, reject });
      thread.postMessage({ type: 'stats', id } satisfies SlotThreadRequest);
    });
  }

  /** Fails every request still pending with SlotEngineClosedError and stops the thread; idempotent. */
  close(): Promise<void> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  private async shutdown(): Promise<void> {
    // A thread still starting is stopped by the respawn once it is up (it sees `closed`).
    await this.respawn.settled();
    const thread = this.thread;
    this.thread = undefined;
    if (thread && thread.threadId !== -1) {
      const exited = new Promise<void>((resolve) => thread.once('exit', () => resolve()));
      // The thread's engine fails its requests (events) before the thread ends.
      thread.postMessage({ type: 'close' } satisfies SlotThreadRequest);
      await exited;
    }
    this.failWhere(() => true, new SlotEngineClosedError());
  }

  private end(id: number, reason: 'stop' | 'cancelled'): void {
    const p = this.pending.get(id);
    if (!p) return;
    const queued = this.outbox.findIndex((o) => o.id === id);
    if (queued >= 0 && reason === 'cancelled') {
      // Not sent yet: it never reaches the thread.
      this.outbox.splice(queued, 1);
      this.pending.delete(id);
      const now = Date.now();
      const timings = { submittedAt: now, finishedAt: now, queueMs: 0, timeToFirstTokenMs: undefined, totalMs: 0, promptTokens: p.promptTokens, slot: -1 };
      this.call(id, () => p.callbacks.onDone({ tokenIds: [], finishReason: 'cancelled', timings }));
      return;
    }
    this.flushOutbox();
    this.post({ type: 'end', id, reason });
  }

  private flushOutbox(): void {
    if (this.outbox.length === 0) return;
    const requests = this.outbox;
    this.outbox = [];
    this.running().then(
      (thread) => {
        const live = requests.filter(({ id }) => this.pending.has(id));
        for (const { id } of live) this.pending.get(id)!.thread = thread;
        if (live.length > 0) thread.postMessage({ type: 'submit', requests: live } satisfies SlotThreadRequest);
      },
      (e: Error) => {
        const error = e instanceof SlotEngineClosedError ? e : new SlotEngineClosedError(`slot thread could not start: ${e.message}`);
        for (const { id } of requests) this.fail(id, error);
      },
    );
  }

  /** Messages reach the thread in the order they are posted (each waits for the same thread, or its start). */
  private post(msg: SlotThreadRequest): void {
    this.running().then(
      (thread) => thread.postMessage(msg),
      () => {},
    );
  }

  /** The live thread, or one fresh thread after a crash, shared by every caller. */
  private running(): Promise<Worker> {
    if (this.thread) return Promise.resolve(this.thread);
    if (this.closed) return Promise.reject(new SlotEngineClosedError());
    return this.respawn.get();
  }

  private attach(thread: Worker): void {
    this.thread = thread;
    thread.on('message', (msg: SlotThreadResponse) => {
      if (msg.type === 'warning') this.options.onWarning?.(msg.message);
      else if (msg.type === 'stats') {
        this.statsCalls.get(msg.id)?.resolve(msg.stats);
        this.statsCalls.delete(msg.id);
      } else if (msg.type === 'events') {
        for (const event of msg.events) {
          const p = this.pending.get(event.id);
          if (!p) continue;
          if ('tokens' in event) {
            // A callback that throws fails its request here; the thread frees its slot.
            if (!this.call(event.id, () => p.callbacks.onTokens?.(event.tokens))) thread.postMessage({ type: 'end', id: event.id, reason: 'cancelled' } satisfies SlotThreadRequest);
          } else if ('result' in event) {
            this.pending.delete(event.id);
            this.call(event.id, () => p.callbacks.onDone(event.result));
          } else {
            this.fail(event.id, rebuild(event.error));
          }
        }
      }
    });
    // Only what this thread held fails; a replacement's requests are not its business.
    const lost = (reason: string): void => {
      if (this.thread === thread) this.thread = undefined;
      this.failWhere((t) => t === thread, this.closed ? new SlotEngineClosedError() : new SlotLoopError(reason));
    };
    thread.on('error', (e) => {
      lost(`slot thread crashed: ${e.message}`);
      void thread.terminate();
    });
    thread.on('exit', (code) => lost(`slot thread exited with code ${code}`));
  }

  /** A caller's callback that throws fails that request only. */
  private call(id: number, f: () => void): boolean {
    try {
      f();
      return true;
    } catch (e) {
      this.options.onWarning?.(`slot request ${id}: a callback threw (${(e as Error).message}); the request fails`);
      this.fail(id, e instanceof Error ? e : new Error(String(e)));
      return false;
    }
  }

  private fail(id: number, error: Error): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    try {
      p.callbacks.onError(error);
    } catch (e) {
      this.options.onWarning?.(`slot request ${id}: onError threw (${(e as Error).message})`);
    }
  }

  private failWhere(held: (thread: Worker | undefined) => boolean, error: Error): void {
    for (const [id, p] of [...this.pending]) if (held(p.thread)) this.fail(id, error);
    for (const [id, s] of [...this.statsCalls]) {
      if (!held(s.thread)) continue;
      this.statsCalls.delete(id);
      s.reject(error);
    }
    if (held(undefined)) this.outbox = [];
  }
}

/** Starts a thread and waits for its SlotEngine to open; rejects if the thread fails or ends before that. */
async function spawnThread(modelDir: string, options: ThreadedSlotEngineOptions): Promise<Started> {
  const { onWarning, threadEntry, ...engineOptions } = options;
  const init: SlotThreadInit = { modelDir, options: engineOptions };
  type Ready = Extract<SlotThreadResponse, { type: 'ready' }>;
  const { thread, ready } = await startEngineThread<Ready>(threadEntry ?? THREAD_ENTRY, init, 'slot thread', onWarning);
  return { thread, limits: ready.limits, device: ready.device };
}
