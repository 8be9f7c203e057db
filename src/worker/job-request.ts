import type { GenerationRequest, SearchParams } from '../engine/generation-types.js';
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
