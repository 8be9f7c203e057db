import type { GenerationRequest } from './generation-types.js';

/** One run(): which requests it carries, left-padded to a common prompt length. */
export interface PlannedRun {
  readonly indices: number[];
  readonly promptLength: number;
  readonly maxNewTokens: number;
}

/**
 * Splits requests that share search parameters into runs that the model's positions can hold. A run goes to
 * its longest max_new_tokens for every row, so a row's last position is its prompt length + that maximum;
 * rows that would pass the context length start another run.
 */
export function planRuns(requests: readonly GenerationRequest[], indices: readonly number[], contextLength: number): PlannedRun[] {
  const pending = [...indices].sort((a, b) => requests[b]!.maxNewTokens - requests[a]!.maxNewTokens);
  const runs: PlannedRun[] = [];
  while (pending.length > 0) {
    const head = requests[pending[0]!]!;
    const budget = head.maxNewTokens;
    const taken: number[] = [];
    const rest: number[] = [];
    for (const i of pending) (requests[i]!.promptIds.length + budget <= contextLength ? taken : rest).push(i);
    taken.sort((a, b) => a - b);
    runs.push({
      indices: taken,
      promptLength: Math.max(...taken.map((i) => requests[i]!.promptIds.length)),
      maxNewTokens: budget,
    });
    pending.splice(0, pending.length, ...rest);
  }
  return runs;
}

/** Left-pads prompts into one [rows, length] int32 block plus its attention mask (0 on padding). */
export function leftPad(prompts: readonly (readonly number[])[], length: number, padId: number): { ids: Int32Array; mask: Int32Array } {
  const ids = new Int32Array(prompts.length * length).fill(padId);
  const mask = new Int32Array(prompts.length * length);
  prompts.forEach((p, row) => {
    const start = row * length + (length - p.length);
    ids.set(p, start);
    mask.fill(1, start, (row + 1) * length);
  });
  return { ids, mask };
}
