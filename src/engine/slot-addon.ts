import { loadDeviceLoopAddon } from './device-loop-runner.js';
import type { SlotBindings } from '../model/contract.js';

/** native/slot-loop.h SlotLoopOptions, as slotOpen() reads them. */
export interface SlotLoopOptions {
  readonly decodeStep: string;
  readonly prefillStep: string;
  readonly cuda: boolean;
  readonly deviceId: number;
  readonly cudaGraph: boolean;
  readonly numLayers: number;
  readonly kvHeads: number;
  readonly headSize: number;
  readonly kvFloat16: boolean;
  readonly slots: number;
  readonly capacity: number;
  readonly chunkSteps: number;
  readonly prefillChunk: number;
  readonly prefillRows: number;
  readonly vocabSize: number;
  /** ONNX Runtime's intra-op threads per session (0: its default). */
  readonly intraOpThreads: number;
  /** Run every bucketed prefill shape once at open (ONNX Runtime's first run of a shape is slow on CUDA). */
  readonly warmPrefill?: boolean;
  /** Where ONNX Runtime writes a per-node profile of the prefill session (measurements only). */
  readonly prefillProfilePrefix?: string;
  readonly bindings: SlotBindings;
}

/** One row joining the running batch (native/slot-loop.h SlotAdmission). */
export interface SlotAdmission {
  readonly slot: number;
  readonly promptIds: Int32Array;
  readonly maxNewTokens: number;
  readonly minNewTokens: number;
  readonly seed: bigint;
  readonly topK: number;
  readonly sample: boolean;
  readonly temperature: number;
  readonly topP: number;
  readonly repetitionPenalty: number;
}

/** What one run of K decode steps reports: ring [K × S] (the token row s emitted at step k, or -1), status [S]. */
export interface SlotChunk {
  readonly ring: Int32Array;
  readonly status: Int32Array;
}

export interface SlotLoopCounters {
  readonly chunks: number;
  readonly decodeSteps: number;
  /** Chunks replayed from the captured CUDA graph. */
  readonly graphReplays: number;
  readonly prefillRuns: number;
  readonly prefillTokens: number;
  readonly admitted: number;
  /** Rows whose device state says running (after the last chunk, plus admissions since). */
  readonly running: number;
  /** Seconds of admit()'s prefill runs and staging copies (CUDA: device time, counted at the next run). */
  readonly prefillSeconds: number;
  /** Seconds of run()'s decode steps (CUDA: device time). */
  readonly decodeSeconds: number;
  /** Wall seconds inside admit() and run(). */
  readonly hostSeconds: number;
  /** Wall seconds inside admit(). */
  readonly admitSeconds: number;
  /** K × the rows running at the start of each chunk. */
  readonly rowSteps: number;
  /** Tokens the rows emitted (a row's terminating EOS included). */
  readonly emittedTokens: number;
}

export type HostTensorType = 'float32' | 'float16' | 'int64' | 'int32';
export interface HostTensor {
  readonly type: HostTensorType;
  readonly dims: readonly number[];
  readonly data: Float32Array | Uint16Array | BigInt64Array | Int32Array;
}

/** native/slot-loop-napi.cc's exports (the device-loop addon's other half). */
export interface SlotLoopAddon {
  slotOpen(ortLibrary: string, options: SlotLoopOptions): unknown;
  slotAdmit(handle: unknown, rows: readonly SlotAdmission[]): void;
  slotRelease(handle: unknown, slots: Int32Array): void;
  slotRun(handle: unknown): SlotChunk;
  slotStats(handle: unknown): SlotLoopCounters;
  slotClose(handle: unknown): void;
  slotResourceCounts(): { slotLoops: number };
  /** One run of a model with the addon's operators registered: host tensors in and out. */
  runGraph(
    ortLibrary: string,
    modelPath: string,
    options: { cuda: boolean; deviceId: number },
    feeds: Record<string, HostTensor>,
    outputNames: readonly string[],
  ): Record<string, HostTensor>;
}

/** The addon's slot-loop functions, or why they cannot load (not built, or built before they existed). */
export function loadSlotLoopAddon(): SlotLoopAddon {
  const addon = loadDeviceLoopAddon() as unknown as Partial<SlotLoopAddon>;
  if (typeof addon.slotOpen !== 'function') throw new Error('the device-loop addon predates the slot loop; run npm run build:native');
  return addon as SlotLoopAddon;
}
