import { loadDeviceLoopAddon } from './device-loop-runner.js';
import type { SlotBindings } from '../model/contract.js';
import type { SlotLoopCounters } from './slot-types.js';

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

/** slotStats(): the loop's counters, the rows it admitted and those its device state says running. */
export interface SlotLoopStats extends SlotLoopCounters {
  readonly admitted: number;
  readonly running: number;
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
  slotStats(handle: unknown): SlotLoopStats;
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
