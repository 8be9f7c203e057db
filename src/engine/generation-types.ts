/** How the next token is chosen. Each kind maps to one search graph of the built model. */
export type SearchParams =
  | { readonly kind: 'greedy' }
  | { readonly kind: 'beam'; readonly numBeams: number; readonly lengthPenalty: number }
  | { readonly kind: 'sample'; readonly temperature: number; readonly topK: number; readonly topP: number };

export interface GenerationRequest {
  readonly promptIds: readonly number[];
  readonly maxNewTokens: number;
  /** EOS is suppressed until this many tokens exist (benchmarks set it to maxNewTokens). */
  readonly minNewTokens: number;
  readonly repetitionPenalty: number;
  readonly search: SearchParams;
}

/** A start-up run, not a job: EOS as the prompt, then `newTokens` greedy tokens without early stop. */
export function warmupRequest(eosTokenId: number, newTokens: number): GenerationRequest {
  return { promptIds: [eosTokenId], maxNewTokens: newTokens, minNewTokens: newTokens, repetitionPenalty: 1, search: { kind: 'greedy' } };
}

export type FinishReason = 'stop' | 'length';

export interface GenerationResult {
  /** Generated ids only: no prompt, no padding, no terminating EOS. */
  readonly tokenIds: number[];
  readonly finishReason: FinishReason;
}

export interface BatchTimings {
  /** Wall time of the graph runs for this batch, in ms. */
  readonly generateMs: number;
  /** Number of run() calls the batch needed (more than 1 when prompts could not share one run). */
  readonly runs: number;
  readonly batchSize: number;
}

export interface GenerationBatchResult {
  /** One entry per request, in order: a result or the reason that request failed. */
  readonly results: (GenerationResult | { readonly error: string })[];
  readonly timings: BatchTimings;
}

/**
 * A row's result from the ids generated after its prompt, already cut to its max_new_tokens: up to (not
 * including) the first EOS, finishing with "stop", or all of them, finishing with "length".
 */
export function resultFromGenerated(generated: Int32Array, eosTokenId: number): GenerationResult {
  const eos = generated.indexOf(eosTokenId);
  return eos < 0
    ? { tokenIds: Array.from(generated), finishReason: 'length' }
    : { tokenIds: Array.from(generated.subarray(0, eos)), finishReason: 'stop' };
}

/**
 * Requests with equal keys may share one run(). Greedy and sampled rows can be cut to their own max_new_tokens
 * after a longer run (a row's tokens do not depend on how long the run goes), beam rows cannot (the length
 * changes which beams finish), so beam keys include it.
 */
export function searchKey(r: Omit<GenerationRequest, 'promptIds'>): string {
  const s = r.search;
  return JSON.stringify([s, r.repetitionPenalty, r.minNewTokens, s.kind === 'beam' ? r.maxNewTokens : 0]);
}
