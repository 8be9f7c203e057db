import type { GenqueueConfig } from '../config/config-schema.js';
import type { DeviceSpec } from '../engine/execution-provider.js';
import { loadSlotLoopAddon } from '../engine/slot-addon.js';
import type { SlotEngineOptions } from '../engine/slot-engine.js';
import type { ModelManifest } from '../model/manifest.js';

/** config worker.engine / --engine. */
export type EngineSetting = 'auto' | 'slots' | 'batches';

/** batches: `reason` says why auto could not pick the slot engine (logged as a warning). */
export type EngineChoice = { readonly kind: 'slots' } | { readonly kind: 'batches'; readonly reason?: string };

/**
 * Whether auto picks the slot engine on the CPU provider. Measured on the demo model through the queue (bench
 * `--sections mixed --device cpu`): README "Continuous batching in the worker" has the numbers.
 */
export const AUTO_SLOTS_ON_CPU = true;

/** Why the slot engine cannot run this model on this device, or undefined when it can. */
export function slotEngineUnavailable(manifest: ModelManifest, device: DeviceSpec): string | undefined {
  const { files, spec } = manifest;
  if (!files.slotDecode || !files.slotPrefill) return 'the model has no slot-engine steps (its architecture has none, or it was built before they existed)';
  if (device.kind !== 'cpu' && spec.precision !== 'fp16') return 'the slot engine on CUDA needs an fp16 build (--precision fp16)';
  if (device.kind === 'cpu' && spec.precision !== 'fp32') return 'the slot engine on the CPU provider needs an fp32 build (--precision fp32)';
  try {
    loadSlotLoopAddon();
  } catch (e) {
    return (e as Error).message;
  }
  return undefined;
}

/**
 * The engine a worker (or `genqueue generate`) runs: slots when asked for (or an error saying why it cannot),
 * batches when asked for, and for auto the slot engine on CUDA (and on the CPU provider when AUTO_SLOTS_ON_CPU)
 * wherever it can run.
 */
export function chooseEngine(setting: EngineSetting, manifest: ModelManifest, device: DeviceSpec): EngineChoice {
  if (setting === 'batches') return { kind: 'batches' };
  const unavailable = slotEngineUnavailable(manifest, device);
  if (setting === 'slots') {
    if (unavailable) throw new Error(`engine slots: ${unavailable}`);
    return { kind: 'slots' };
  }
  if (device.kind === 'cpu' && !AUTO_SLOTS_ON_CPU) return { kind: 'batches' };
  return unavailable ? { kind: 'batches', reason: `continuous batching is off: ${unavailable}` } : { kind: 'slots' };
}

/**
 * A slot's default capacity (prompt + max_new_tokens) is the model's context length up to this: every slot holds its
 * KV cache for the whole capacity, and 256 slots of a 131,072-token Llama 3.2 context would need ~137 GB.
 */
export const DEFAULT_MAX_SLOT_CAPACITY = 4096;

/**
 * The slot engine's options from the config's worker settings (`slots` from a flag wins); unset ones keep the
 * engine's defaults, but the capacity, which is at most DEFAULT_MAX_SLOT_CAPACITY unless set.
 */
export function slotEngineOptions(
  w: GenqueueConfig['worker'],
  manifest: ModelManifest,
  device: DeviceSpec,
  slots: number | undefined,
  onWarning: (message: string) => void,
): SlotEngineOptions {
  const set = <K extends keyof SlotEngineOptions>(key: K, value: SlotEngineOptions[K] | undefined): Partial<SlotEngineOptions> =>
    value === undefined ? {} : { [key]: value };
  return {
    device,
    ...set('slots', slots ?? w.slots),
    capacity: w.slotCapacity ?? Math.min(manifest.spec.contextLength, DEFAULT_MAX_SLOT_CAPACITY),
    ...set('chunkSteps', w.chunkSteps),
    ...set('prefillChunk', w.prefillChunk),
    ...set('prefillRows', w.prefillRows),
    onWarning,
  };
}
