import type { TextTokenizer } from '../tokenizer/text-tokenizer.js';

/**
 * A job's stop strings (its `stop` field): the text ends before the first one that appears, as OpenAI's `stop`.
 * A match counts only if it ends past the text of the job's first min_new_tokens tokens, the rule the engine
 * applies to stop ids.
 */
export class StopSequences {
  /** Longest stop string: a match that starts in text already searched ends at most this far back. */
  readonly longest: number;

  constructor(readonly strings: readonly string[]) {
    this.longest = Math.max(0, ...strings.map((s) => s.length));
  }

  /** Where the earliest stop string starts at or after `from`, among matches ending past `minEnd`; -1 for none. */
  find(text: string, from = 0, minEnd = 0): number {
    let best = -1;
    for (const s of this.strings) {
      // A match must end past minEnd: start at minEnd - length + 1 at the earliest.
      const i = text.indexOf(s, Math.max(0, from, minEnd - s.length + 1));
      if (i >= 0 && (best < 0 || i < best)) best = i;
    }
    return best;
  }

  /**
   * Where a search of `text` may start once `searched` characters of it were searched before (a match may begin
   * up to longest - 1 characters back).
   */
  resumeAt(searched: number): number {
    return Math.max(0, searched - this.longest + 1);
  }
}

/**
 * Text a partial output may show: without a trailing replacement character (a multi-byte character whose other
 * bytes are still to come) and, when the job has stop strings, without the last longest - 1 characters, which may
 * be the start of a stop string the next tokens complete.
 */
export function settledText(text: string, stops: StopSequences | undefined): string {
  const whole = text.replace(/\uFFFD+$/, '');
  return stops && stops.longest > 1 ? whole.slice(0, Math.max(0, whole.length - stops.longest + 1)) : whole;
}

/** Characters of the decoded text of `ids`, without a trailing incomplete character. */
async function settledLength(tokenizer: TextTokenizer, ids: readonly number[]): Promise<number> {
  return ids.length === 0 ? 0 : (await tokenizer.decode(ids)).replace(/\uFFFD+$/, '').length;
}

/**
 * The output cut where a stop string starts (`at`, an index into `text`): the text before it, and the tokens whose
 * text lies wholly before it. A token whose text straddles `at` (it ends inside the stop string) is dropped from the
 * ids while its characters before `at` stay in the text, so the text is exactly what precedes the stop string.
 */
export async function cutAtStop(tokenizer: TextTokenizer, tokenIds: readonly number[], text: string, at: number): Promise<{ tokenIds: number[]; text: string }> {
  // The longest prefix of tokens whose text fits before `at`: prefixes' texts only grow, so a binary search finds it.
  let lo = 0;
  let hi = tokenIds.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if ((await settledLength(tokenizer, tokenIds.slice(0, mid))) <= at) lo = mid;
    else hi = mid - 1;
  }
  return { tokenIds: tokenIds.slice(0, lo), text: text.slice(0, at) };
}

/**
 * Where the text of a job's first `minNewTokens` tokens ends (a stop string must end past it): 0 without a minimum,
 * undefined while fewer tokens exist.
 */
export async function minimumTextEnd(tokenizer: TextTokenizer, tokenIds: readonly number[], minNewTokens: number): Promise<number | undefined> {
  if (minNewTokens === 0) return 0;
  if (tokenIds.length < minNewTokens) return undefined;
  return settledLength(tokenizer, tokenIds.slice(0, minNewTokens));
}

/**
 * A finished output with its stop strings applied: cut at the first one (finishReason "stop"), or as it was. Used for
 * jobs that ran on the search ops too, which know nothing of stop strings.
 */
export async function applyStops(
  tokenizer: TextTokenizer,
  stops: StopSequences,
  output: { tokenIds: readonly number[]; text: string },
  minNewTokens: number,
): Promise<{ tokenIds: number[]; text: string; stopped: boolean }> {
  const minEnd = (await minimumTextEnd(tokenizer, output.tokenIds, minNewTokens)) ?? Infinity;
  const at = minEnd === Infinity ? -1 : stops.find(output.text, 0, minEnd);
  if (at < 0) return { tokenIds: [...output.tokenIds], text: output.text, stopped: false };
  return { ...(await cutAtStop(tokenizer, output.tokenIds, output.text, at)), stopped: true };
}
