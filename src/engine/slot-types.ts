import { randomBytes } from 'node:crypto';
import { SlotCapacityError, SlotRequestError } from './slot-errors.js';

/** How a row picks its tokens; `seed` makes sampling reproducible (any batch mates, slot or run). */
export type SlotSampling =
  | { readonly kind: 'greedy' }
  | {
      readonly kind: 'sample';
      /** > 0. */
      readonly temperature: number;
      /** 0 = off; 1 = greedy. */
      readonly topK: number;
      /** In (0, 1]; 1 = off. */
      readonly topP: number;
      /** 0 .. 2^63 - 1; a random one when absent (reported in the result). */
      readonly seed?: bigint | number;
    };

export interface SlotRequest {
  readonly promptIds: readonly number[];
  readonly maxNewTokens: number;
  /** EOS ids are held back until this many tokens exist (default 0). */
  readonly minNewTokens?: number;
  /** Hugging Face's rule over the prompt and the generated tokens (default 1: off). */
  readonly repetitionPenalty?: number;
  readonly sampling?: SlotSampling;
  /**
   * Token ids that end the request with "stop" like EOS (not included), once minNewTokens exist. Checked on the
   * host at chunk boundaries: unlike EOS ids they are not held back before minNewTokens, only not treated as stops.
   */
  readonly stopTokenIds?: readonly number[];
}

/** cancelled: the caller cancelled it (handle.cancel()) before it ended by itself. */
export type SlotFinishReason = 'stop' | 'length' | 'cancelled';

export interface SlotTimings {
  /** Milliseconds since the epoch. */
  readonly submittedAt: number;
  readonly finishedAt: number;
  /** Waiting for a slot. */
  readonly queueMs: number;
  /** From submit() to the chunk boundary that delivered the first token (undefined: none was generated). */
  readonly timeToFirstTokenMs: number | undefined;
  readonly totalMs: number;
  readonly promptTokens: number;
  /** The slot it ran in (-1: never admitted). */
  readonly slot: number;
}

export interface SlotResult {
  /** Generated ids only: no prompt, no terminating EOS or stop id. */
  readonly tokenIds: number[];
  readonly finishReason: SlotFinishReason;
  /** The seed a sampled request ran with (given or drawn). */
  readonly seed?: bigint;
  readonly timings: SlotTimings;
}

/** Per-request callbacks; the engine never lets an exception from one of them reach another request. */
export interface SlotCallbacks {
  /** New tokens of this request, in order, at each chunk boundary (without a terminating EOS or stop id). */
  onTokens?(tokens: readonly number[]): void;
  onDone(result: SlotResult): void;
  /** The request could not finish (engine closed, native failure). */
  onError(error: Error): void;
}

export interface SlotHandle {
  readonly id: number;
  /**
   * Ends the request at the next chunk boundary with "stop" (the caller found a stop sequence): its slot is freed
   * and onDone gets the tokens delivered so far. Does nothing once it has ended.
   */
  finish(): void;
  /** Ends it with "cancelled": taken out of the queue, or freed at the next boundary. */
  cancel(): void;
}

/** What a slot engine serves; requests are checked against it before they are queued. */
export interface SlotEngineLimits {
  readonly slots: number;
  /** Prompt + max_new_tokens of one request, at most. */
  readonly capacity: number;
  readonly vocabSize: number;
  readonly eosTokenIds: readonly number[];
  /** Decode steps between chunk boundaries (K). */
  readonly chunkSteps: number;
  /** Prompt tokens per row in a prefill run (P). */
  readonly prefillChunk: number;
  /** Joining rows per prefill run (R). */
  readonly prefillRows: number;
}

/** What the native loop counts (native/slot-loop.h SlotLoopStats), as the engine's stats report it. */
export interface SlotLoopCounters {
  readonly chunks: number;
  readonly decodeSteps: number;
  /** Chunks replayed from the captured CUDA graph. */
  readonly graphReplays: number;
  readonly prefillRuns: number;
  readonly prefillTokens: number;
  /**
   * Seconds of prefill runs (with their copies into the slots) and of decode steps: on CUDA device time between
   * events on the loop's stream, a prefill's counted at the next chunk; on the CPU provider wall time.
   */
  readonly prefillSeconds: number;
  readonly decodeSeconds: number;
  /** Wall seconds spent inside the native admissions and chunks (what the engine's thread waits for). */
  readonly hostSeconds: number;
  /** The part of hostSeconds inside admissions (launching prefill runs; against prefillSeconds: host- or device-bound). */
  readonly admitSeconds: number;
  /** Decode row-steps offered: K × the rows running at the start of each chunk. */
  readonly rowSteps: number;
  /** Tokens the device emitted: every generated token plus the EOS that ended a row (not in its result). */
  readonly emittedTokens: number;
}

/** What a closed engine reports for its released loop. */
export const NO_LOOP_COUNTERS: SlotLoopCounters = {
  chunks: 0,
  decodeSteps: 0,
  graphReplays: 0,
  prefillRuns: 0,
  prefillTokens: 0,
  prefillSeconds: 0,
  decodeSeconds: 0,
  hostSeconds: 0,
  admitSeconds: 0,
  rowSteps: 0,
  emittedTokens: 0,
};

