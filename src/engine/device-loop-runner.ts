import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type DeviceLoopBindings, EOS_CHECK_EVERY, deviceLoopBindings } from '../model/contract.js';
import type { ModelManifest } from '../model/manifest.js';
import { type DeviceSpec, openOnDevice, preferFullFp32OnCuda } from './execution-provider.js';
import { type GenerationRequest, type GenerationResult, resultFromGenerated } from './generation-types.js';

const require = createRequire(import.meta.url);

/** Where native/build.sh puts the addon, from dist/src/engine/. */
export const DEVICE_LOOP_ADDON = fileURLToPath(new URL('../../../native/build/genqueue_device_loop.node', import.meta.url));

interface AddonOptions {
  cuda: boolean;
  deviceId: number;
  cudaGraph: boolean;
  numLayers: number;
  /** Each layer's K and V buffers are [batch, kvHeads, capacity, headSize]. */
  kvHeads: number;
  headSize: number;
  kvFloat16: boolean;
  /** The step graph's state and cache names (contract.ts). */
  bindings: DeviceLoopBindings;
  smallBatchStep?: string;
  smallBatchRows?: number;
  profilePrefix?: string;
}

/** native/device-loop.cc's exports. */
interface DeviceLoopAddon {
  open(ortLibrary: string, step: string, options: AddonOptions): unknown;
  generate(
    handle: unknown,
    tokens: Int32Array,
    promptLengths: Int32Array,
    minLengths: Int32Array,
    endLengths: Int32Array,
    batch: number,
    capacity: number,
    eosTokenId: number,
    checkEvery: number,
  ): { tokens: Int32Array; steps: number };
  close(handle: unknown): void;
  /** Why the small-batch step given to open() is not used (it could not be created), or undefined. */
  smallBatchError(handle: unknown): string | undefined;
}

/** The libonnxruntime.so.1 that onnxruntime-node loads, so the addon shares its ONNX Runtime. */
export function onnxRuntimeLibrary(): string {
  const pkg = dirname(require.resolve('onnxruntime-node/package.json'));
  const lib = join(pkg, 'bin', 'napi-v6', process.platform, process.arch, process.platform === 'darwin' ? 'libonnxruntime.1.dylib' : 'libonnxruntime.so.1');
  if (!existsSync(lib)) throw new Error(`ONNX Runtime library not found at ${lib}`);
  return lib;
}

/** Loads the addon, or says why it cannot (not built: run `npm run build:native`). */
export function loadDeviceLoopAddon(): DeviceLoopAddon {
  if (!existsSync(DEVICE_LOOP_ADDON)) throw new Error(`device-loop addon not built (${DEVICE_LOOP_ADDON} missing; run npm run build:native)`);
  return require(DEVICE_LOOP_ADDON) as DeviceLoopAddon;
}

export interface DeviceLoopRunnerOptions {
  readonly device: DeviceSpec;
  /** Replay steps from captured CUDA graphs (CUDA only; default on for CUDA). */
  readonly cudaGraph?: boolean;
  /**
   * Batches (after rounding up to a power of two) of at most this many rows run the model's small-batch step
   * (fp16 CUDA builds: genqueue.SmallBatchMatMul) when it has one: default 2 (the addon's), 0 never (for on/off
   * measurements).
   */
  readonly smallBatchRows?: number;
  /** Write ONNX Runtime's per-node profile of the step session to <prefix>_<date>.json (diagnostics). */
  readonly profilePrefix?: string;
  /** Told once when the model's small-batch step could not be created (its batches run the regular step). */
  readonly onWarning?: (message: string) => void;
}

/**
 * What both native loops (the device loop and the slot loop) are told about the device and the model's KV caches;
 * CUDA graphs default to on with CUDA.
 */
export function nativeLoopOptions(device: DeviceSpec, spec: ModelManifest['spec'], cudaGraph?: boolean) {
  const cuda = device.kind !== 'cpu';
  return {
    cuda,
    deviceId: device.kind === 'cpu' ? 0 : device.deviceId,
    cudaGraph: cuda && (cudaGraph ?? true),
    numLayers: spec.numLayers,
    kvHeads: spec.numKvHeads,
    headSize: spec.headSize,
    kvFloat16: spec.precision === 'fp16',
  };
}

const CAPACITY_STEP = 64;

