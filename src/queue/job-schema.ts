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
    length_penalty: z.number().finite().default(1),
    temperature: z.number().positive().finite().default(1),
    top_k: z.number().int().min(0).default(0),
    top_p: z.number().gt(0).max(1).default(1),
    repetition_penalty: z.number().positive().finite().default(1),
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
