import { z } from 'zod';

/** One measured configuration. secondsPerBatch/newTokensPerSecond are absent when status is not "ok". */
export const BenchRow = z.object({
  name: z.string(),
  batch: z.number().int(),
  status: z.enum(['ok', 'unavailable', 'failed']).default('ok'),
  secondsPerBatch: z.number().optional(),
  newTokensPerSecond: z.number().optional(),
  jobsPerSecond: z.number().optional(),
  /** Device-loop rows: milliseconds per decode step (a step feeds or generates one token per row). */
  msPerStep: z.number().optional(),
  precision: z.enum(['fp32', 'fp16']).optional(),
  promptTokens: z.number().int().optional(),
  totalTokens: z.number().int().optional(),
  /** Which optimization this row isolates, e.g. {"sharedKvBuffer": false}. */
  variant: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).optional(),
  gpuMemoryMiB: z.number().optional(),
  note: z.string().optional(),
  error: z.string().optional(),
});
export type BenchRow = z.input<typeof BenchRow>;

export interface BenchShape {
  readonly promptTokens: number;
  /** Prompt + generated; generation never stops early (min_new_tokens = max_new_tokens). */
  readonly totalTokens: number;
}

/** "Here is some text to encode Hello World", the write-up's prompt (8 GPT-2 tokens). */
export const SEED_PROMPT = [4342, 318, 617, 2420, 284, 37773, 18435, 2159];

export function promptOf(length: number): number[] {
  return Array.from({ length }, (_, i) => SEED_PROMPT[i % SEED_PROMPT.length]!);
}

/** Times fn after `warmups` untimed calls; returns mean seconds per call. */
export async function timeIt(fn: () => Promise<unknown>, repeats: number, warmups: number): Promise<number> {
  for (let i = 0; i < warmups; i++) await fn();
  const t = performance.now();
  for (let i = 0; i < repeats; i++) await fn();
  return (performance.now() - t) / repeats / 1000;
}

export function okRow(
  name: string,
  batch: number,
  seconds: number,
  shape: BenchShape,
  extra: Partial<BenchRow> = {},
): BenchRow {
  const newTokens = shape.totalTokens - shape.promptTokens;
  return {
    name,
    batch,
    status: 'ok',
    secondsPerBatch: seconds,
    newTokensPerSecond: (batch * newTokens) / seconds,
    promptTokens: shape.promptTokens,
    totalTokens: shape.totalTokens,
    ...extra,
  };
}
