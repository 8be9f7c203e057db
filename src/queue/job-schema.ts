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

/** Seeds are unsigned 63-bit integers (what a sampler's int64 state takes without a sign). */
export const MAX_SEED = 2n ** 63n - 1n;

/** Why a value cannot be a seed, or undefined: an integer in [0, 2^63 - 1], as a JSON number or a decimal string. */
function seedProblem(value: number | string): string | undefined {
  if (typeof value === 'number') {
    if (!Number.isInteger(value) || value < 0) return 'must be an integer from 0 to 2^63 - 1';
    // JSON.parse has already rounded a larger number to a nearby double: the seed given is not the seed read.
    if (!Number.isSafeInteger(value)) return 'above 2^53 - 1 a JSON number loses precision: give the seed as a decimal string ("12345678901234567890")';
    return undefined;
  }
  if (!/^(0|[1-9][0-9]*)$/.test(value)) return 'a seed string must be a decimal integer without sign or leading zeros';
  return value.length > 19 || BigInt(value) > MAX_SEED ? 'must be at most 2^63 - 1 (9223372036854775807)' : undefined;
}

/**
 * A sampling seed: an integer from 0 to 2^63 - 1, as a JSON number up to 2^53 - 1 (beyond, JSON numbers lose
 * precision) or as a decimal string (any value). Kept as given: `BigInt(seed)` reads either form.
 */
export const Seed = z
  .union([z.number(), z.string()], { message: 'must be an integer or a decimal string' })
  .superRefine((value, ctx) => {
    const problem = seedProblem(value);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });

export const MAX_STOP_STRINGS = 16;
/** Strings that end a completion where they appear (the text stops before the first one, as OpenAI's `stop`). */
export const StopStrings = z.array(z.string().min(1, 'must not be empty')).max(MAX_STOP_STRINGS, `at most ${MAX_STOP_STRINGS} stop strings`);

/** BullMQ's priorities: 1 is the highest; jobs without one run before every prioritized job. */
export const MAX_PRIORITY = 2 ** 21 - 1;
export const Priority = z.number().int().min(1).max(MAX_PRIORITY, `must be at most ${MAX_PRIORITY} (1 is the highest)`);
/** Longest delay: Node's timers (and BullMQ's) hold at most 2^31 - 1 ms (24.8 days). */
export const MAX_DELAY_MS = 2 ** 31 - 1;
export const DelayMs = z.number().int().min(0).max(MAX_DELAY_MS, `must be at most ${MAX_DELAY_MS} (24.8 days)`);
export const MAX_ATTEMPTS = 100;
export const Attempts = z.number().int().min(1).max(MAX_ATTEMPTS);
/** Wait before a job's first retry (each further one waits twice as long): at most a day. */
export const BackoffMs = z.number().int().min(0).max(24 * 3600 * 1000);
/** How many finished jobs Redis keeps: by age (seconds since they finished) and/or count (the newest N); {}: all. */
export const KeepJobs = z.object({ age: z.number().int().min(1).optional(), count: z.number().int().min(1).optional() }).strict();
export type KeepJobs = z.infer<typeof KeepJobs>;

/** A job's metadata is stored with it and copied into its result, so its size is bounded. */
export const MAX_METADATA_BYTES = 16 * 1024;
const MAX_METADATA_DEPTH = 32;

/**
 * Why a value cannot be a job's metadata (a JSON object of at most MAX_METADATA_BYTES), or undefined. It walks the
 * value without recursion: JSON.parse accepts a line nested 100,000 levels deep, which a recursive check (zod's
 * json schema, JSON.stringify) answers with a stack overflow instead of a refusal.
 */
export function metadataProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'must be a JSON object';
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v === 'string' || typeof v === 'boolean') continue;
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) return 'must hold only finite numbers';
      continue;
    }
    if (typeof v !== 'object') return `must hold only JSON values (found a ${typeof v})`;
    if (depth > MAX_METADATA_DEPTH) return `must not be nested deeper than ${MAX_METADATA_DEPTH} levels`;
    const proto = Object.getPrototypeOf(v) as unknown;
    if (!Array.isArray(v) && proto !== Object.prototype && proto !== null) return 'must hold only JSON values (plain objects and arrays)';
    for (const x of Object.values(v)) stack.push([x, depth + 1]);
  }
  const bytes = Buffer.byteLength(JSON.stringify(value));
  return bytes > MAX_METADATA_BYTES ? `${bytes} bytes of JSON exceeds the limit of ${MAX_METADATA_BYTES}` : undefined;
}

export type JobMetadata = Record<string, unknown>;
const Metadata = z.custom<JobMetadata>().superRefine((value, ctx) => {
  const problem = metadataProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

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
    // seed, stop and stream are for the slot engine (continuous batching); the search-op paths do not read them
    // (docs/architecture.md: which path honours which job field).
    seed: Seed.optional(),
    stop: StopStrings.optional(),
    /** Send tokens as they are generated (where the engine can) besides the result. */
    stream: z.boolean().default(false),
    model: ModelName.optional(),
    /** Any JSON object: copied into the job's result and output line as it is. */
    metadata: Metadata.optional(),
    // Queue controls (BullMQ job options); each overrides the producer's setting for this job.
    priority: Priority.optional(),
    delay_ms: DelayMs.optional(),
    attempts: Attempts.optional(),
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
