import { z } from 'zod';

export const Timings = z.object({
  /** When the producer added the job (ms since epoch). */
  queuedAt: z.number(),
  /** When a worker took it. */
  startedAt: z.number(),
  finishedAt: z.number(),
  tokenizeMs: z.number(),
  /** Wall time of the batch's graph runs (shared by every job of the batch). */
  generateMs: z.number(),
  batchSize: z.number().int(),
  /** This job's generated tokens / generateMs. */
  tokensPerSecond: z.number(),
  workerId: z.string(),
  device: z.string(),
  /** When the first generated token reached the worker (jobs on the slot engine; a batch job's is finishedAt). */
  firstTokenAt: z.number().optional(),
});
export type Timings = z.infer<typeof Timings>;

/** Token counts of a job, named as OpenAI-style consumers expect them. */
export const Usage = z.object({
  prompt_tokens: z.number().int(),
  completion_tokens: z.number().int(),
  total_tokens: z.number().int(),
});
export type Usage = z.infer<typeof Usage>;

export function usageOf(promptTokens: number, completionTokens: number): Usage {
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
}

/**
 * What a worker returns for a job (stored by BullMQ as the job's return value). A result stored before `usage`
 * existed gets it from its token ids when it is read, so every parsed result has one.
 */
export const JobResult = z.object({
  id: z.string(),
  model: z.string(),
  prompt: z.string(),
  promptTokenIds: z.array(z.number().int()),
  /** Generated ids only: no prompt, no padding, no terminating EOS. */
  tokenIds: z.array(z.number().int()),
  text: z.string(),
  finishReason: z.enum(['stop', 'length']),
  /** The seed a sampled job ran with on the slot engine (its own or a drawn one): a number, or a decimal string above 2^53 - 1. */
  seed: z.union([z.number().int(), z.string()]).optional(),
  timings: Timings,
  usage: Usage.optional(),
  /** The job's `metadata`, as it was given. */
  metadata: z.record(z.string(), z.unknown()).optional(),
}).transform((r) => ({ ...r, usage: r.usage ?? usageOf(r.promptTokenIds.length, r.tokenIds.length) }));
export type JobResult = z.output<typeof JobResult>;
