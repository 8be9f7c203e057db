import { Worker } from 'node:worker_threads';
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
  resolveSlotRequest,
} from './slot-types.js';

const THREAD_ENTRY = new URL('./slot-thread.js', import.meta.url);

interface Started {
  readonly thread: Worker;
  readonly limits: SlotEngineLimits;
  readonly device: string;
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
 * submit() and never reaches the thread), events come back once per chunk boundary. If the thread dies (a
 * native error), its requests fail with the reason and the next submit() starts a fresh thread.
 */
export class ThreadedSlotEngine implements SlotGenerationEngine {
  private thread: Worker | undefined;
  private starting: Promise<Worker> | undefined;
  private readonly pending = new Map<number, SlotCallbacks>();
  private readonly stats_ = new Map<number, { resolve: (s: SlotStats) => void; reject: (e: Error) => void }>();
  private outbox: { id: number; request: SlotRequest }[] = [];
  private nextId = 0;
  private closing = false;

  private constructor(
    private readonly modelDir: string,
    private readonly options: SlotEngineOptions,
    readonly limits: SlotEngineLimits,
    readonly device: string,
  ) {}

  static async open(modelDir: string, options: SlotEngineOptions): Promise<ThreadedSlotEngine> {
    const started = await ThreadedSlotEngine.spawn(modelDir, options);
    const engine = new ThreadedSlotEngine(modelDir, options, started.limits, started.device);
    engine.attach(started.thread);
    return engine;
  }

  submit(request: SlotRequest, callbacks: SlotCallbacks): SlotHandle {
    if (this.closing) throw new SlotEngineClosedError();
    resolveSlotRequest(request, this.limits);
    const id = this.nextId++;
    this.pending.set(id, callbacks);
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
    return new Promise((resolve, reject) => {
      this.submit(request, { onDone: resolve, onError: reject, ...(onTokens ? { onTokens } : {}) });
    });
  }

  async stats(): Promise<SlotStats> {
    if (this.closing) throw new SlotEngineClosedError();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.stats_.set(id, { resolve, reject });
      this.post({ type: 'stats', id }, (e) => {
        this.stats_.delete(id);
        reject(e);
      });
    });
  }

  /** Ends the thread; its requests fail with SlotEngineClosedError. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const thread = this.thread ?? (await this.starting?.catch(() => undefined));
    if (thread) {
      const exited = new Promise<void>((resolve) => thread.once('exit', () => resolve()));
      thread.postMessage({ type: 'close' } satisfies SlotThreadRequest);
      await exited;
    }
    this.failAll(new SlotEngineClosedError());
  }

  private end(id: number, reason: 'stop' | 'cancelled'): void {
    if (!this.pending.has(id)) return;
    const queued = this.outbox.find((o) => o.id === id);
    if (queued && reason === 'cancelled') {
      // Not sent yet: it never reaches the thread.
      this.outbox.splice(this.outbox.indexOf(queued), 1);
      const callbacks = this.pending.get(id)!;
      this.pending.delete(id);
      const now = Date.now();
      const timings = { submittedAt: now, finishedAt: now, queueMs: 0, timeToFirstTokenMs: undefined, totalMs: 0, promptTokens: queued.request.promptIds.length, slot: -1 };
      this.call(id, () => callbacks.onDone({ tokenIds: [], finishReason: 'cancelled', timings }));
      return;
    }
    this.flushOutbox();
    this.post({ type: 'end', id, reason });
  }

  private flushOutbox(): void {
    if (this.outbox.length === 0) return;
    const requests = this.outbox;
    this.outbox = [];
    this.post({ type: 'submit', requests }, (e) => {
      for (const { id } of requests) this.fail(id, new SlotEngineClosedError(`slot thread could not start: ${e.message}`));
    });
  }

  /** Messages reach the thread in the order they are posted (each waits for the same thread, or its start). */
  private post(msg: SlotThreadRequest, onNoThread: (e: Error) => void = () => {}): void {
    this.running().then((thread) => thread.postMessage(msg), onNoThread);
  }

  /** The live thread, or a fresh one after a crash. */
  private running(): Promise<Worker> {
    if (this.thread) return Promise.resolve(this.thread);
    if (this.closing) return Promise.reject(new SlotEngineClosedError());
    this.starting ??= ThreadedSlotEngine.spawn(this.modelDir, this.options).then(
      (started) => {
        this.starting = undefined;
        this.attach(started.thread);
        return started.thread;
      },
      (e: Error) => {
        this.starting = undefined;
        throw e;
      },
    );
    return this.starting;
  }

  private static spawn(modelDir: string, options: SlotEngineOptions): Promise<Started> {
    return new Promise((resolve, reject) => {
      const { onWarning: _, ...engineOptions } = options;
      const init: SlotThreadInit = { modelDir, options: engineOptions };
      const thread = new Worker(THREAD_ENTRY, { workerData: init });
      const onMessage = (msg: SlotThreadResponse): void => {
        if (msg.type === 'warning') options.onWarning?.(msg.message);
        else if (msg.type === 'ready') {
          thread.off('message', onMessage);
          thread.off('error', onError);
          thread.off('exit', onExit);
          resolve({ thread, limits: msg.limits, device: msg.device });
        } else if (msg.type === 'failed') {
          reject(new Error(msg.message));
        }
      };
      const onError = (e: Error): void => reject(e);
      const onExit = (code: number): void => reject(new Error(`slot thread exited with code ${code} before it was ready`));
      thread.on('message', onMessage);
      thread.once('error', onError);
      thread.once('exit', onExit);
    });
  }

  private attach(thread: Worker): void {
    this.thread = thread;
    thread.on('message', (msg: SlotThreadResponse) => {
      if (msg.type === 'warning') this.options.onWarning?.(msg.message);
      else if (msg.type === 'stats') {
        this.stats_.get(msg.id)?.resolve(msg.stats);
        this.stats_.delete(msg.id);
      } else if (msg.type === 'events') {
        for (const event of msg.events) {
          const callbacks = this.pending.get(event.id);
          if (!callbacks) continue;
          if ('tokens' in event) {
            // A callback that throws fails its request here; the thread frees its slot.
            if (!this.call(event.id, () => callbacks.onTokens?.(event.tokens))) this.post({ type: 'end', id: event.id, reason: 'cancelled' });
          } else if ('result' in event) {
            this.pending.delete(event.id);
            this.call(event.id, () => callbacks.onDone(event.result));
          } else {
            this.fail(event.id, rebuild(event.error));
          }
        }
      }
    });
    const lost = (reason: string): void => {
      if (this.thread === thread) this.thread = undefined;
      this.failAll(new SlotLoopError(reason));
    };
    thread.on('error', (e) => lost(`slot thread crashed: ${e.message}`));
    thread.on('exit', (code) => {
      if (!this.closing) lost(`slot thread exited with code ${code}`);
    });
  }

  /** A caller's callback that throws fails that request only (here: onError, and the thread ends it). */
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
    const callbacks = this.pending.get(id);
    if (!callbacks) return;
    this.pending.delete(id);
    try {
      callbacks.onError(error);
    } catch (e) {
      this.options.onWarning?.(`slot request ${id}: onError threw (${(e as Error).message})`);
    }
  }

  private failAll(error: Error): void {
    this.outbox = [];
    for (const id of [...this.pending.keys()]) this.fail(id, error);
    for (const s of this.stats_.values()) s.reject(error);
    this.stats_.clear();
  }
}