export interface SlotStats extends SlotLoopCounters {
  readonly slots: number;
  /** Slots holding a request. */
  readonly busy: number;
  readonly waiting: number;
  readonly submitted: number;
  readonly admitted: number;
  readonly completed: number;
  readonly cancelled: number;
  readonly failed: number;
  /** Rows the native loop's state says are running: equals busy between chunks unless a slot leaked. */
  readonly deviceRunning: number;
}

/** The slot engine's interface, whether it runs in this thread (SlotEngine) or a worker thread (ThreadedSlotEngine). */
export interface SlotGenerationEngine {
  readonly limits: SlotEngineLimits;
  /** e.g. "cuda:0 (slots)". */
  readonly device: string;
  /** Queues a request; throws SlotRequestError (naming the field) for one the engine cannot run, taking no slot. */
  submit(request: SlotRequest, callbacks: SlotCallbacks): SlotHandle;
  stats(): Promise<SlotStats>;
  close(): Promise<void>;
}

/** An engine's submit() as a promise of the result (generate() of both engines). */
export function generateThrough(
  engine: Pick<SlotGenerationEngine, 'submit'>,
  request: SlotRequest,
  onTokens?: (tokens: readonly number[]) => void,
): Promise<SlotResult> {
  return new Promise((resolve, reject) => {
    engine.submit(request, { onDone: resolve, onError: reject, ...(onTokens ? { onTokens } : {}) });
  });
}

const MAX_SEED = (1n << 63n) - 1n;

/** A checked request with every default filled in and the seed drawn when sampling without one. */
export interface ResolvedSlotRequest {
  readonly promptIds: readonly number[];
  readonly maxNewTokens: number;
  readonly minNewTokens: number;
  readonly repetitionPenalty: number;
  readonly sample: boolean;
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  readonly seed: bigint;
  readonly seeded: boolean;
  readonly stopTokenIds: readonly number[];
}

const isCount = (v: unknown, min: number): v is number => typeof v === 'number' && Number.isInteger(v) && v >= min;
const isFiniteNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

function tokenIds(field: string, ids: unknown, vocabSize: number, allowEmpty: boolean): readonly number[] {
  if (!Array.isArray(ids)) throw new SlotRequestError(field, 'must be an array of token ids');
  if (!allowEmpty && ids.length === 0) throw new SlotRequestError(field, 'is empty');
  const bad = ids.find((t) => !isCount(t, 0) || t >= vocabSize);
  if (bad !== undefined) throw new SlotRequestError(field, `token id ${String(bad)} is outside 0 .. ${vocabSize - 1}`);
  return ids as number[];
}

/** The request as the engine runs it, or SlotRequestError naming the first field at fault. */
export function resolveSlotRequest(r: SlotRequest, limits: SlotEngineLimits): ResolvedSlotRequest {
  const promptIds = tokenIds('promptIds', r.promptIds, limits.vocabSize, false);
  if (!isCount(r.maxNewTokens, 1)) throw new SlotRequestError('maxNewTokens', 'must be an integer ≥ 1');
  if (promptIds.length + r.maxNewTokens > limits.capacity) throw new SlotCapacityError(promptIds.length, r.maxNewTokens, limits.capacity);
  const minNewTokens = r.minNewTokens ?? 0;
  if (!isCount(minNewTokens, 0)) throw new SlotRequestError('minNewTokens', 'must be an integer ≥ 0');
  const repetitionPenalty = r.repetitionPenalty ?? 1;
  if (!isFiniteNumber(repetitionPenalty) || repetitionPenalty <= 0) throw new SlotRequestError('repetitionPenalty', 'must be a number > 0');
  const stopTokenIds = tokenIds('stopTokenIds', r.stopTokenIds ?? [], limits.vocabSize, true);
  const s = r.sampling ?? { kind: 'greedy' };
  const base = { promptIds, maxNewTokens: r.maxNewTokens, minNewTokens, repetitionPenalty, stopTokenIds };
  if (s.kind === 'greedy') return { ...base, sample: false, temperature: 1, topK: 0, topP: 1, seed: 0n, seeded: false };
  if (s.kind !== 'sample') throw new SlotRequestError('sampling.kind', `must be greedy or sample, not ${String((s as { kind: unknown }).kind)}`);
  if (!isFiniteNumber(s.temperature) || s.temperature <= 0) throw new SlotRequestError('sampling.temperature', 'must be a number > 0 when sampling');
  if (!isCount(s.topK, 0)) throw new SlotRequestError('sampling.topK', 'must be an integer ≥ 0 (0: off)');
  if (!isFiniteNumber(s.topP) || s.topP <= 0 || s.topP > 1) throw new SlotRequestError('sampling.topP', 'must be in (0, 1]');
  let seed: bigint;
  if (s.seed === undefined) {
    seed = randomBytes(8).readBigUInt64LE() & MAX_SEED;
  } else {
    if (typeof s.seed === 'number' && !Number.isSafeInteger(s.seed)) throw new SlotRequestError('sampling.seed', 'must be an integer in 0 .. 2^63 - 1 (a bigint beyond 2^53)');
    if (typeof s.seed !== 'number' && typeof s.seed !== 'bigint') throw new SlotRequestError('sampling.seed', 'must be an integer in 0 .. 2^63 - 1');
    seed = BigInt(s.seed);
    if (seed < 0n || seed > MAX_SEED) throw new SlotRequestError('sampling.seed', 'must be an integer in 0 .. 2^63 - 1');
  }
  return { ...base, sample: true, temperature: s.temperature, topK: s.topK, topP: s.topP, seed, seeded: s.seed !== undefined };
}
