import type { GenerationRequest, SearchParams } from '../engine/generation-types.js';
import type { SlotRequest } from '../engine/slot-types.js';
import type { JobData } from '../queue/job-schema.js';

/** Maps a validated job's decoding fields onto the engine's search parameters. */
export function searchParamsFor(job: JobData): SearchParams {
  switch (job.decoding) {
    case 'greedy':
      return { kind: 'greedy' };
    case 'beam':
      return { kind: 'beam', numBeams: job.num_beams, lengthPenalty: job.length_penalty };
    case 'sample':
      return { kind: 'sample', temperature: job.temperature, topK: job.top_k, topP: job.top_p };
  }
}

export function generationRequestFor(job: JobData, promptIds: number[]): GenerationRequest {
  return {
    promptIds,
    maxNewTokens: job.max_new_tokens,
    minNewTokens: job.min_new_tokens,
    repetitionPenalty: job.repetition_penalty,
    search: searchParamsFor(job),
  };
}

/** Whether the slot engine runs this job: greedy and sampling do, beam search stays on the search ops. */
export function runsOnSlots(job: Pick<JobData, 'decoding'>): boolean {
  return job.decoding !== 'beam';
}

/** A greedy or sampling job as a slot-engine request; its seed (a number or a decimal string) as a bigint. */
export function slotRequestFor(job: JobData, promptIds: number[]): SlotRequest {
  if (!runsOnSlots(job)) throw new Error(`decoding "${job.decoding}" does not run on the slot engine`);
  const base = { promptIds, maxNewTokens: job.max_new_tokens, minNewTokens: job.min_new_tokens, repetitionPenalty: job.repetition_penalty };
  if (job.decoding === 'greedy') return { ...base, sampling: { kind: 'greedy' } };
  return {
    ...base,
    sampling: {
      kind: 'sample',
      temperature: job.temperature,
      topK: job.top_k,
      topP: job.top_p,
      ...(job.seed === undefined ? {} : { seed: BigInt(job.seed) }),
    },
  };
}

/** A seed as a result reports it: the form a job line gives it in (a number up to 2^53 - 1, a decimal string beyond). */
export function seedForResult(seed: bigint): number | string {
  return seed <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(seed) : seed.toString();
}
