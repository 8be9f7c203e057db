import { z } from 'zod';

/** Model names route jobs to queues, so they are restricted to characters safe in a queue name. */
export const ModelName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, 'must be 1-128 characters of letters, digits, "_", "." or "-"');

/** BullMQ job ids: ":" is its key separator and integer-like ids collide with its own counters. */
export const JobId = z
  .string()
  .min(1)
  .max(256)
  .refine((s) => !s.includes(':'), 'must not contain ":"')
  .refine((s) => !/^\d+$/.test(s), 'must not be only digits (BullMQ reserves integer ids)');

export const DEFAULT_MAX_NEW_TOKENS = 64;

/**
 * Prompts longer than this many characters (UTF-16 code units) are refused before they are tokenized (config
 * `limits.maxPromptChars`). A prompt is tokenized whole before its length in tokens is known, so without a bound one
 * 10 MB prompt cost a worker 15 s and 2.7 GB. 100,000 characters are ~20,000 tokens of English text (65 ms and
 * ~15 MB to tokenize): far beyond GPT-2's 1,024-token context and well beyond a 16k-token model's.
 */
export const DEFAULT_MAX_PROMPT_CHARS = 100_000;

/**
 * The reason a job's prompt is too long to take, or undefined when it is within maxChars. A `messages` job counts
 * the characters of its contents (the template adds a bounded amount around them).
 */
export function promptLengthError(job: Pick<JobData, 'prompt' | 'messages'>, maxChars: number): string | undefined {
  const field = job.prompt !== undefined ? 'prompt' : 'messages';
  const chars = job.prompt?.length ?? (job.messages ?? []).reduce((n, m) => n + m.content.length, 0);
  return chars > maxChars ? `${field}: ${chars} characters exceeds the limit of ${maxChars} (limits.maxPromptChars)` : undefined;
}

/**
 * A float the graph reads as float32, within [min, max]: outside such bounds values overflow or vanish in float32
 * (temperature 1e-300 divides by zero, repetition_penalty 1e300 is infinite) and the text degenerates silently.
 */
const boundedFloat = (min: number, max: number) => z.number().min(min, `must be at least ${min}`).max(max, `must be at most ${max}`);

/**
 * One generation job, as producers write it (one JSON object per line of a .jsonl file) and as it is stored in
 * Redis after defaults are filled in. Unknown fields are refused so that a typo (max_tokens) is an error, not a
 * silently ignored setting.
 */
export const JobInput = z
  .object({
    id: JobId.optional(),
    prompt: z.string().min(1, 'must not be empty').optional(),
    /** Instead of prompt: a conversation, rendered with the model's chat template (add_generation_prompt). */
    messages: z.array(z.object({ role: z.string().min(1), content: z.string() }).strict()).min(1, 'must not be empty').optional(),
    max_new_tokens: z.number().int().min(1).max(32768).default(DEFAULT_MAX_NEW_TOKENS),
    min_new_tokens: z.number().int().min(0).default(0),
    decoding: z.enum(['greedy', 'beam', 'sample']).default('greedy'),
    num_beams: z.number().int().min(2).max(32).default(4),
    // The beam score divides by length^length_penalty: |5| keeps 32,768^5 inside float32.
    length_penalty: boundedFloat(-5, 5).default(1),
    temperature: boundedFloat(0.001, 100).default(1),
    top_k: z.number().int().min(0).default(0),
    top_p: boundedFloat(0.001, 1).default(1),
    repetition_penalty: boundedFloat(0.01, 100).default(1),
    model: ModelName.optional(),
  })
  .strict()
  .refine((j) => (j.prompt === undefined) !== (j.messages === undefined), {
    message: 'give exactly one of prompt or messages',
    path: ['prompt'],
  })
  .refine((j) => j.min_new_tokens <= j.max_new_tokens, {
    message: 'min_new_tokens must not exceed max_new_tokens',
    path: ['min_new_tokens'],
  });
export type JobInput = z.input<typeof JobInput>;
export type JobData = z.output<typeof JobInput>;

/** "field: reason" for the first problem zod found, for error lines a person reads. */
export function describeZodError(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const field = issue.path.join('.');
      if (issue.code === 'unrecognized_keys') return `unknown field(s) ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
      return field ? `${field}: ${issue.message}` : issue.message;
    })
    .join('; ');
}

export type ParsedJob = { ok: true; job: JobData } | { ok: false; error: string };

/** Parses one JSONL line (already JSON-decoded or raw text). */
export function parseJobLine(line: string): ParsedJob {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch (e) {
    return { ok: false, error: `not valid JSON (${(e as Error).message})` };
  }
  return parseJob(raw);
}

/** For jobs made in code (demo, benchmarks, examples): the parsed job, or an Error with the reason. */
export function jobFromFields(fields: Record<string, unknown>): JobData {
  const parsed = parseJob(fields);
  if (!parsed.ok) throw new Error(parsed.error);
  return parsed.job;
}

export function parseJob(raw: unknown): ParsedJob {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return { ok: false, error: 'expected a JSON object' };
  const parsed = JobInput.safeParse(raw);
  return parsed.success ? { ok: true, job: parsed.data } : { ok: false, error: describeZodError(parsed.error) };
}
