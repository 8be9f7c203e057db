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
});
export type Timings = z.infer<typeof Timings>;

/** What a worker returns for a job (stored by BullMQ as the job's return value). */
export const JobResult = z.object({
  id: z.string(),
  model: z.string(),
  prompt: z.string(),
  promptTokenIds: z.array(z.number().int()),
  /** Generated ids only: no prompt, no padding, no terminating EOS. */
  tokenIds: z.array(z.number().int()),
  text: z.string(),
  finishReason: z.enum(['stop', 'length']),
  timings: Timings,
});
export type JobResult = z.infer<typeof JobResult>;
