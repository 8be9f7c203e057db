import { createHash } from 'node:crypto';
import { closeSync, existsSync, fstatSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { z } from 'zod';
import { JobId, type JobData, type LineFormat, type LineLimits, ModelName, type ParsedLine, parseJob, promptLengthError } from './job-schema.js';
import { JsonlLines } from './jsonl-lines.js';
import { queueNameFor } from './queue-names.js';
import { type CollectedResult, type JobRef, distinctRefs } from './result-collector.js';

/**
 * OpenAI Batch files (https://platform.openai.com/docs/api-reference/batch): one request per line,
 * `{"custom_id", "method": "POST", "url": "/v1/completions" | "/v1/chat/completions", "body": {...}}`, read
 * into genqueue job fields; and genqueue results written back as OpenAI Batch output and error lines.
 *
 * Body fields, in three groups (anything else is refused as an unknown field):
 * - mapped: model, prompt (completions) or messages (chat), max_tokens / max_completion_tokens, temperature
 *   (0 = greedy, else sampling, OpenAI's default 1), top_p, seed, stop, and vLLM's extensions top_k, min_tokens,
 *   repetition_penalty; a value the job schema refuses is named by its body field (body.top_p);
 * - accepted and ignored (no effect on the output): user, metadata, store, service_tier, stream_options,
 *   parallel_tool_calls;
 * - refused, naming the field, unless left at a value that changes nothing: n and best_of (1), logprobs (false),
 *   top_logprobs (0), echo (false), suffix, stream (false), tools / functions (empty), tool_choice /
 *   function_call ("none"), response_format ({"type": "text"}), logit_bias ({}), presence_penalty /
 *   frequency_penalty (0), modalities (["text"]), audio, prediction, web_search_options, reasoning_effort.
 */

export const OPENAI_ENDPOINTS = { '/v1/completions': 'completions', '/v1/chat/completions': 'chat' } as const;
export type OpenAiEndpoint = (typeof OPENAI_ENDPOINTS)[keyof typeof OPENAI_ENDPOINTS];

/** One chat message as genqueue jobs carry it (`messages` field): roles of the chat template, text content. */
export interface ChatMessage {
  readonly role: 'system' | 'user' | 'assistant';
  readonly content: string;
}

/** Job fields from one OpenAI request: what a genqueue job line would carry. */
export interface OpenAiJobFields {
  readonly id: string;
  readonly prompt?: string;
  readonly messages?: ChatMessage[];
  readonly model?: string;
  readonly max_new_tokens?: number;
  readonly min_new_tokens?: number;
  readonly decoding: 'greedy' | 'sample';
  readonly temperature?: number;
  readonly top_p?: number;
  readonly top_k?: number;
  readonly repetition_penalty?: number;
  /** Honoured by the slot engine only (docs/architecture.md: which path honours which job field). */
  readonly seed?: number | string;
  /** Honoured by the slot engine only (docs/architecture.md: which path honours which job field). */
  readonly stop?: string[];
}

/** What output lines need to know about the request a job came from. */
export interface OpenAiRequestRef {
  readonly id: string;
  readonly customId: string;
  readonly endpoint: OpenAiEndpoint;
}

/** fields: the job fields the request maps to; job: the same, validated by the job schema with its defaults. */
export type ParsedOpenAiLine = { ok: true; ref: OpenAiRequestRef; fields: OpenAiJobFields; job: JobData } | { ok: false; customId?: string; error: string };

export interface OpenAiMappingOptions {
  /** Every line's job model (`enqueue --model`): body.model then does not route. */
  readonly model?: string;
  /**
   * body.model → the job's model name (a name from the config's registry, the queue a worker serves); throws
   * with the reason. Default: body.model itself, which must be a valid model name.
   */
  readonly modelName?: (bodyModel: string) => string;
}

const TextPart = z.object({ type: z.literal('text', { message: 'only text parts are supported' }), text: z.string() }).strict();

const Message = z
  .object({
    role: z.enum(['system', 'developer', 'user', 'assistant'], { message: 'must be system, developer, user or assistant (tool messages are not supported)' }),
    content: z.union([z.string(), z.array(TextPart).min(1)], { message: 'must be a string or an array of text parts' }),
    name: z.string().optional(),
  })
  .strict();

const finite = z.number().finite();

/** Fields accepted only at a value that changes nothing, with what is allowed. */
const NO_EFFECT: Record<string, [(v: unknown) => boolean, string]> = {
  n: [(v) => v === 1, 'only n = 1 (one choice per request) is supported'],
  best_of: [(v) => v === 1, 'only best_of = 1 is supported'],
  logprobs: [(v) => v === false, 'log probabilities are not returned'],
  top_logprobs: [(v) => v === 0, 'log probabilities are not returned'],
  echo: [(v) => v === false, 'echo is not supported'],
  suffix: [() => false, 'suffix (insertion) is not supported'],
  stream: [(v) => v === false, 'batch requests do not stream'],
  tools: [(v) => Array.isArray(v) && v.length === 0, 'tool calling is not supported'],
  functions: [(v) => Array.isArray(v) && v.length === 0, 'function calling is not supported'],
  tool_choice: [(v) => v === 'none', 'tool calling is not supported'],
  function_call: [(v) => v === 'none', 'function calling is not supported'],
  response_format: [(v) => typeof v === 'object' && v !== null && (v as { type?: unknown }).type === 'text', 'only {"type": "text"} is supported'],
  logit_bias: [(v) => typeof v === 'object' && v !== null && Object.keys(v).length === 0, 'logit_bias is not supported'],
  presence_penalty: [(v) => v === 0, 'use repetition_penalty (genqueue has no presence penalty)'],
  frequency_penalty: [(v) => v === 0, 'use repetition_penalty (genqueue has no frequency penalty)'],
  modalities: [(v) => Array.isArray(v) && v.length === 1 && v[0] === 'text', 'only text output is supported'],
  audio: [() => false, 'audio output is not supported'],
  prediction: [() => false, 'predicted outputs are not supported'],
  web_search_options: [() => false, 'web search is not supported'],
  reasoning_effort: [() => false, 'reasoning_effort is not supported'],
};

const IGNORED = ['user', 'metadata', 'store', 'service_tier', 'stream_options', 'parallel_tool_calls'] as const;

const Body = z
  .object({
    model: z.string().min(1).optional(),
    prompt: z.unknown().optional(),
    messages: z.unknown().optional(),
    max_tokens: z.number().int().min(1).max(32768).nullish(),
    max_completion_tokens: z.number().int().min(1).max(32768).nullish(),
    temperature: finite.min(0).max(2).nullish(),
    top_p: finite.gt(0).max(1).nullish(),
    // The job schema checks these (and names them as body fields): one definition of a valid seed and stop list.
    seed: z.unknown().optional(),
    stop: z.unknown().optional(),
    top_k: z.number().int().min(-1).nullish(),
    min_tokens: z.number().int().min(0).nullish(),
    repetition_penalty: finite.positive().nullish(),
    ...Object.fromEntries([...Object.keys(NO_EFFECT), ...IGNORED].map((k) => [k, z.unknown().optional()])),
  })
  .strict()
  .superRefine((body, ctx) => {
    for (const [field, [harmless, reason]] of Object.entries(NO_EFFECT)) {
      const v = (body as Record<string, unknown>)[field];
      if (v !== undefined && v !== null && !harmless(v)) ctx.addIssue({ code: 'custom', path: [field], message: reason });
    }
  });

const RequestLine = z
  .object({
    custom_id: z.string().min(1, 'must not be empty').max(512),
    method: z.literal('POST', { message: 'must be "POST"' }),
    url: z.string(),
    body: z.record(z.string(), z.unknown(), { message: 'must be a JSON object' }),
  })
  .strict();

/** "path: reason" for every zod issue, with the path from the line's root (body.messages.0.role). */
function describe(error: z.ZodError, prefix: readonly (string | number)[] = []): string {
  return error.issues
    .map((issue) => {
      const path = [...prefix, ...issue.path].join('.');
      const message = issue.code === 'unrecognized_keys' ? `unknown field(s) ${issue.keys.map((k) => `"${k}"`).join(', ')}` : issue.message;
      return path ? `${path}: ${message}` : message;
    })
    .join('; ');
}

/**
 * The job id for a custom_id: the custom_id itself when it is a valid job id, else a digest of it; the same file
 * always gives the same ids, so enqueueing it again adds nothing and `results` finds the jobs from the file alone.
 */
export function jobIdForCustomId(customId: string): string {
  return JobId.safeParse(customId).success ? customId : `openai-${createHash('sha256').update(customId).digest('hex').slice(0, 40)}`;
}

function defaultModelName(bodyModel: string): string {
  if (!ModelName.safeParse(bodyModel).success) {
    throw new Error(`"${bodyModel}" is not a model name (letters, digits, "_", "." or "-"): name the model in the config's models, or pass --model`);
  }
  return bodyModel;
}

function messageText(content: string | { text: string }[]): string {
  return typeof content === 'string' ? content : content.map((p) => p.text).join('\n');
}

/** Maps one decoded JSON line (an object, a number, anything) to job fields, or says which field is wrong. */
export function parseOpenAiRequest(raw: unknown, options: OpenAiMappingOptions = {}): ParsedOpenAiLine {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return { ok: false, error: 'expected a JSON object' };
  const rawCustomId = (raw as { custom_id?: unknown }).custom_id;
  const customId = typeof rawCustomId === 'string' && rawCustomId ? rawCustomId : undefined;
  const fail = (error: string): ParsedOpenAiLine => ({ ok: false, ...(customId ? { customId } : {}), error });
  const line = RequestLine.safeParse(raw);
  if (!line.success) return fail(describe(line.error));
  const endpoint = OPENAI_ENDPOINTS[line.data.url as keyof typeof OPENAI_ENDPOINTS];
  if (!endpoint) return fail(`url: "${line.data.url}" is not supported (supported: ${Object.keys(OPENAI_ENDPOINTS).join(', ')})`);
  const parsed = Body.safeParse(line.data.body);
  if (!parsed.success) return fail(describe(parsed.error, ['body']));
  const body = parsed.data;

  let prompt: string | undefined;
  let messages: ChatMessage[] | undefined;
  if (endpoint === 'completions') {
    if (body.messages !== undefined) return fail('body.messages: belongs to /v1/chat/completions; /v1/completions takes prompt');
    if (typeof body.prompt !== 'string' || body.prompt === '') {
      return fail('body.prompt: must be one non-empty string (arrays of prompts or of token ids are not supported: one request per line)');
    }
    prompt = body.prompt;
  } else {
    if (body.prompt !== undefined) return fail('body.prompt: belongs to /v1/completions; /v1/chat/completions takes messages');
    const m = z.array(Message).min(1, 'must hold at least one message').safeParse(body.messages);
    if (!m.success) return fail(describe(m.error, ['body', 'messages']));
    messages = m.data.map((msg) => ({ role: msg.role === 'developer' ? 'system' : msg.role, content: messageText(msg.content) }));
  }

  let model: string | undefined = options.model;
  if (model === undefined && body.model !== undefined) {
    try {
      model = (options.modelName ?? defaultModelName)(body.model);
    } catch (e) {
      return fail(`body.model: ${(e as Error).message}`);
    }
  }
  const maxNewTokens = body.max_completion_tokens ?? body.max_tokens ?? undefined;
  const sample = body.temperature !== 0;
  const fields: OpenAiJobFields = {
    id: jobIdForCustomId(line.data.custom_id),
    ...(prompt !== undefined ? { prompt } : {}),
    ...(messages ? { messages } : {}),
    ...(model !== undefined ? { model } : {}),
    ...(maxNewTokens != null ? { max_new_tokens: maxNewTokens } : {}),
    ...(body.min_tokens != null ? { min_new_tokens: body.min_tokens } : {}),
    decoding: sample ? 'sample' : 'greedy',
    ...(sample && body.temperature != null ? { temperature: body.temperature } : {}),
    ...(sample && body.top_p != null ? { top_p: body.top_p } : {}),
    ...(sample && body.top_k != null && body.top_k > 0 ? { top_k: body.top_k } : {}),
    ...(body.repetition_penalty != null ? { repetition_penalty: body.repetition_penalty } : {}),
    // Typed as the job schema's; parseJob below checks them.
    ...(body.seed != null ? { seed: body.seed as number | string } : {}),
    ...(body.stop != null ? { stop: (typeof body.stop === 'string' ? [body.stop] : body.stop) as string[] } : {}),
  };
  // A value the body schema lets through but a job cannot take (top_p 0.0001) is named as the request names it.
  const maxTokensField = body.max_completion_tokens != null ? 'body.max_completion_tokens' : 'body.max_tokens';
  const job = parseJob(fields, (f) => (f === 'id' ? 'custom_id' : f === 'max_new_tokens' ? maxTokensField : `body.${BODY_FIELD[f] ?? f}`));
  if (!job.ok) return fail(job.error);
  return { ok: true, ref: { id: fields.id, customId: line.data.custom_id, endpoint }, fields, job: job.job };
}

/** Body fields by the job field they map to, where the names differ. */
const BODY_FIELD: Record<string, string> = { min_new_tokens: 'min_tokens', decoding: 'temperature' };

/**
 * OpenAI Batch requests as a JobProducer line format: each line's job, tagged with its custom_id and url (they go
 * into the --ids-out entry, from which `genqueue results` writes OpenAI lines again).
 */
export function openAiLines(options: OpenAiMappingOptions = {}): LineFormat {
  return {
    parse(raw: unknown, limits: LineLimits): ParsedLine {
      const parsed = parseOpenAiRequest(raw, options);
      if (!parsed.ok) return { ok: false, error: parsed.error, ...(parsed.customId !== undefined ? { tags: { custom_id: parsed.customId } } : {}) };
      const tags = { custom_id: parsed.ref.customId, url: endpointUrl(parsed.ref.endpoint) };
      // The job's prompt and messages are the body's fields of the same names.
      const tooLong = promptLengthError(parsed.job, limits.maxPromptChars);
      return tooLong ? { ok: false, error: `body.${tooLong}`, tags: { custom_id: parsed.ref.customId } } : { ok: true, job: parsed.job, tags };
    },
  };
}

function endpointUrl(endpoint: OpenAiEndpoint): string {
  return Object.entries(OPENAI_ENDPOINTS).find(([, e]) => e === endpoint)![0];
}

/**
 * Parses an OpenAI Batch file line by line (streaming, constant memory except the custom_id set): each line's
 * job fields or its error, with duplicate custom_ids refused (they would address the same job).
 */
export async function* readOpenAiBatch(
  path: string,
  options: OpenAiMappingOptions = {},
): AsyncGenerator<{ lineNumber: number; parsed: ParsedOpenAiLine }> {
  const seen = new Map<string, number>();
  for await (const { lineNumber, value } of new JsonlLines(path)) {
    if (!value.ok) {
      yield { lineNumber, parsed: { ok: false, error: value.error } };
      continue;
    }
    let parsed = parseOpenAiRequest(value.raw, options);
    if (parsed.ok) {
      const first = seen.get(parsed.ref.id);
      if (first !== undefined) parsed = { ok: false, customId: parsed.ref.customId, error: `custom_id: "${parsed.ref.customId}" repeats line ${first}` };
      else seen.set(parsed.ref.id, lineNumber);
    }
    yield { lineNumber, parsed };
  }
}

/** Whether a JSONL line looks like an OpenAI Batch request (for detecting a file's format from its first line). */
export function isOpenAiBatchLine(raw: unknown): boolean {
  return typeof raw === 'object' && raw !== null && 'custom_id' in raw && 'body' in raw && 'url' in raw;
}

/** Whether a JSONL line is an --ids-out entry of an OpenAI Batch request (it carries custom_id and url). */
function isOpenAiIdsLine(raw: unknown): boolean {
  return typeof raw === 'object' && raw !== null && 'custom_id' in raw && 'url' in raw && 'id' in raw && !('body' in raw);
}

export type FileFormat = 'genqueue' | 'openai';

/**
 * A JSONL file's format by its first non-blank line: OpenAI Batch when that line is a request or the --ids-out
 * entry of one, genqueue otherwise (a genqueue job line has no top-level custom_id: unknown fields are refused).
 */
export async function detectFileFormat(path: string): Promise<FileFormat> {
  for await (const { value } of new JsonlLines(path)) return value.ok && (isOpenAiBatchLine(value.raw) || isOpenAiIdsLine(value.raw)) ? 'openai' : 'genqueue';
  return 'genqueue';
}

/** An OpenAI request's job, as `genqueue results` looks it up and writes its line. */
export type OpenAiJobRef = OpenAiRequestRef & JobRef;

const IdsLine = z
  .object({
    id: JobId,
    queue: z.string().min(1),
    custom_id: z.string().min(1),
    url: z.enum(Object.keys(OPENAI_ENDPOINTS) as [keyof typeof OPENAI_ENDPOINTS]),
  })
  .passthrough();

/** The job ref of an --ids-out entry ({"id", "queue", "custom_id", "url", ...}), or why it is not one. */
export function openAiRefOfIdsLine(raw: unknown): { ok: true; ref: OpenAiJobRef } | { ok: false; error: string } {
  const parsed = IdsLine.safeParse(raw);
  if (!parsed.success) return { ok: false, error: describe(parsed.error) };
  const { id, queue, custom_id: customId, url } = parsed.data;
  return { ok: true, ref: { id, queue, customId, endpoint: OPENAI_ENDPOINTS[url] } };
}

/**
 * The jobs of an OpenAI Batch file, or of its --ids-out file (lines may mix), each once. Request lines map as
 * enqueue mapped them (the same options and limits: a request line gives the same job id and queue); lines that
 * enqueue refused are skipped, since they never became jobs. A line that is neither is an error naming it.
 */
export async function readOpenAiRefs(path: string, options: OpenAiMappingOptions, limits: LineLimits): Promise<OpenAiJobRef[]> {
  const format = openAiLines(options);
  const refs: OpenAiJobRef[] = [];
  for await (const { lineNumber, value } of new JsonlLines(path)) {
    if (!value.ok) throw new Error(`${path}:${lineNumber}: ${value.error}`);
    let ref: OpenAiJobRef | undefined;
    if (isOpenAiIdsLine(value.raw)) {
      const parsed = openAiRefOfIdsLine(value.raw);
      if (!parsed.ok) throw new Error(`${path}:${lineNumber}: ${parsed.error}`);
      ref = parsed.ref;
    } else if (isOpenAiBatchLine(value.raw)) {
      const parsed = format.parse(value.raw, limits);
      if (!parsed.ok) continue;
      ref = { id: parsed.job.id!, queue: queueNameFor(parsed.job.model), customId: parsed.tags!.custom_id!, endpoint: OPENAI_ENDPOINTS[parsed.tags!.url as keyof typeof OPENAI_ENDPOINTS] };
    } else {
      throw new Error(`${path}:${lineNumber}: neither an OpenAI Batch request (custom_id, method, url, body) nor an --ids-out line of one (id, queue, custom_id, url)`);
    }
    refs.push(ref);
  }
  return distinctRefs(refs);
}

/** An output line and the file it belongs in: `out` (--out) or `errors` (--errors-out). */
export interface OpenAiOutput {
  readonly file: 'out' | 'errors';
  readonly line: string;
}

const digest = (text: string, length: number): string => createHash('sha256').update(text).digest('hex').slice(0, length);

/**
 * The OpenAI Batch line for one collected result: completed → an output line with the completion; failed →
 * an error line with the status code (400 when the worker refused the job's content, such as a prompt too long for
 * the context; 500 otherwise) and `body.error` as OpenAI writes failed requests; cancelled or missing (no such job
 * in Redis) → an error line with `error`; pending → undefined (nothing yet: a later `genqueue results` writes it).
 * Ids are derived from the job id, so a line written again for the same job is identical.
 */
export function openAiOutputLine(ref: OpenAiRequestRef, r: CollectedResult): OpenAiOutput | undefined {
  const id = `batch_req_${digest(ref.id, 24)}`;
  const requestId = `req_${digest(`request:${ref.id}`, 24)}`;
  switch (r.status) {
    case 'completed': {
      const res = r.result;
      const choice =
        ref.endpoint === 'chat'
          ? { index: 0, message: { role: 'assistant', content: res.text }, logprobs: null, finish_reason: res.finishReason }
          : { index: 0, text: res.text, logprobs: null, finish_reason: res.finishReason };
      const body = {
        id: `${ref.endpoint === 'chat' ? 'chatcmpl' : 'cmpl'}-${digest(`body:${ref.id}`, 24)}`,
        object: ref.endpoint === 'chat' ? 'chat.completion' : 'text_completion',
        created: Math.floor(res.timings.finishedAt / 1000),
        model: res.model,
        choices: [choice],
        usage: res.usage,
      };
      return { file: 'out', line: JSON.stringify({ id, custom_id: ref.customId, response: { status_code: 200, request_id: requestId, body }, error: null }) };
    }
    case 'failed': {
      const statusCode = r.content ? 400 : 500;
      const error = { message: r.error, type: statusCode < 500 ? 'invalid_request_error' : 'server_error', param: null, code: null };
      return { file: 'errors', line: JSON.stringify({ id, custom_id: ref.customId, response: { status_code: statusCode, request_id: requestId, body: { error } }, error: null }) };
    }
    case 'cancelled':
      return { file: 'errors', line: JSON.stringify({ id, custom_id: ref.customId, response: null, error: { code: 'batch_cancelled', message: `job ${ref.id} was cancelled (genqueue cancel)` } }) };
    case 'missing':
      return { file: 'errors', line: JSON.stringify({ id, custom_id: ref.customId, response: null, error: { code: 'job_not_found', message: `job ${ref.id}: ${r.error}` } }) };
    case 'pending':
      return undefined;
  }
}

/**
 * The error line for a request refused before it was enqueued (an invalid line with --skip-invalid); custom_id is
 * null when the line has none (not JSON, no custom_id), so every refused line is accounted for.
 */
export function openAiRefusedLine(customId: string | undefined, lineNumber: number, error: string): OpenAiOutput {
  return {
    file: 'errors',
    line: JSON.stringify({
      id: `batch_req_${digest(`refused:${customId ?? `line ${lineNumber}`}`, 24)}`,
      custom_id: customId ?? null,
      response: null,
      error: { code: 'invalid_request', message: `line ${lineNumber}: ${error}` },
    }),
  };
}

/**
 * custom_ids already written to output or error files, so that `genqueue results` resuming an interrupted
 * `--wait` appends only the lines still missing. Files that do not exist yet hold none.
 */
export async function writtenCustomIds(paths: readonly string[]): Promise<Set<string>> {
  const ids = new Set<string>();
  for (const path of paths) {
    if (!existsSync(path)) continue;
    for await (const { value } of new JsonlLines(path)) {
      // A line cut short by an interruption is not valid JSON: its request is written again.
      if (value.ok && typeof value.raw === 'object' && value.raw !== null) {
        const customId = (value.raw as { custom_id?: unknown }).custom_id;
        if (typeof customId === 'string') ids.add(customId);
      }
    }
  }
  return ids;
}

/**
 * Before appending to an output file that an interruption may have cut mid-line: a last line without its newline
 * that still parses (its request counts as written) gets the newline; one cut short (not JSON: its request is written
 * again) is removed, so the file stays valid JSONL.
 */
export function repairLastLine(path: string): void {
  if (!existsSync(path)) return;
  const fd = openSync(path, 'r+');
  try {
    const { size } = fstatSync(fd);
    if (size === 0) return;
    // The last line starts after the last newline: read backwards a block at a time until one is found.
    const block = Buffer.alloc(64 * 1024);
    let start = size;
    let lineStart = 0;
    let found = false;
    while (start > 0 && !found) {
      const length = Math.min(block.length, start);
      start -= length;
      readSync(fd, block, 0, length, start);
      const newline = block.subarray(0, length).lastIndexOf(0x0a);
      if (newline >= 0) {
        lineStart = start + newline + 1;
        found = true;
      }
    }
    if (lineStart === size) return; // ends with a newline
    const last = Buffer.alloc(size - lineStart);
    readSync(fd, last, 0, last.length, lineStart);
    let complete = true;
    try {
      JSON.parse(last.toString('utf8'));
    } catch {
      complete = false;
    }
    if (complete) writeSync(fd, '\n', size);
    else ftruncateSync(fd, lineStart);
  } finally {
    closeSync(fd);
  }
}
