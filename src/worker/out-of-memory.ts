import type { GenerationBatchResult, GenerationRequest } from '../engine/generation-types.js';

/**
 * How device memory running out reads in an engine error: ONNX Runtime's CUDA provider ("CUDA failure 2: out of
 * memory", "Failed to allocate memory for requested buffer of size …"), its BFC arena ("Available memory of … is
 * smaller than requested bytes of …"), cuBLAS/cuDNN allocations, and the device loop's cudaMalloc ("out of memory").
 */
const OUT_OF_MEMORY = [
  /out of memory/i,
  /failed to allocate memory/i,
  /available memory of \d+ is smaller than requested bytes/i,
  /(CUBLAS|CUDNN)_STATUS_ALLOC_FAILED/,
];

export function isOutOfMemory(error: Error): boolean {
  return OUT_OF_MEMORY.some((re) => re.test(error.message));
}

/** Consecutive requests of a batch that ran together (`batch`) or failed together (`error`). */
export type BatchPart = { readonly size: number } & ({ readonly batch: GenerationBatchResult } | { readonly error: Error });

/**
 * Runs the requests as one batch; when the device runs out of memory, runs each half instead, and so on down to
 * single requests, so a batch too large for the device fails no job that fits alone. Any other error fails the part
 * it happened in, and parts that ran keep their results. Parts come back in request order.
 */
export async function generateSplittingOnOom(
  generate: (requests: readonly GenerationRequest[]) => Promise<GenerationBatchResult>,
  requests: readonly GenerationRequest[],
  onSplit?: (size: number, error: Error) => void,
): Promise<BatchPart[]> {
  try {
    return [{ size: requests.length, batch: await generate(requests) }];
  } catch (e) {
    const error = e instanceof Error ? e : new Error(String(e));
    if (requests.length < 2 || !isOutOfMemory(error)) return [{ size: requests.length, error }];
    onSplit?.(requests.length, error);
    const half = Math.ceil(requests.length / 2);
    const first = await generateSplittingOnOom(generate, requests.slice(0, half), onSplit);
    return [...first, ...(await generateSplittingOnOom(generate, requests.slice(half), onSplit))];
  }
}
