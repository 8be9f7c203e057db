import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { type ModelManifest, readManifest } from '../model/manifest.js';
import { SLOT_STATUS, slotBindings } from '../model/contract.js';
import { nativeLoopOptions, onnxRuntimeLibrary } from './device-loop-runner.js';
import { type DeviceSpec, formatDevice, openOnDevice, preferFullFp32OnCuda } from './execution-provider.js';
import { type SlotAdmission, type SlotChunk, type SlotLoopAddon, loadSlotLoopAddon } from './slot-addon.js';
import { SlotEngineClosedError, SlotLoopError } from './slot-errors.js';
import {
  type ResolvedSlotRequest,
  type SlotCallbacks,
  type SlotEngineLimits,
  type SlotFinishReason,
  type SlotGenerationEngine,
  type SlotHandle,
  type SlotRequest,
  type SlotResult,
  type SlotStats,
  NO_LOOP_COUNTERS,
  generateThrough,
  resolveSlotRequest,
} from './slot-types.js';

export interface SlotEngineOptions {
  readonly device: DeviceSpec;
  /** Rows of the running batch (default: 256 on CUDA, 8 on the CPU provider). */
  readonly slots?: number;
  /** Prompt + max_new_tokens one slot holds (default: the model's context length). */
  readonly capacity?: number;
  /** Decode steps between chunk boundaries, where rows end and join (default 16). */
  readonly chunkSteps?: number;
  /** Prompt tokens per row in a prefill run (default 512, at most the capacity). */
  readonly prefillChunk?: number;
  /** Joining rows whose first prompt chunks share one prefill run (default 16). */
  readonly prefillRows?: number;
  /** Replay the K decode steps from one captured CUDA graph (CUDA only; default on). */
  readonly cudaGraph?: boolean;
  /**
   * ONNX Runtime's intra-op threads per session (default: its own choice, all cores). One is faster for small
   * models on a busy machine, where the thread pool's synchronization costs more than the work it splits.
   */
  readonly intraOpThreads?: number;
  /**
   * Run each bucketed prefill shape once at open (default: on CUDA), so that no admission pays for ONNX Runtime's
   * first run of a shape (on the H200 ~55 ms of host time each; warming them all takes seconds: docs/performance.md).
   */
  readonly warmPrefill?: boolean;
  /** ONNX Runtime writes a per-node profile of the prefill session here, at close (measurements only). */
  readonly prefillProfilePrefix?: string;
  /** A callback threw: the engine carries on and says so here. */
  readonly onWarning?: (message: string) => void;
}

const DEFAULT_CHUNK_STEPS = 16;
const DEFAULT_PREFILL_CHUNK = 512;
const DEFAULT_PREFILL_ROWS = 64;

interface Entry {
  readonly id: number;
  readonly request: ResolvedSlotRequest;
  readonly callbacks: SlotCallbacks;
  readonly submittedAt: number;
  readonly submittedClock: number;
  readonly stopIds: ReadonlySet<number>;
  slot: number;
  admittedClock: number;
  firstTokenClock: number | undefined;
  readonly tokens: number[];
  /** The caller asked to end it: applied at the next chunk boundary. */
  ending: 'stop' | 'cancelled' | undefined;
  ended: boolean;
}

/**
 * Continuous batching over the native slot loop (native/slot-loop.h): one running batch of S slots; at every
 * chunk boundary (every K decode steps) the rows that ended (EOS, their own max_new_tokens, a stop id, the caller's
 * finish()/cancel()) complete and free their slots, and waiting requests join in their place, their prompts
 * prefilled in chunks of P tokens. Requests of any prompt length, max_new_tokens and decoding parameters share
 * the run. The engine needs no tokenizer: stop sequences are the caller's, through onTokens and finish().
 * Everything here runs on the thread that owns the engine (the native calls block it for one chunk at a time).
 */
export class SlotEngine implements SlotGenerationEngine {
  private readonly free: number[];
  private readonly bySlot: (Entry | undefined)[];
  private readonly waiting: Entry[] = [];
  private waitingHead = 0;
  private readonly entries = new Map<number, Entry>();
  private nextId = 0;
  private looping = false;
  private closed = false;
  private readonly counts = { submitted: 0, admitted: 0, completed: 0, cancelled: 0, failed: 0 };