const nextPowerOfTwo = (n: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

/**
 * Greedy generation through the native device loop: one step graph run per position with every tensor bound
 * to device buffers (and, on CUDA, replayed from CUDA graphs of 16 steps each), prompts fed one token per step. Batches are
 * rounded up to a power of two and buffers to a multiple of 64 positions, so a worker keeps a handful of
 * captured shapes instead of one per request mix. Repetition penalty is not implemented here.
 */
export class DeviceLoopRunner {
  /** Decode steps the last run() took (fewer than its longest row when every row ended with EOS early). */
  lastSteps = 0;

  private constructor(
    private readonly addon: DeviceLoopAddon,
    private readonly handle: unknown,
    private readonly manifest: ModelManifest,
    /** Why the model's small-batch step is not used although it has one (it could not be created), or undefined. */
    readonly smallBatchError: string | undefined,
  ) {}

  static open(modelDir: string, manifest: ModelManifest, options: DeviceLoopRunnerOptions): DeviceLoopRunner {
    preferFullFp32OnCuda(options.device);
    const { spec, capabilities, files } = manifest;
    const cuda = options.device.kind !== 'cpu';
    const step = cuda ? files.deviceLoop : files.deviceLoopCpu;
    if (!capabilities.deviceLoop || !step) {
      throw new Error(`${spec.architecture} model has no device-loop step${spec.rope?.type === 'dynamic' ? ' (dynamic rope scaling depends on the whole prompt length)' : ''}`);
    }
    if (cuda && spec.precision !== 'fp16' && !capabilities.maskedDecodeAttention) {
      throw new Error(`the device loop on CUDA needs an fp16 build for this model (its step runs GroupQueryAttention, which has no fp32 CUDA kernel)`);
    }
    const addon = loadDeviceLoopAddon();
    const handle = openOnDevice(options.device, () => addon.open(onnxRuntimeLibrary(), join(modelDir, step), {
      ...nativeLoopOptions(options.device, spec, options.cudaGraph),
      bindings: deviceLoopBindings(),
      ...(cuda && files.deviceLoopSmallBatch ? { smallBatchStep: join(modelDir, files.deviceLoopSmallBatch) } : {}),
      ...(options.smallBatchRows !== undefined ? { smallBatchRows: options.smallBatchRows } : {}),
      ...(options.profilePrefix ? { profilePrefix: options.profilePrefix } : {}),
    }));
    // Its kernels are compiled when it is created: one that fails leaves every batch on the regular step.
    const smallBatchError = addon.smallBatchError(handle);
    if (smallBatchError) options.onWarning?.(`small-batch step unavailable (${smallBatchError.split('\n')[0]}); batches of 1-2 run the regular step`);
    return new DeviceLoopRunner(addon, handle, manifest, smallBatchError);
  }

  /** Requests must be valid for the model (Generator.validate) and greedy without repetition penalty. */
  run(requests: readonly GenerationRequest[]): GenerationResult[] {
    const { contextLength, eosTokenId } = this.manifest.spec;
    const total = Math.max(...requests.map((r) => r.promptIds.length + r.maxNewTokens));
    const capacity = Math.min(contextLength, Math.ceil(total / CAPACITY_STEP) * CAPACITY_STEP);
    const batch = nextPowerOfTwo(requests.length);
    const tokens = new Int32Array(batch * capacity);
    // Padding rows (batch rounded up): one token in, one out, never holding the loop.
    const promptLengths = new Int32Array(batch).fill(1);
    const minLengths = new Int32Array(batch);
    const endLengths = new Int32Array(batch).fill(2);
    requests.forEach((r, row) => {
      tokens.set(r.promptIds, row * capacity);
      promptLengths[row] = r.promptIds.length;
      minLengths[row] = r.promptIds.length + r.minNewTokens;
      endLengths[row] = r.promptIds.length + r.maxNewTokens;
    });
    const { tokens: out, steps } = this.addon.generate(this.handle, tokens, promptLengths, minLengths, endLengths, batch, capacity, eosTokenId, EOS_CHECK_EVERY);
    this.lastSteps = steps;
    return requests.map((r, row) => {
      const start = row * capacity + r.promptIds.length;
      return resultFromGenerated(out.subarray(start, start + r.maxNewTokens), eosTokenId);
    });
  }

  close(): void {
    this.addon.close(this.handle);
  }
}
