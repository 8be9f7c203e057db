import type { GenerationRequest } from '../../src/engine/generation-types.js';

/** A greedy request without repetition penalty, as most engine tests use. */
export function greedyRequest(promptIds: number[], maxNewTokens: number, minNewTokens = 0): GenerationRequest {
  return { promptIds, maxNewTokens, minNewTokens, repetitionPenalty: 1, search: { kind: 'greedy' } };
}