  private constructor(
    private readonly addon: SlotLoopAddon,
    private readonly handle: unknown,
    readonly manifest: ModelManifest,
    readonly limits: SlotEngineLimits,
    readonly device: string,
    private readonly onWarning: ((message: string) => void) | undefined,
  ) {
    this.free = Array.from({ length: limits.slots }, (_, i) => limits.slots - 1 - i);
    this.bySlot = new Array(limits.slots).fill(undefined);
  }

  static open(modelDir: string, options: SlotEngineOptions): SlotEngine {
    preferFullFp32OnCuda(options.device);
    const manifest = readManifest(modelDir);
    const { spec, files } = manifest;
    if (!files.slotDecode || !files.slotPrefill) {
      throw new Error(`${modelDir} has no slot-engine steps (its architecture has no GroupQueryAttention step, or it was built before they existed)`);
    }
    const cuda = options.device.kind !== 'cpu';
    if (cuda && spec.precision !== 'fp16') throw new Error(`the slot engine on CUDA needs an fp16 build (GroupQueryAttention has no fp32 CUDA kernel)`);
    if (!cuda && spec.precision !== 'fp32') throw new Error(`${modelDir} is an fp16 build: the CPU provider runs fp32 builds`);
    const capacity = options.capacity ?? spec.contextLength;
    if (!Number.isInteger(capacity) || capacity < 2 || capacity > spec.contextLength) {
      throw new Error(`slot capacity ${capacity} must be an integer in 2 .. ${spec.contextLength} (the model's context length)`);
    }
    const limits: SlotEngineLimits = {
      slots: options.slots ?? (cuda ? 256 : 8),
      capacity,
      vocabSize: spec.vocabSize,
      // Every EOS id of the model ends a row on the device (the decode step's genqueue.NextToken holds them).
      eosTokenIds: [...spec.eosTokenIds],
      chunkSteps: options.chunkSteps ?? DEFAULT_CHUNK_STEPS,
      prefillChunk: Math.min(options.prefillChunk ?? DEFAULT_PREFILL_CHUNK, capacity),
      prefillRows: options.prefillRows ?? DEFAULT_PREFILL_ROWS,
    };
    for (const [name, v] of [
      ['slots', limits.slots],
      ['chunkSteps', limits.chunkSteps],
      ['prefillChunk', limits.prefillChunk],
      ['prefillRows', limits.prefillRows],
    ] as const) {
      if (!Number.isInteger(v) || v < 1) throw new Error(`slot engine option ${name} must be an integer ≥ 1, not ${v}`);
    }
    const threads = options.intraOpThreads ?? 0;
    if (!Number.isInteger(threads) || threads < 0) throw new Error(`slot engine option intraOpThreads must be an integer ≥ 0, not ${threads}`);
    const addon = loadSlotLoopAddon();
    const decodeStep = join(modelDir, files.slotDecode);
    const prefillStep = join(modelDir, files.slotPrefill);
    const handle = openOnDevice(options.device, () => addon.slotOpen(onnxRuntimeLibrary(), {
      decodeStep,
      prefillStep,
      ...nativeLoopOptions(options.device, spec, options.cudaGraph),
      slots: limits.slots,
      capacity: limits.capacity,
      chunkSteps: limits.chunkSteps,
      prefillChunk: limits.prefillChunk,
      prefillRows: limits.prefillRows,
      vocabSize: spec.vocabSize,
      intraOpThreads: threads,
      warmPrefill: options.warmPrefill ?? cuda,
      ...(options.prefillProfilePrefix ? { prefillProfilePrefix: options.prefillProfilePrefix } : {}),
      bindings: slotBindings(),
    }));
    return new SlotEngine(addon, handle, manifest, limits, `${formatDevice(options.device)} (slots)`, options.onWarning);
  }

  submit(request: SlotRequest, callbacks: SlotCallbacks): SlotHandle {
    if (this.closed) throw new SlotEngineClosedError();
    const resolved = resolveSlotRequest(request, this.limits);
    const entry: Entry = {
      id: this.nextId++,
      request: resolved,
      callbacks,
      submittedAt: Date.now(),
      submittedClock: performance.now(),
      stopIds: new Set(resolved.stopTokenIds),
      slot: -1,
      admittedClock: 0,
      firstTokenClock: undefined,
      tokens: [],
      ending: undefined,
      ended: false,
    };
    this.entries.set(entry.id, entry);
    this.waiting.push(entry);
    this.counts.submitted++;
    this.schedule();
    return {
      id: entry.id,
      finish: () => this.end(entry, 'stop'),
      cancel: () => this.end(entry, 'cancelled'),
    };
  }

