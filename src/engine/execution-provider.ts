import { isMainThread } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { InferenceSession } from 'onnxruntime-node';

/** Where a session runs: `cpu`, `cuda:N` or `tensorrt:N` (TensorRT falls back to CUDA when it cannot load). */
export type DeviceSpec = { readonly kind: 'cpu' } | { readonly kind: 'cuda' | 'tensorrt'; readonly deviceId: number };

export function parseDevice(text: string): DeviceSpec {
  const t = text.trim().toLowerCase();
  if (t === 'cpu') return { kind: 'cpu' };
  const m = /^(cuda|tensorrt)(?::(\d+))?$/.exec(t);
  if (!m) throw new Error(`device "${text}": expected cpu, cuda:N or tensorrt:N`);
  return { kind: m[1] as 'cuda' | 'tensorrt', deviceId: Number(m[2] ?? 0) };
}

export function formatDevice(d: DeviceSpec): string {
  return d.kind === 'cpu' ? 'cpu' : `${d.kind}:${d.deviceId}`;
}

export function executionProviders(d: DeviceSpec): InferenceSession.ExecutionProviderConfig[] {
  switch (d.kind) {
    case 'cpu':
      return ['cpu'];
    case 'cuda':
      return [{ name: 'cuda', deviceId: d.deviceId }];
    case 'tensorrt':
      return [{ name: 'tensorrt', deviceId: d.deviceId }, { name: 'cuda', deviceId: d.deviceId }];
  }
}

const require = createRequire(import.meta.url);

/** The folder of onnxruntime-node's native files: ONNX Runtime loads execution provider libraries from here. */
export function onnxRuntimeBinDir(): string {
  return join(dirname(require.resolve('onnxruntime-node/package.json')), 'bin', 'napi-v6', process.platform, process.arch);
}

/** What ONNX Runtime loads for the CUDA provider, besides the CUDA libraries those need. */
export const CUDA_PROVIDER_LIBRARIES = ['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_cuda.so'] as const;

/** The provider libraries missing from onnxRuntimeBinDir() (empty when installed). */
export function missingCudaProviderLibraries(binDir = onnxRuntimeBinDir()): string[] {
  return CUDA_PROVIDER_LIBRARIES.filter((f) => !existsSync(join(binDir, f)));
}

/**
 * A CUDA device was asked for and ONNX Runtime's CUDA provider cannot load there. The message is one line that
 * says what failed and where to look; `genqueue doctor` lists every missing piece with its fix.
 */
export class CudaProviderUnavailableError extends Error {
  override readonly name = 'CudaProviderUnavailableError';

  constructor(
    readonly device: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${device}: ONNX Runtime's CUDA execution provider is unavailable (${reason}); run \`genqueue doctor\` for what is missing and how to fix it`, options);
  }
}

/** A CUDA device the addon cannot use (none visible, a driver problem): one line, pointing to `genqueue doctor`. */
export class CudaDeviceUnavailableError extends Error {
  override readonly name = 'CudaDeviceUnavailableError';

  constructor(
    readonly device: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${device}: no usable CUDA device (${reason}); run \`genqueue doctor\` for what is missing and how to fix it`, options);
  }
}

/** The native addon's CUDA runtime errors that mean the device itself is out of reach. */
const DEVICE_FAILURE = /cudaSetDevice|no CUDA-capable device|CUDA driver version is insufficient|cudaErrorNoDevice|cudaErrorInsufficientDriver/;

/** Opens something on a device through the native addon, turning a device that cannot be used into one clear line. */
export function openOnDevice<T>(device: DeviceSpec, open: () => T): T {
  try {
    return open();
  } catch (e) {
    if (device.kind === 'cpu' || !(e instanceof Error) || !DEVICE_FAILURE.test(e.message)) throw e;
    throw new CudaDeviceUnavailableError(formatDevice(device), e.message.split('\n')[0]!, { cause: e });
  }
}

/** Before ONNX Runtime tries (and logs its own multi-line error): the provider files must be installed. */
export function assertCudaProviderInstalled(device: DeviceSpec): void {
  if (device.kind === 'cpu') return;
  const missing = missingCudaProviderLibraries();
  if (missing.length) {
    throw new CudaProviderUnavailableError(formatDevice(device), `${missing.join(' and ')} not installed in ${onnxRuntimeBinDir()}: run \`genqueue install-cuda\``);
  }
}

/** ONNX Runtime's error when a provider's shared library (or one it needs, such as cuBLAS) fails to load. */
export function isProviderLoadFailure(e: unknown): boolean {
  return e instanceof Error && /AppendExecutionProvider_(Cuda|CUDA|TensorRT)|Failed to load (shared )?library|providers_cuda/.test(e.message);
}

/**
 * Full fp32 matrix products on CUDA. ONNX Runtime's CUDA provider lets cuBLAS use TF32 (a 10-bit mantissa) for fp32
 * products, which flips greedy tokens at near-ties, so fp32 on CUDA would not give the CPU's tokens; onnxruntime-node
 * cannot set the provider's use_tf32, so the process asks cuBLAS for full fp32 through NVIDIA_TF32_OVERRIDE=0 unless
 * the environment already says otherwise (fp16 products are unaffected). Only the main thread's environment reaches
 * native code, so engines call this before they start their thread.
 */
export function preferFullFp32OnCuda(d: DeviceSpec): void {
  if (d.kind !== 'cpu' && isMainThread && process.env.NVIDIA_TF32_OVERRIDE === undefined) process.env.NVIDIA_TF32_OVERRIDE = '0';
}