  /** submit() as a promise of the result. */
  generate(request: SlotRequest, onTokens?: (tokens: readonly number[]) => void): Promise<SlotResult> {
    return generateThrough(this, request, onTokens);
  }

  async stats(): Promise<SlotStats> {
    return this.statsNow();
  }

  statsNow(): SlotStats {
    // admitted is the engine's own count (this.counts); the loop's stays out.
    const { admitted: _, running, ...loop } = this.closed ? { ...NO_LOOP_COUNTERS, admitted: 0, running: 0 } : this.addon.slotStats(this.handle);
    return {
      slots: this.limits.slots,
      busy: this.limits.slots - this.free.length,
      waiting: this.waiting.length - this.waitingHead,
      ...this.counts,
      ...loop,
      deviceRunning: running,
    };
  }

  /** Fails every waiting and running request with SlotEngineClosedError and releases the native loop. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const error = new SlotEngineClosedError();
    for (const entry of [...this.entries.values()]) this.fail(entry, error);
    this.addon.slotClose(this.handle);
  }

  private end(entry: Entry, reason: 'stop' | 'cancelled'): void {
    if (entry.ended || entry.ending) return;
    if (entry.slot < 0) {
      // Still waiting: it leaves the queue (skipped when its turn comes) and ends now, with nothing generated.
      this.complete(entry, reason);
      return;
    }
    entry.ending = reason;
    this.schedule();
  }

  private schedule(): void {
    if (this.looping || this.closed) return;
    this.looping = true;
    void this.loop();
  }

  /**
   * Boundary (ends, joins), K steps, results; then the event loop gets a turn (new requests, finish() calls). A
   * native failure fails the rows running at the time, never the loop: the waiting requests still get their turn.
   */
  private async loop(): Promise<void> {
    try {
      await nextTurn();
      while (!this.closed) {
        try {
          this.applyEnds();
          this.admit();
          if (this.free.length === this.limits.slots) break;
          this.collect(this.addon.slotRun(this.handle));
        } catch (e) {
          this.failRunning(e);
        }
        await nextTurn();
      }
    } finally {
      this.looping = false;
    }
    if (!this.closed && this.waiting.length > this.waitingHead) this.schedule();
  }

  private applyEnds(): void {
    const released: number[] = [];
    for (const entry of this.bySlot) {
      if (entry?.ending === undefined) continue;
      released.push(entry.slot);
      this.complete(entry, entry.ending);
    }
    if (released.length > 0) this.addon.slotRelease(this.handle, Int32Array.from(released));
  }

  private admit(): void {
    const joining: Entry[] = [];
    while (this.free.length > 0 && this.waitingHead < this.waiting.length) {
      const entry = this.waiting[this.waitingHead++]!;
      if (entry.ended) continue;
      entry.slot = this.free.pop()!;
      entry.admittedClock = performance.now();
      this.bySlot[entry.slot] = entry;
      joining.push(entry);
    }
    if (this.waitingHead > 1024 && this.waitingHead * 2 > this.waiting.length) {
      this.waiting.splice(0, this.waitingHead);
      this.waitingHead = 0;
    }
    if (joining.length === 0) return;
    const rows: SlotAdmission[] = joining.map((e) => {
      const r = e.request;
      return {
        slot: e.slot,
        promptIds: Int32Array.from(r.promptIds),
        maxNewTokens: r.maxNewTokens,
        minNewTokens: r.minNewTokens,
        seed: r.seed,
        topK: r.topK,
        sample: r.sample,
        temperature: r.temperature,
        topP: r.topP,
        repetitionPenalty: r.repetitionPenalty,
      };
    });
    try {
      this.addon.slotAdmit(this.handle, rows);
      this.counts.admitted += joining.length;
    } catch (e) {
      // Only the joiners fail (their prefill may be half done); the rows already running carry on.
      const error = new SlotLoopError(`admission failed: ${(e as Error).message}`);
      for (const entry of joining) this.fail(entry, error);
      this.addon.slotRelease(this.handle, Int32Array.from(rows, (r) => r.slot));
    }
  }

  /** Hands each row's new tokens to its caller and completes the rows that ended. */
  private collect(chunk: SlotChunk): void {
    const S = this.limits.slots;
    const K = chunk.ring.length / S;
    const now = performance.now();
    const released: number[] = [];
    for (let b = 0; b < S; b++) {
      const entry = this.bySlot[b];
      if (!entry || entry.ending) continue;
      const status = chunk.status[b]!;
      const fresh: number[] = [];
      for (let k = 0; k < K; k++) {
        const t = chunk.ring[k * S + b]!;
        if (t >= 0) fresh.push(t);
      }
      // A row that stopped on the device emitted its EOS last.
      if (status === SLOT_STATUS.stopped) fresh.pop();
      let reason: SlotFinishReason | undefined = status === SLOT_STATUS.stopped ? 'stop' : status === SLOT_STATUS.length ? 'length' : undefined;
      if (entry.stopIds.size > 0) {
        const min = entry.request.minNewTokens;
        const at = fresh.findIndex((t, i) => entry.stopIds.has(t) && entry.tokens.length + i >= min);
        if (at >= 0) {
          fresh.length = at;
          if (reason === undefined) released.push(b);
          reason = 'stop';
        }
      }
      if (fresh.length > 0) {
        entry.firstTokenClock ??= now;
        entry.tokens.push(...fresh);
        if (!this.call(entry, () => entry.callbacks.onTokens?.(fresh))) {
          if (reason === undefined) released.push(b);
          continue;
        }
      }
      if (reason !== undefined) this.complete(entry, reason);
    }
    if (released.length > 0) this.addon.slotRelease(this.handle, Int32Array.from(released));
  }

  /** Runs a callback; one that throws fails its own request (freeing its slot) and nothing else. */
  private call(entry: Entry, f: () => void): boolean {
    try {
      f();
      return true;
    } catch (e) {
      this.onWarning?.(`slot request ${entry.id}: a callback threw (${(e as Error).message}); the request fails`);
      this.fail(entry, e instanceof Error ? e : new Error(String(e)));
      return false;
    }
  }

  private failRunning(e: unknown): void {
    const error = e instanceof SlotLoopError ? e : new SlotLoopError(`the slot loop failed: ${(e as Error).message}`);
    const slots: number[] = [];
    for (const entry of this.bySlot) {
      if (!entry) continue;
      slots.push(entry.slot);
      this.fail(entry, error);
    }
    try {
      if (slots.length > 0) this.addon.slotRelease(this.handle, Int32Array.from(slots));
    } catch (released) {
      this.onWarning?.(`slot engine: releasing failed rows failed too (${(released as Error).message})`);
    }
  }

  private detach(entry: Entry): void {
    entry.ended = true;
    this.entries.delete(entry.id);
    if (entry.slot >= 0 && this.bySlot[entry.slot] === entry) {
      this.bySlot[entry.slot] = undefined;
      this.free.push(entry.slot);
    }
  }

  private complete(entry: Entry, reason: SlotFinishReason): void {
    if (entry.ended) return;
    this.detach(entry);
    if (reason === 'cancelled') this.counts.cancelled++;
    else this.counts.completed++;
    const finishedClock = performance.now();
    const r = entry.request;
    const result: SlotResult = {
      tokenIds: entry.tokens,
      finishReason: reason,
      ...(r.sample ? { seed: r.seed } : {}),
      timings: {
        submittedAt: entry.submittedAt,
        finishedAt: entry.submittedAt + (finishedClock - entry.submittedClock),
        queueMs: (entry.slot >= 0 ? entry.admittedClock : finishedClock) - entry.submittedClock,
        timeToFirstTokenMs: entry.firstTokenClock === undefined ? undefined : entry.firstTokenClock - entry.submittedClock,
        totalMs: finishedClock - entry.submittedClock,
        promptTokens: r.promptIds.length,
        slot: entry.slot,
      },
    };
    try {
      entry.callbacks.onDone(result);
    } catch (e) {
      this.onWarning?.(`slot request ${entry.id}: onDone threw (${(e as Error).message})`);
    }
  }

  private fail(entry: Entry, error: Error): void {
    if (entry.ended) return;
    this.detach(entry);
    this.counts.failed++;
    try {
      entry.callbacks.onError(error);
    } catch (e) {
      this.onWarning?.(`slot request ${entry.id}: onError threw (${(e as Error).message})`);
    }
  }
}
